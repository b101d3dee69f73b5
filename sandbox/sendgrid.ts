// Sandbox SendGrid: a plain HTTP/1.1 server on 127.0.0.1 that speaks SendGrid's v3 mail send API and answers as SendGrid does.
import { type KeyObject, randomBytes } from "node:crypto";
import http from "node:http";

import { afterDelay, type FaultCode, listenLocal } from "./faults.js";
import { type Recorder, tokenFault } from "./recorder.js";
import { type AcceptedSend, SendgridEventWebhook } from "./sendgrid-webhook.js";

/** SendGrid's request size limit (docs: "The total size of your email ... must be less than 30MB"). */
const MAX_PAYLOAD = 30 * 1024 * 1024;
/** SendGrid's limits per request (docs): personalizations, and recipients across all of them (to + cc + bcc). */
const MAX_PERSONALIZATIONS = 1000;
const MAX_RECIPIENTS = 1000;
/** Sent as `X-RateLimit-Limit` with an injected 429; SendGrid's own figure varies by plan. */
const RATE_LIMIT = 600;
const HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html";
const UNAUTHORIZED = "The provided authorization grant is invalid, expired, or revoked";

/** How SendGrid words each injected fault. */
const SENDGRID_FAULT: Record<Exclude<FaultCode, "reset">, [number, string]> = {
  "429": [429, "too many requests"],
  "500": [500, "internal server error"],
  "503": [503, "service unavailable"],
};

interface SgError {
  message: string;
  field: string | null;
  help: string | null;
}
type Json = Record<string, unknown>;

const err = (message: string, field: string | null, anchor?: string): SgError => ({ message, field, help: anchor ? `${HELP}#${anchor}` : null });
const isObj = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);
const hasText = (v: unknown): boolean => typeof v === "string" && v.length > 0;
/** `x.custom_args?.nfx_id` of a personalization or the mail (as recorded: whatever value the sender put there). */
const nfxIdOf = (x: Json): unknown => (isObj(x.custom_args) ? x.custom_args.nfx_id : undefined);

/** Every recipient of one personalization with the field path SendGrid names in its errors. */
function recipientsOf(p: Json, i: number): { email: string; field: string }[] {
  const out: { email: string; field: string }[] = [];
  for (const kind of ["to", "cc", "bcc"]) {
    const list = p[kind];
    if (!Array.isArray(list)) continue;
    list.forEach((r: unknown, m) => out.push({ email: isObj(r) && typeof r.email === "string" ? r.email : "", field: `personalizations.${i}.${kind}.${m}.email` }));
  }
  return out;
}

/** Checks the shape of a mail send body; every problem is reported at once, as SendGrid does. Addresses are checked later by {@link addressErrors}. */
function shapeErrors(mail: Json): SgError[] {
  const out: SgError[] = [];
  const ps = mail.personalizations;
  if (!Array.isArray(ps) || ps.length === 0) {
    out.push(err("The personalizations field is required and must have at least one personalization.", "personalizations", "-Personalizations-Errors"));
  } else if (ps.length > MAX_PERSONALIZATIONS) {
    out.push(err(`The personalizations field cannot have more than ${MAX_PERSONALIZATIONS} objects.`, "personalizations", "-Personalizations-Errors"));
  } else {
    let total = 0;
    ps.forEach((p: unknown, i) => {
      if (!isObj(p) || !Array.isArray(p.to) || p.to.length === 0) {
        out.push(err("The to array is required for all personalization objects, and must have at least one email object with a valid email address.", `personalizations.${i}.to`, "message.personalizations.to"));
        return;
      }
      total += recipientsOf(p, i).length;
    });
    if (total > MAX_RECIPIENTS) {
      out.push(err(`The total number of recipients must be no more than ${MAX_RECIPIENTS}. This includes all recipients defined within the to, cc, and bcc parameters, across each object that you include in the personalizations array.`, "personalizations", "message.personalizations"));
    }
  }
  if (!isObj(mail.from) || !hasText(mail.from.email)) {
    out.push(err("The from object must be provided for every email send. It is an object that requires the email parameter, but may also contain a name parameter.", "from.email", "message.from"));
  }
  const everyHasSubject = Array.isArray(ps) && ps.length > 0 && ps.every((p: unknown) => isObj(p) && hasText(p.subject));
  if (!hasText(mail.subject) && !everyHasSubject && !hasText(mail.template_id)) {
    out.push(err("The subject is required. You can get around this requirement if you use a template with a subject defined or if every personalization has a subject defined.", "subject", "message.subject"));
  }
  const content = mail.content;
  const contentOk = Array.isArray(content) && content.length > 0 && content.every((c: unknown) => isObj(c) && hasText(c.type) && typeof c.value === "string" && c.value.length > 0);
  if (!contentOk && !hasText(mail.template_id)) {
    out.push(err("Unless a valid template_id is provided, the content parameter is required. There must be at least one defined content block. We typically suggest both text/plain and text/html blocks are included, but only one block is required.", "content", "message.content"));
  }
  return out;
}

/** Malformed addresses, and the `bad-…` convention of {@link tokenFault}: one error per address, for the whole request. */
function addressErrors(mail: Json): SgError[] {
  const out: SgError[] = [];
  (mail.personalizations as Json[]).forEach((p, i) => {
    for (const r of recipientsOf(p, i)) {
      if (!/^[^\s@]+@[^\s@]+$/.test(r.email) || tokenFault(r.email) === "bad") out.push(err("Does not contain a valid address.", r.field, "message.personalizations.to"));
    }
  });
  return out;
}

/** Plain string replacement of each substitution key, as SendGrid applies `substitutions` (the SDK has already wrapped the keys, e.g. `{{name}}`). */
function substitute(s: string | undefined, subs: unknown): string | undefined {
  if (s === undefined || !isObj(subs)) return s;
  let out = s;
  for (const [k, v] of Object.entries(subs)) out = out.split(k).join(String(v));
  return out;
}

/** The recipients and categories of an accepted send, for the Event Webhook: each personalization's `to`, with the top-level custom args overlaid by the personalization's. */
function acceptedSend(mail: Json, messageId: string): AcceptedSend {
  const top = isObj(mail.custom_args) ? mail.custom_args : {};
  const recipients: AcceptedSend["recipients"] = [];
  for (const p of mail.personalizations as Json[]) {
    const customArgs = { ...top, ...(isObj(p.custom_args) ? p.custom_args : {}) };
    for (const r of p.to as unknown[]) if (isObj(r) && typeof r.email === "string") recipients.push({ email: r.email, customArgs });
  }
  const categories = Array.isArray(mail.categories) ? mail.categories.filter((c: unknown): c is string => typeof c === "string") : [];
  return { messageId, categories, recipients };
}

/** Options of {@link startSendgridSandbox}. */
export interface SendgridSandboxOptions {
  /** 0 = any free port. */
  port: number;
  recorder: Recorder;
  /** Event Webhook URL (http or https, else the start throws); events are posted only while one is set (see `setWebhookUrl`). */
  webhookUrl?: string;
  /** Event Webhook signing key (EC P-256); default the committed dev key of sandbox/certs/sendgrid-webhook-key.pem. */
  webhookKey?: KeyObject;
}

/** A running SendGrid sandbox. */
export interface SendgridSandbox {
  port: number;
  /** The Event Webhook URL in force, or null. */
  webhookUrl(): string | null;
  /** Sets or (null) clears the Event Webhook URL; clearing drops events not yet posted. Throws unless `url` is null or an http(s) URL. */
  setWebhookUrl(url: string | null): void;
  /** Stops the server and the webhook (queued events and pending retries are dropped). */
  close: () => Promise<void>;
}

/**
 * Starts the SendGrid sandbox on `port` (0 = any free port): plain HTTP/1.1
 * with keep-alive on 127.0.0.1. Answers `POST /v3/mail/send` as SendGrid
 * does: 202 with an empty body and `X-Message-Id`; 401 without a
 * `Bearer SG.…` key; 413 over 30 MB; 400 `{errors:[{message,field,help}]}`
 * for a malformed body (personalizations, recipients, from, subject,
 * content) or any invalid or `bad-…` address; and the recorder's injected
 * faults, decided once per well-formed request with the first recipient as
 * token and the API key as account (429 with `X-RateLimit-*` and
 * `Retry-After`, 500, 503, connection resets, added latency).
 * Records one delivery per recipient (to, cc, bcc) for every answer, or one
 * with an empty token when the body names none.
 * After each 202, while a webhook URL is set, posts the Signed Event
 * Webhook's events for every `to` recipient (see sandbox/sendgrid-webhook.ts:
 * `processed`, then delivered, bounce, blocked, dropped or deferred by the
 * address's prefix), batched, signed and retried as SendGrid does.
 */
export async function startSendgridSandbox(o: SendgridSandboxOptions): Promise<SendgridSandbox> {
  const webhook = new SendgridEventWebhook(o.webhookUrl ?? null, o.recorder, o.webhookKey);
  const server = http.createServer({ keepAlive: true }, (req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size <= MAX_PAYLOAD) chunks.push(c);
    });
    req.on("end", () => {
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string") headers[k] = v;
      const apiKey = /^Bearer (SG\.\S+)$/.exec(headers.authorization ?? "")?.[1];
      let mail: Json | undefined;
      if (size <= MAX_PAYLOAD) {
        try {
          const v: unknown = JSON.parse(Buffer.concat(chunks).toString());
          mail = isObj(v) ? v : undefined;
        } catch {
          mail = undefined;
        }
      }
      const record = (status: number, reason?: string): void => {
        const ps: unknown[] = Array.isArray(mail?.personalizations) ? mail.personalizations : [];
        const top = mail ?? {};
        const blocks: unknown[] = Array.isArray(top.content) ? top.content : [];
        const text = blocks.find((c) => isObj(c) && c.type === "text/plain") ?? blocks.find((c) => isObj(c) && c.type === "text/html");
        let n = 0;
        // The mail's own headers apply to every personalization, which may override them (as SendGrid merges them).
        const topHeaders = isObj(top.headers) ? top.headers : null;
        ps.forEach((p, i) => {
          if (!isObj(p)) return;
          const data = topHeaders ? Object.assign({}, p, { headers: Object.assign({}, topHeaders, isObj(p.headers) ? p.headers : {}) }) : p;
          for (const r of recipientsOf(p, i)) {
            n++;
            o.recorder.record({
              provider: "sendgrid", token: r.email, account: apiKey, nid: (nfxIdOf(p) ?? nfxIdOf(top)) as string | undefined,
              title: substitute((p.subject ?? top.subject) as string | undefined, p.substitutions), body: substitute(isObj(text) && typeof text.value === "string" ? text.value : undefined, p.substitutions),
              data, headers, status, reason, at: Date.now(),
            });
          }
        });
        if (n === 0) o.recorder.record({ provider: "sendgrid", token: "", account: apiKey, headers, status, reason, at: Date.now() });
      };
      const answer = (status: number, errors?: SgError[] | { message: string; field: null }[], extra: Record<string, string> = {}): void => {
        record(status, errors?.[0]?.message);
        if (errors) {
          res.writeHead(status, { "content-type": "application/json", ...extra });
          res.end(JSON.stringify({ errors }));
        } else {
          res.writeHead(status, { "content-length": "0", ...extra });
          res.end();
        }
      };
      if (req.method !== "POST" || (req.url ?? "").split("?")[0] !== "/v3/mail/send") return answer(404, [err("Not Found", null)]);
      if (!apiKey) return answer(401, [err(UNAUTHORIZED, null)]);
      if (size > MAX_PAYLOAD) return answer(413, [err("Payload Too Large", null)]);
      const m = mail;
      if (!m) return answer(400, [err("Bad Request", null)]);
      const shape = shapeErrors(m);
      if (shape.length > 0) return answer(400, shape);
      const first = ((m.personalizations as Json[])[0].to as unknown[])[0];
      const v = o.recorder.faults.decide("sendgrid", { token: isObj(first) && typeof first.email === "string" ? first.email : "", account: apiKey });
      afterDelay(v, () => {
        if (v.error?.code === "reset") {
          record(0, "reset");
          return void req.socket.destroy();
        }
        if (v.error) {
          const [status, message] = SENDGRID_FAULT[v.error.code];
          const retry = v.error.retryAfterSec;
          const extra: Record<string, string> = retry !== undefined ? { "retry-after": String(retry) } : {};
          if (status === 429) {
            Object.assign(extra, {
              "x-ratelimit-limit": String(RATE_LIMIT),
              "x-ratelimit-remaining": "0",
              "x-ratelimit-reset": String(Math.ceil(Date.now() / 1000) + (retry ?? 1)),
            });
          }
          return answer(status, [{ field: null, message }], extra);
        }
        const bad = addressErrors(m);
        if (bad.length > 0) return answer(400, bad);
        const messageId = randomBytes(16).toString("base64url");
        answer(202, undefined, { "x-message-id": messageId });
        webhook.accepted(acceptedSend(m, messageId));
      });
    });
  });
  const listening = await listenLocal(server, o.port);
  return {
    port: listening.port,
    webhookUrl: () => webhook.webhookUrl,
    setWebhookUrl: (url) => webhook.setUrl(url),
    close: () => {
      webhook.close();
      return listening.close();
    },
  };
}
