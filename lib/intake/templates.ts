// Templates: validated and stored in JetStream KV, rendered per recipient with Handlebars and locale fallback.
import type { KV } from "@nats-io/kv";
import Handlebars from "handlebars";
import { z } from "zod";

import { decodeJson, encodeJson } from "../core/codec.js";
import { NotFound, TemplateInvalid } from "../core/errors.js";
import { isPrototypeName, PROTOTYPE_NAME_RULE } from "../core/own-keys.js";
import { formatIssue } from "../core/request-schema.js";
import { templateKey } from "../core/subjects.js";
import type { ContentChannel, PushContent, Template, TemplateUse, UserRecord } from "../core/types.js";

/** Template ids: also KV keys. */
export const TEMPLATE_ID = /^[A-Za-z0-9_-]{1,64}$/;
/** BCP 47-ish locale tags: `en`, `pt-BR`, `zh-Hant-TW`. */
export const LOCALE = /^[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,2}$/;

const locale = z.string().regex(LOCALE, "must be a locale tag such as en or pt-BR");
const byLocale = <T extends z.ZodType>(v: T) => z.record(locale, v).refine((r) => Object.keys(r).length > 0, "must have at least one locale");

/** What `nfx templates put` and `PUT /v1/templates/{id}` accept. */
export const templateInputSchema = z.strictObject({
  id: z.string().regex(TEMPLATE_ID, "must be 1-64 characters of A-Z a-z 0-9 _ -").refine((t) => !isPrototypeName(t), PROTOTYPE_NAME_RULE),
  description: z.string().max(1024).optional(),
  defaultLocale: locale,
  channels: z
    .strictObject({
      push: byLocale(z.strictObject({ title: z.string().min(1), body: z.string().min(1), data: z.record(z.string(), z.string()).optional(), badge: z.number().int().min(0).optional(), sound: z.string().max(64).optional() })).optional(),
      email: byLocale(
        z.strictObject({ subject: z.string().min(1), html: z.string().optional(), text: z.string().optional() }).refine((e) => e.html || e.text, "needs html or text"),
      ).optional(),
      sms: byLocale(z.strictObject({ text: z.string().min(1) })).optional(),
      inapp: byLocale(z.strictObject({ payload: z.record(z.string(), z.unknown()) })).optional(),
    })
    .refine((c) => Object.keys(c).length > 0, "must have content for at least one channel"),
});

/** Every string field of a template with its dotted path. */
function templateStrings(t: Pick<Template, "channels">): [string, string][] {
  const out: [string, string][] = [];
  const walk = (v: unknown, path: string): void => {
    if (typeof v === "string") out.push([path, v]);
    else if (v && typeof v === "object") for (const [k, x] of Object.entries(v)) walk(x, `${path}.${k}`);
  };
  walk(t.channels, "channels");
  return out;
}

/**
 * The request variables a template text needs: every path in a mustache or
 * helper argument, by its first segment, except `user.*` (the recipient's
 * own), `this` and `@data`. Paths inside `#each`/`#with` blocks are relative
 * to their block and not required.
 */
export function variablesOf(text: string): string[] {
  const found = new Set<string>();
  const path = (p: hbs.AST.Expression | undefined): void => {
    if (!p || p.type !== "PathExpression") return;
    const pe = p as hbs.AST.PathExpression;
    if (pe.data || pe.depth > 0 || pe.parts.length === 0) return;
    if (pe.parts[0] === "user" || pe.parts[0] === "digest" || (CONSENT_PLACEHOLDERS as readonly string[]).includes(pe.parts[0])) return;
    found.add(pe.parts[0]);
  };
  const visit = (nodes: hbs.AST.Statement[]): void => {
    for (const n of nodes) {
      if (n.type === "MustacheStatement") {
        const m = n as hbs.AST.MustacheStatement;
        if (m.params.length === 0 && !m.hash) path(m.path);
        m.params.forEach(path);
        m.hash?.pairs.forEach((pair) => path(pair.value));
      } else if (n.type === "BlockStatement") {
        const b = n as hbs.AST.BlockStatement;
        b.params.forEach(path);
        const name = (b.path).original;
        if (name !== "each" && name !== "with") visit(b.program?.body ?? []);
        visit(b.inverse?.body ?? []);
      }
    }
  };
  visit(Handlebars.parse(text).body);
  return [...found];
}

/**
 * Validates a template and derives the variables it needs. Throws
 * {@link TemplateInvalid} naming the path of the first problem: schema,
 * Handlebars syntax, or a channel without the default locale.
 */
export function prepareTemplate(input: unknown, now: number): Template {
  const r = templateInputSchema.safeParse(input);
  if (!r.success) {
    const { field, message } = formatIssue(r.error.issues[0]);
    throw new TemplateInvalid(message, { field });
  }
  const t = r.data;
  for (const [ch, entries] of Object.entries(t.channels)) {
    if (entries && !(t.defaultLocale in entries)) {
      throw new TemplateInvalid(`channels.${ch}: must have an entry for the default locale ${t.defaultLocale}`, { field: `channels.${ch}` });
    }
  }
  const variables = new Set<string>();
  for (const [p, text] of templateStrings(t)) {
    try {
      for (const v of variablesOf(text)) variables.add(v);
    } catch (err) {
      throw new TemplateInvalid(`${p}: not a valid template: ${(err as Error).message.split("\n")[0]}`, { field: p });
    }
  }
  return { ...t, channels: t.channels, variables: [...variables].sort(), updatedAt: now };
}

/** Picks the entry for `wanted` (e.g. pt-BR), else its language (pt), else the default locale. */
export function pickLocale<T>(entries: Record<string, T>, wanted: string | undefined, fallback: string): T {
  if (wanted) {
    if (Object.hasOwn(entries, wanted)) return entries[wanted];
    const lang = wanted.split("-")[0];
    if (Object.hasOwn(entries, lang)) return entries[lang];
  }
  return entries[fallback];
}

const compiled = new Map<string, HandlebarsTemplateDelegate>();
/** Compiles (once per template version, text and escaping) and renders one string. */
function render(t: Template, text: string, escape: boolean, ctx: object): string {
  const k = `${t.id}\u0000${t.updatedAt}\u0000${escape ? 1 : 0}\u0000${text}`;
  let f = compiled.get(k);
  if (!f) {
    if (compiled.size > 10_000) compiled.clear();
    f = Handlebars.compile(text, { noEscape: !escape, strict: false });
    compiled.set(k, f);
  }
  return f(ctx);
}

/**
 * Placeholders the email gateway fills per recipient with signed consent links (docs/consent.md): a template renders
 * them as themselves, `{{unsubscribe_url}}` and `{{preferences_url}}`, and they are no request variables.
 */
export const CONSENT_PLACEHOLDERS = ["unsubscribe_url", "preferences_url"] as const;
const SELF_PLACEHOLDERS = Object.fromEntries(CONSENT_PLACEHOLDERS.map((k) => [k, `{{${k}}}`]));

/** The rendering context: request variables plus `user` (id, locale and attributes of the recipient); the consent placeholders render as themselves. */
function context(use: TemplateUse, user: Pick<UserRecord, "id" | "locale" | "attributes"> | null): object {
  return { ...use.variables, ...SELF_PLACEHOLDERS, ...(use.digest ? { digest: use.digest } : {}), user: user ? { ...(user.attributes ?? {}), id: user.id, locale: user.locale } : {} };
}

/** Renders a template's push content for one recipient (no HTML escaping). Null if the template has no push content. */
export function renderPush(use: TemplateUse, user: Pick<UserRecord, "id" | "locale" | "attributes"> | null): PushContent | null {
  const t = use.template;
  const entries = t.channels.push;
  if (!entries) return null;
  const e = pickLocale(entries, use.locale ?? user?.locale, t.defaultLocale);
  const ctx = context(use, user);
  const data = e.data ? Object.fromEntries(Object.entries(e.data).map(([k, v]) => [k, render(t, v, false, ctx)])) : undefined;
  return {
    title: render(t, e.title, false, ctx),
    body: render(t, e.body, false, ctx),
    ...(data ? { data } : {}),
    ...(e.badge !== undefined ? { badge: e.badge } : {}),
    ...(e.sound ? { sound: e.sound } : {}),
  };
}

/** Renders a template's email for one recipient: variables are HTML-escaped in `html`, not in `subject` or `text`. */
export function renderEmail(use: TemplateUse, user: Pick<UserRecord, "id" | "locale" | "attributes"> | null): { subject: string; html?: string; text?: string } | null {
  const t = use.template;
  if (!t.channels.email) return null;
  const e = pickLocale(t.channels.email, use.locale ?? user?.locale, t.defaultLocale);
  const ctx = context(use, user);
  return {
    subject: render(t, e.subject, false, ctx),
    ...(e.html !== undefined ? { html: render(t, e.html, true, ctx) } : {}),
    ...(e.text !== undefined ? { text: render(t, e.text, false, ctx) } : {}),
  };
}

/** Renders a template's SMS text for one recipient (no escaping). Null if the template has no SMS content. */
export function renderSms(use: TemplateUse, user: Pick<UserRecord, "id" | "locale" | "attributes"> | null): { text: string } | null {
  const t = use.template;
  if (!t.channels.sms) return null;
  const e = pickLocale(t.channels.sms, use.locale ?? user?.locale, t.defaultLocale);
  return { text: render(t, e.text, false, context(use, user)) };
}

/** Renders a template's in-app payload for one recipient: every string value (at any depth) is a template. Null if the template has no in-app content. */
export function renderInApp(use: TemplateUse, user: Pick<UserRecord, "id" | "locale" | "attributes"> | null): { payload: Record<string, unknown> } | null {
  const t = use.template;
  if (!t.channels.inapp) return null;
  const e = pickLocale(t.channels.inapp, use.locale ?? user?.locale, t.defaultLocale);
  const ctx = context(use, user);
  const walk = (v: unknown): unknown =>
    typeof v === "string" ? render(t, v, false, ctx) : Array.isArray(v) ? v.map(walk) : v && typeof v === "object" ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)])) : v;
  return { payload: walk(e.payload) as Record<string, unknown> };
}

/** Channels a template has content for. */
export const templateChannels = (t: Template): ContentChannel[] => (Object.keys(t.channels) as ContentChannel[]).filter((c) => t.channels[c]);

/** Templates in the `nfx-templates` KV bucket. */
export class TemplateStore {
  constructor(private readonly kv: KV, private readonly now: () => number = Date.now) {}

  /** Validates and stores (creates or replaces) a template; returns what was stored. Throws {@link TemplateInvalid}. */
  async put(input: unknown): Promise<Template> {
    const t = prepareTemplate(input, this.now());
    await this.kv.put(templateKey(t.id), encodeJson(t));
    return t;
  }

  /** The template, or null. */
  async get(id: string): Promise<Template | null> {
    if (!TEMPLATE_ID.test(id) || isPrototypeName(id)) return null;
    const e = await this.kv.get(templateKey(id));
    return e && e.operation === "PUT" ? decodeJson<Template>(e.value) : null;
  }

  /** Every stored template id, sorted. */
  async list(): Promise<string[]> {
    const out: string[] = [];
    for await (const k of await this.kv.keys()) out.push(k);
    return out.sort();
  }

  /** Deletes a template. Throws {@link NotFound} if there is none. */
  async delete(id: string): Promise<void> {
    if (!(await this.get(id))) throw new NotFound(`template ${id} not found`, { field: "id" });
    await this.kv.delete(templateKey(id));
  }
}
