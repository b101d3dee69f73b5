// Email gateway: delivers email sends through the real SendGrid SDK (its client, the body built in the v3 API's form), up to 1,000 personalizations per request, one bulkhead per account, with open and click tracking.
import http from "node:http";
import https from "node:https";

import { Client } from "@sendgrid/client";

import type { SendgridAccountConfig } from "../config/schema.js";
import { type ConsentLinks, consentLinksFor } from "../lib/consent/links.js";
import type { Config } from "../lib/core/config.js";
import { ProviderError } from "../lib/core/errors.js";
import { ownValue } from "../lib/core/own-keys.js";
import type { EmailContent, NotificationBrief, Send } from "../lib/core/types.js";
import { emailContent, noContent } from "../lib/gateway/channel-content.js";
import { fillTracking, type LinkSigner, linkSignerFor, trackableHtml } from "../lib/gateway/links.js";
import { parseRetryAfter } from "../lib/gateway/retry-policy.js";
import { type ChannelClient, type GatewayDeps, primaryWithFailovers, type ProviderApp, runGateway, type SendResult } from "../lib/gateway/runner.js";
import type { Redis } from "../lib/infra/redis.js";
import { areBounced } from "../lib/tracking/bounces.js";

/** SendGrid's answer to a failed request, as the SDK's ResponseError carries it. */
type SgError = { code?: number | string; message?: string; response?: { headers?: Record<string, string>; body?: { errors?: { message?: string; field?: string | null }[] } } };

/** Substitution keys per personalization when recipients' rendered emails differ, and the placeholders they fill (sent wrapped in {{ }}, as SendGrid replaces them). */
const KEY = { subject: "nfxsubject", text: "nfxtext", html: "nfxhtml" } as const;
const SUB = { subject: `{{${KEY.subject}}}`, text: `{{${KEY.text}}}`, html: `{{${KEY.html}}}` } as const;

/**
 * Maps a SendGrid failure to a {@link ProviderError}: 429 (after Retry-After,
 * or until X-RateLimit-Reset), 5xx and transport errors are retryable; other
 * 4xx are not. The reason is SendGrid's first error message and field.
 */
export function sendgridError(err: unknown, now: number = Date.now()): ProviderError {
  const e = err as SgError;
  const status = Number(e.code);
  if (!Number.isInteger(status) || status < 100) {
    return new ProviderError(`SendGrid request failed: ${e.message ?? String(err)}`, { reason: `transport:${e.code ?? e.message ?? "error"}`, retryable: true, cause: err });
  }
  const first = e.response?.body?.errors?.[0];
  const reason = `${status}${first?.message ? ` ${first.message}` : ""}${first?.field ? ` (${first.field})` : ""}`;
  const h = e.response?.headers ?? {};
  let retryAfterMs = parseRetryAfter(h["retry-after"], now);
  const reset = Number(h["x-ratelimit-reset"]);
  if (retryAfterMs === undefined && status === 429 && Number.isFinite(reset)) retryAfterMs = Math.max(0, reset * 1000 - now);
  const retryable = status === 429 || status >= 500;
  return new ProviderError(`SendGrid rejected the request: ${reason}`, { reason, retryable, cause: err, ...(retryable && retryAfterMs !== undefined ? { retryAfterMs } : {}) });
}

/** The index of the personalization a SendGrid 400 names (`personalizations.3.to.0.email`), if any. */
const personalizationOf = (err: ProviderError): number | null => {
  const m = /\(personalizations\.(\d+)\b/.exec(err.reason);
  return m ? Number(m[1]) : null;
};

/** Open and click tracking of HTML email: the link signer and which of the two are on. */
export interface EmailTracking {
  signer: LinkSigner;
  pixel: boolean;
  clicks: boolean;
}

/** One recipient's signed tracking URLs for the placeholders of {@link trackableHtml}. */
function trackingSubs(t: EmailTracking, n: NotificationBrief, s: Send, links: readonly string[]): Record<string, string> {
  const who = { nid: n.id, user: s.user, channel: "email", device: s.device };
  const subs: Record<string, string> = {};
  if (t.pixel) subs.nfxopen = t.signer.openUrl(who);
  links.forEach((url, i) => (subs[`nfxc${i}`] = t.signer.clickUrl(who, url)));
  return subs;
}

/**
 * Builds the body of one v3 mail/send request for `sends` of `n`, as SendGrid's API takes it (what the SDK's mail
 * helper would make of the same mail: test/unit/sandbox-providers.test.ts compares them): one personalization per
 * recipient (custom_args carry the notification, user and device ids, which
 * come back in SendGrid's event webhook). Shared content goes at the top;
 * recipients with their own rendering get it through per-personalization
 * subject and substitutions. With `track`, HTML links go through signed
 * click redirects and an open pixel is added, each recipient's own URLs
 * filled in by substitutions (shared content stays shared).
 */
/** Consent links in email: signed one-click unsubscribe and preference-page URLs (docs/consent.md). */
export interface EmailConsent {
  links: ConsentLinks;
  /** The `mailto:` unsubscribe address, if any. */
  mailto?: string;
  /** Whether a category is commercial: its email carries `List-Unsubscribe` and `List-Unsubscribe-Post`. */
  commercial(category: string): boolean;
}

/** The consent placeholders an email's content uses (a link is signed, and sent as a substitution, only where it is used). */
interface ConsentPlaceholders {
  unsubscribe: boolean;
  preferences: boolean;
}

/** Which of `{{unsubscribe_url}}` and `{{preferences_url}}` the subject, text or HTML of `c` contains. */
function placeholdersOf(c: EmailContent): ConsentPlaceholders {
  const has = (key: string): boolean => [c.subject, c.text, c.html].some((v) => v !== undefined && v.includes(`{{${key}}}`));
  return { unsubscribe: has("unsubscribe_url"), preferences: has("preferences_url") };
}

/**
 * One recipient's consent headers (commercial mail only: `List-Unsubscribe`, one-click) and the values of the
 * placeholders `uses` names. The unsubscribe link is signed when a header or a placeholder needs it, the
 * preference link when a placeholder does.
 */
function consentOf(c: EmailConsent, n: NotificationBrief, s: Send, uses: ConsentPlaceholders): { headers?: Record<string, string>; subs: Record<string, string> | null } {
  const commercial = c.commercial(n.category);
  const unsub = commercial || uses.unsubscribe ? c.links.unsubscribeUrl(s.user, n.category) : "";
  // Keys bare, as placeholders are named; wrapped in {{ }} where the request is built ({@link wrapped}).
  let subs: Record<string, string> | null = null;
  if (uses.unsubscribe) subs = { unsubscribe_url: unsub };
  if (uses.preferences) (subs ??= {}).preferences_url = c.links.preferencesUrl(s.user);
  if (!commercial) return { subs };
  const mailto = c.mailto ? `, <mailto:${c.mailto}?subject=${encodeURIComponent(`unsubscribe ${unsub.slice(unsub.lastIndexOf("/") + 1)}`)}>` : "";
  // Its List-Unsubscribe-Post goes once in the mail's own headers, the same for every recipient ({@link sendgridRequest}).
  return { headers: { "List-Unsubscribe": `<${unsub}>${mailto}` }, subs };
}

/** `subs` with each key wrapped as SendGrid's v3 API takes it (`{{key}}`), as the SDK's mail helper would. */
function wrapped(subs: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k in subs) out[`{{${k}}}`] = subs[k];
  return out;
}

/** `text` with each `{{key}}` of `subs` replaced by its value. */
const fill = (text: string, subs: Record<string, string>): string => Object.entries(subs).reduce((t, [k, v]) => t.split(`{{${k}}}`).join(v), text);

export function sendgridRequest(n: NotificationBrief, sends: readonly Send[], contents: readonly EmailContent[], from: SendgridAccountConfig["from"], track?: EmailTracking, consent?: EmailConsent): Record<string, unknown> {
  const same = contents.every((c) => c === contents[0]);
  const c0 = contents[0];
  const opts = { pixel: track?.pixel ?? false, clicks: track?.clicks ?? false };
  const shared = same && track && c0.html !== undefined ? trackableHtml(c0.html, opts) : null;
  const content = (c: EmailContent | null) => [
    ...(c ? (c.text !== undefined ? [{ type: "text/plain", value: c.text }] : []) : [{ type: "text/plain", value: SUB.text }]),
    ...(c ? (c.html !== undefined ? [{ type: "text/html", value: shared ? shared.html : c.html }] : []) : [{ type: "text/html", value: SUB.html }]),
  ];
  const uses0 = consent && same ? placeholdersOf(c0) : null;
  const consents = consent ? sends.map((s, i) => consentOf(consent, n, s, uses0 ?? placeholdersOf(contents[i]))) : null;
  /** `v` with recipient `i`'s consent links in place of their placeholders. */
  const own = (i: number, v: string): string => {
    const subs = consents?.[i].subs;
    return subs ? fill(v, subs) : v;
  };
  /** A recipient's own HTML, tracked with their URLs in place (consent links too). */
  const ownHtml = (i: number): string => {
    const h = contents[i].html ?? contents[i].text ?? "";
    const withLinks = own(i, h);
    if (!track || contents[i].html === undefined) return withLinks;
    const t = trackableHtml(withLinks, opts);
    return fillTracking(t.html, trackingSubs(track, n, sends[i], t.links));
  };
  /** SendGrid substitutions of shared content: tracking URLs and the consent links it uses (SendGrid replaces each key as written). */
  const sharedSubs = (i: number): Record<string, string> | null => {
    const t = shared && track ? trackingSubs(track, n, sends[i], shared.links) : null;
    const c = consents?.[i].subs;
    if (!c) return t;
    return t ? { ...t, ...c } : c;
  };
  return {
    from,
    subject: same ? c0.subject : SUB.subject,
    content: same ? (content(c0).length ? content(c0) : [{ type: "text/plain", value: " " }]) : content(null),
    categories: [n.category],
    custom_args: { nfx_id: n.id },
    // One-click unsubscribe of commercial mail: the same for every recipient, so once per request (SendGrid merges the
    // mail's headers into each personalization's); each recipient's own List-Unsubscribe is in their personalization.
    ...(consent?.commercial(n.category) ? { headers: { "List-Unsubscribe-Post": "List-Unsubscribe=One-Click" } } : {}),
    personalizations: sends.map((s, i) => {
      const subs = same ? sharedSubs(i) : null;
      return {
        to: [{ email: s.token }],
        custom_args: { nfx_id: n.id, nfx_user: s.user, nfx_device: s.device },
        ...(consents?.[i].headers ? { headers: consents[i].headers } : {}),
        ...(same
          ? subs ? { substitutions: wrapped(subs) } : {}
          : { subject: own(i, contents[i].subject), substitutions: { [SUB.subject]: own(i, contents[i].subject), [SUB.text]: own(i, contents[i].text ?? ""), [SUB.html]: ownHtml(i) } }),
      };
    }),
  };
}

/** What an email app needs besides its account: tracking, and the addresses that hard-bounced (never sent to again). */
export interface EmailAppOptions {
  track?: EmailTracking;
  /** Per address, whether it hard-bounced. */
  bounced?: (addresses: readonly string[]) => Promise<boolean[]>;
  /** Consent links and headers. */
  consent?: EmailConsent;
}

/** Creates one SendGrid account: its own SDK client and keep-alive pool. */
export function createSendgridApp(a: SendgridAccountConfig, o: EmailAppOptions = {}): ProviderApp {
  const client = new Client();
  client.setApiKey(a.apiKey);
  if (a.baseUrl) client.setDefaultRequest("baseUrl", a.baseUrl);
  const agent = { keepAlive: true, maxSockets: a.sockets, maxFreeSockets: a.sockets };
  const httpAgent = new http.Agent(agent);
  const httpsAgent = new https.Agent(agent);
  client.setDefaultRequest("httpAgent" as "baseUrl", httpAgent as unknown as string);
  client.setDefaultRequest("httpsAgent" as "baseUrl", httpsAgent as unknown as string);

  /** One request; on a 400 that names a personalization, that recipient fails and the rest are sent again (at most 5 times). */
  const send = async (n: NotificationBrief, sends: readonly Send[], rounds = 5): Promise<SendResult[]> => {
    const contents = sends.map((s) => emailContent(n, s));
    const out: SendResult[] = new Array<SendResult>(sends.length);
    const idx: number[] = [];
    const gone = o.bounced ? await o.bounced(sends.map((s) => s.token)) : [];
    contents.forEach((c, i) => {
      if (gone[i]) out[i] = { ok: false, error: new ProviderError("address hard-bounced before", { reason: "bounced_address", retryable: false }) };
      else if (!c) out[i] = noContent("email");
      else idx.push(i);
    });
    if (idx.length === 0) return out;
    try {
      // Through the SDK's client, with the body already in the API's form: its mail helper would rebuild, deep-clone
      // and re-case the same request, a third of the gateway's CPU per recipient (docs/benchmarks.md).
      const body = sendgridRequest(n, idx.map((i) => sends[i]), idx.map((i) => contents[i]!), a.from, o.track, o.consent);
      const [res] = await client.request({ method: "POST", url: "/v3/mail/send", body });
      const id = (res.headers as Record<string, string>)["x-message-id"];
      for (const i of idx) out[i] = id ? { ok: true, providerId: id } : { ok: true };
    } catch (err) {
      const error = sendgridError(err);
      const bad = personalizationOf(error);
      if (bad !== null && bad < idx.length && rounds > 1 && idx.length > 1) {
        out[idx[bad]] = { ok: false, error };
        const rest = idx.filter((_, j) => j !== bad);
        const again = await send(n, rest.map((i) => sends[i]), rounds - 1);
        rest.forEach((i, j) => (out[i] = again[j]!));
      } else for (const i of idx) out[i] = { ok: false, error };
    }
    return out;
  };
  return {
    name: a.name,
    perRequest: a.batchSize,
    request: (n, sends) => send(n, sends),
    close() {
      httpAgent.destroy();
      httpsAgent.destroy();
      return Promise.resolve();
    },
  };
}

/** The tracking settings of a cluster, or none when both open pixel and click tracking are off. */
export function emailTracking(cfg: Config): EmailTracking | undefined {
  const e = cfg.engagement;
  if (!e.openPixel && !e.clickTracking) return undefined;
  return { signer: linkSignerFor(cfg), pixel: e.openPixel, clicks: e.clickTracking };
}

/** The email channel: the first account sends; the others take over only as configured failovers. With `redis`, hard-bounced addresses are skipped. */
export const createEmailClient = (cfg: Config, redis?: Redis): ChannelClient =>
  primaryWithFailovers("email", cfg.gateways.email.apps, (a) => createSendgridApp(a, { track: emailTracking(cfg), consent: emailConsent(cfg), ...(redis ? { bounced: (l) => areBounced(redis, l) } : {}) }));

/** The consent links of a cluster's email: signed with `engagement.secret`; commercial categories per config. */
export function emailConsent(cfg: Config): EmailConsent {
  return { links: consentLinksFor(cfg), ...(cfg.consent.mailto ? { mailto: cfg.consent.mailto } : {}), commercial: (c) => ownValue(cfg.categories, c)?.commercial ?? false };
}

/** Starts the email gateway role. */
export async function startGatewayEmail(d: GatewayDeps): ReturnType<typeof runGateway> {
  return runGateway(d, () => createEmailClient(d.cfg, d.redis));
}
