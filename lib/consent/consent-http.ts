// What recipients reach over HTTP: the one-click unsubscribe, the preference page and its form, the JSON preferences API of a user token, and Twilio's inbound-message webhook (STOP, START, HELP).
import { randomBytes } from "node:crypto";

import type { NatsConnection } from "@nats-io/transport-node";
import twilio from "twilio";

import type { Config } from "../core/config.js";
import { NotFound, RequestInvalid, Unauthenticated } from "../core/errors.js";
import { ownValue } from "../core/own-keys.js";
import { parseWith, preferencesSchema } from "../core/request-schema.js";
import type { ContentChannel } from "../core/subjects.js";
import type { UserRecord } from "../core/types.js";
import { getUser, type PreferencePatch, updatePreferences } from "../directory/directory.js";
import { hhmm } from "../directory/quiet-hours.js";
import type { Answer } from "../infra/http.js";
import type { Redis } from "../infra/redis.js";
import { type ConsentClaims, type ConsentLinks, consentLinksFor } from "./links.js";
import { type PageCategory, type PageModel, pageStrings, parsePreferenceForm, renderPreferencePage } from "./page.js";
import { applySmsKeyword, keywordOf, twimlMessage } from "./sms-keywords.js";

/** A user's preferences as the JSON API and the page show them: every category with whether it is commercial and each channel's switch. */
export interface PreferencesView {
  user: string;
  optedOut: boolean;
  marketingOptOut: boolean;
  timezone: string | null;
  quietHours: { start: string; end: string } | null;
  categories: { name: string; description?: string; commercial: boolean; channels: Partial<Record<ContentChannel, boolean>> }[];
}

const html = (status: number, body: string, nonce?: string): Answer => ({
  status,
  raw: body,
  headers: {
    "content-type": "text/html; charset=utf-8",
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "content-security-policy": nonce
      ? `default-src 'none'; style-src 'nonce-${nonce}'; script-src 'nonce-${nonce}'; form-action 'self'; img-src data:; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'`
      : "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'",
  },
});

const escape = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** The page a bad link gets: what is wrong with it, and that nothing changed. */
const refused = (why: string): Answer =>
  html(
    403,
    `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Link not valid</title>` +
      `<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;color:#1f2328}</style></head>` +
      `<body><h1>This link is not valid</h1><p>${escape(why)}.</p><p>Nothing was changed. Use the link in a more recent message, or manage your preferences in the app.</p></body></html>`,
  );

/**
 * The recipient-facing consent endpoints over HTTP (mounted by the HTTP API; docs/consent.md). Every change goes
 * through {@link updatePreferences}: atomic, announced to gateways (re-checked at send time), and logged in the
 * user's consent log with what made it.
 */
export class ConsentHttp {
  readonly links: ConsentLinks;

  constructor(private readonly d: { cfg: Config; redis: Redis; nc: NatsConnection }) {
    this.links = consentLinksFor(d.cfg);
  }

  /** The categories a user sees, with their switches (channels of this cluster; transactional ones always on). */
  view(u: UserRecord): PreferencesView {
    const channels = this.d.cfg.ingest.channels;
    return {
      user: u.id,
      optedOut: u.optedOut ?? false,
      marketingOptOut: u.marketingOptOut ?? false,
      timezone: u.timezone ?? null,
      quietHours: u.quietHours ? { start: hhmm(u.quietHours.start), end: hhmm(u.quietHours.end) } : null,
      categories: Object.entries(this.d.cfg.categories).map(([name, c]) => {
        const prefs = ownValue(u.preferences?.categories, name);
        return { name, ...(c.description ? { description: c.description } : {}), commercial: c.commercial, channels: Object.fromEntries(channels.map((ch) => [ch, prefs?.[ch] !== false])) };
      }),
    };
  }

  /** The claims of a link token; a bad one answers the refusal page (nothing changes). */
  private claims(token: string): ConsentClaims | Answer {
    try {
      return this.links.verify(token);
    } catch (err) {
      return refused((err as Error).message.replace(/^token: /, ""));
    }
  }

  /** The page for `user` (its record when the caller has it, else read; its form posts to a fresh preferences link), with an optional notice or error. */
  private async page(user: string | UserRecord, o: { notice?: (s: ReturnType<typeof pageStrings>["s"]) => string; error?: string; status?: number } = {}): Promise<Answer> {
    const u = typeof user === "string" ? await getUser(this.d.redis, this.d.cfg.cluster.shards, user) : user;
    if (!u) return refused("the link names a user who does not exist any more");
    const v = this.view(u);
    const { s } = pageStrings(u.locale);
    const nonce = randomBytes(16).toString("base64");
    const cats: PageCategory[] = v.categories.map((c) => ({ name: c.name, ...(c.description ? { description: c.description } : {}), commercial: c.commercial, channels: c.channels }));
    const m: PageModel = {
      user: u.id, locale: u.locale, categories: cats, marketingOptOut: v.marketingOptOut, quietHours: v.quietHours, timezone: u.timezone,
      timezones: this.d.cfg.consent.timezones, action: this.links.preferencesUrl(u.id).replace(this.d.cfg.engagement.baseUrl, ""), nonce,
      ...(o.notice ? { notice: o.notice(s) } : {}), ...(o.error ? { error: o.error } : {}),
    };
    return html(o.status ?? 200, renderPreferencePage(m), nonce);
  }

  /** GET of an unsubscribe or preference link: the page (an unsubscribe link's GET changes nothing: mail scanners follow links). */
  async get(token: string): Promise<Answer> {
    const c = this.claims(token);
    return "status" in c ? c : this.page(c.user);
  }

  /**
   * RFC 8058 one-click: a POST to an unsubscribe link with body `List-Unsubscribe=One-Click` turns the link's category's
   * email off for its user at once (no login, no confirmation); a repeat changes nothing more. Answers the page with a notice.
   */
  async oneClick(token: string, body: string): Promise<Answer> {
    const c = this.claims(token);
    if ("status" in c) return c;
    if (c.kind !== "u" || !c.category) return refused("this link does not unsubscribe (it opens the preference page)");
    if (!new URLSearchParams(body).has("List-Unsubscribe") && !body.includes("List-Unsubscribe=One-Click")) {
      return this.page(c.user, { error: "List-Unsubscribe: a one-click unsubscribe posts List-Unsubscribe=One-Click", status: 400 });
    }
    const cat = ownValue(this.d.cfg.categories, c.category);
    const u = await getUser(this.d.redis, this.d.cfg.cluster.shards, c.user);
    if (!u) return refused("the link names a user who does not exist any more");
    const after = cat?.commercial && ownValue(u.preferences?.categories, c.category)?.email !== false
      ? await updatePreferences(this.d.redis, this.d.nc, this.d.cfg.cluster.shards, c.user, { categories: { [c.category]: { email: false } } }, { via: "unsubscribe_link", name: c.category })
      : u;
    return this.page(after ?? c.user, { notice: (s) => s.unsubscribed(c.category!) });
  }

  /** The page's form posted to a preference link: validated (an error names the field and changes nothing), applied, and the page again. */
  async save(token: string, body: string): Promise<Answer> {
    const c = this.claims(token);
    if ("status" in c) return c;
    const u = await getUser(this.d.redis, this.d.cfg.cluster.shards, c.user);
    if (!u) return refused("the link names a user who does not exist any more");
    const offered = this.view(u).categories;
    let form;
    try {
      form = parsePreferenceForm(body, offered);
    } catch (err) {
      return this.page(u, { error: (err as Error).message, status: 400 });
    }
    const patch: PreferencePatch = { marketingOptOut: form.marketingOptOut, quietHours: form.quietHours, ...(form.timezone ? { timezone: form.timezone } : {}), categories: form.categories };
    const after = await updatePreferences(this.d.redis, this.d.nc, this.d.cfg.cluster.shards, c.user, patch, { via: "preference_page" });
    return this.page(after ?? c.user, { notice: (s) => s.saved });
  }

  /** The JSON view of the user a user token names. */
  async mine(user: string | undefined): Promise<PreferencesView> {
    const u = await getUser(this.d.redis, this.d.cfg.cluster.shards, this.userOf(user));
    if (!u) throw new NotFound(`user ${user} not found`, { field: "user" });
    return this.view(u);
  }

  /**
   * Applies a JSON preference change (the body of `PATCH /v1/preferences`, as for the operator API) for the user a user
   * token names; a transactional category cannot be switched off (field `categories.<name>`). Resolves the new view.
   */
  async patchMine(user: string | undefined, body: unknown): Promise<PreferencesView> {
    const id = this.userOf(user);
    const patch = parseWith(preferencesSchema, body);
    for (const [cat, chans] of Object.entries(patch.categories ?? {})) {
      const c = ownValue(this.d.cfg.categories, cat);
      if (!c) throw new RequestInvalid(`categories.${cat}: unknown category`, { field: `categories.${cat}` });
      if (!c.commercial && Object.values(chans).some((v) => v === false)) throw new RequestInvalid(`categories.${cat}: a transactional category is always on`, { field: `categories.${cat}` });
    }
    const u = await updatePreferences(this.d.redis, this.d.nc, this.d.cfg.cluster.shards, id, patch, { via: "user_token", name: id });
    if (!u) throw new NotFound(`user ${id} not found`, { field: "user" });
    return this.view(u);
  }

  private userOf(user: string | undefined): string {
    if (!user) throw new Unauthenticated("authorization: a user token (`Bearer <token>`) is required", { field: "authorization" });
    return user;
  }

  /**
   * Twilio's inbound-message webhook (`pathAndQuery` as requested, the form, `X-Twilio-Signature`): the account is the
   * one whose `AccountSid` the form names, and the signature must verify with its auth token over the public URL
   * (the SDK's validateRequest). STOP and its synonyms stop SMS to the sender's number, START and UNSTOP resume it,
   * HELP and INFO get the help text; each answered with TwiML. Other messages are answered empty.
   */
  async inbound(pathAndQuery: string, form: Record<string, string>, signature: string): Promise<Answer> {
    const url = `${this.d.cfg.engagement.baseUrl}${pathAndQuery}`;
    const account = this.d.cfg.gateways.sms.apps.find((a) => a.accountSid === form.AccountSid);
    if (!account) throw new Unauthenticated("AccountSid: not an SMS account of this cluster", { field: "AccountSid" });
    if (!signature || !twilio.validateRequest(account.authToken, signature, url, form)) throw new Unauthenticated("X-Twilio-Signature: signature does not verify", { field: "X-Twilio-Signature" });
    const from = form.From ?? "";
    if (!/^\+[1-9]\d{6,14}$/.test(from)) throw new RequestInvalid("From: must be an E.164 number", { field: "From" });
    const k = keywordOf(form.Body ?? "");
    const c = this.d.cfg.consent;
    const text = !k ? null : k.kind === "help" ? c.smsHelpText : k.kind === "stop" ? c.smsStopText : c.smsStartText;
    if (k) await applySmsKeyword(this.d.redis, this.d.nc, this.d.cfg.cluster.shards, from, k, Date.now());
    return { status: 200, raw: twimlMessage(text), headers: { "content-type": "text/xml; charset=utf-8" } };
  }
}
