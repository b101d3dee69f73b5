// Sandbox Twilio: a plain HTTP/1.1 server on 127.0.0.1 that speaks Twilio's Messages API (2010-04-01) and answers as Twilio does.
import { randomBytes } from "node:crypto";
import http from "node:http";

import { afterDelay, type FaultCode, listenLocal } from "./faults.js";
import type { Recorder } from "./recorder.js";
import { TwilioStatusCallbacks } from "./twilio-callbacks.js";
import { isWebhookUrl } from "./webhooks.js";

/** Twilio's limit on a message body (docs), counted in characters. */
const MAX_BODY = 1600;
/** E.164 as Twilio checks it. */
const E164 = /^\+[1-9]\d{6,14}$/;
/** The sandbox's convention for an unsubscribed recipient (Twilio 21610). */
const UNSUBSCRIBED_PREFIX = "+999";

/** How Twilio words each injected fault: HTTP status, error code, message. */
const TWILIO_FAULT: Record<Exclude<FaultCode, "reset">, [number, number, string]> = {
  "429": [429, 20429, "Too Many Requests"],
  "500": [500, 20500, "Internal Server Error"],
  "503": [503, 20503, "Service Unavailable"],
};

/** GSM 03.38 basic set (one septet each) and extension table (two septets each: escape + char). */
const GSM_BASIC = new Set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà");
const GSM_EXT = new Set("\f^{}\\[~]|€");

/**
 * Segments Twilio bills for `body`: GSM-7 when every character is in the
 * GSM 03.38 set (160 septets, 153 per segment when split), else UCS-2
 * (70 UTF-16 code units, 67 per segment when split).
 */
function segmentsOf(body: string): number {
  let septets = 0;
  for (const ch of body) {
    if (GSM_BASIC.has(ch)) septets += 1;
    else if (GSM_EXT.has(ch)) septets += 2;
    else return body.length <= 70 ? 1 : Math.ceil(body.length / 67);
  }
  return septets <= 160 ? 1 : Math.ceil(septets / 153);
}

/** Twilio's dates: RFC 2822 with a numeric zone, e.g. `Thu, 24 Aug 2023 05:01:45 +0000`. */
const rfc2822 = (d: Date): string => d.toUTCString().replace("GMT", "+0000");

/** Twilio's error body. */
const errorBody = (status: number, code: number, message: string): string =>
  JSON.stringify({ code, message, more_info: `https://www.twilio.com/docs/errors/${code}`, status });

/** The sid and auth token of Basic credentials `sid:token` (both non-empty), or undefined. */
function basicCredentials(auth: string | undefined): { sid: string; token: string } | undefined {
  const m = /^Basic ([A-Za-z0-9+/=]+)$/i.exec(auth ?? "");
  if (!m) return undefined;
  const [sid, ...rest] = Buffer.from(m[1], "base64").toString().split(":");
  const token = rest.join(":");
  return sid && token ? { sid, token } : undefined;
}

/** The `nfx_id` query parameter of a status callback URL, if any. */
function nidOf(callback: string | undefined): string | undefined {
  if (!callback) return undefined;
  try {
    return new URL(callback).searchParams.get("nfx_id") ?? undefined;
  } catch {
    return undefined;
  }
}

/**
 * Starts the Twilio sandbox on `port` (0 = any free port): plain HTTP/1.1
 * with keep-alive on 127.0.0.1. Answers
 * `POST /2010-04-01/Accounts/<AC sid>/Messages.json` (form-encoded `To`,
 * `From` or `MessagingServiceSid`, `Body`, `StatusCallback`) as Twilio does:
 * 201 with a queued Message resource; 401 20003 unless Basic credentials
 * name the path's account; 400 21604/21211 (missing or non-E.164 `To`),
 * 21603 (no sender), 21602 (no body), 21617 (over 1600 characters), 21610
 * (`To` starting `+999`: unsubscribed); and the recorder's injected faults,
 * decided with `To` as token and the account sid as account (429 20429,
 * 500 20500, 503 20503, with `Retry-After` when set; connection resets;
 * added latency); 400 21609 for a `StatusCallback` that is not an http(s)
 * URL. Records one delivery per request.
 * When an accepted request carried `StatusCallback`, posts Twilio's status
 * callbacks to it (see sandbox/twilio-callbacks.ts): `sent`, then
 * `delivered`, or `undelivered` 30003 for `To` starting `+998`, `failed`
 * 30008 for `+997`; signed with the request's auth token, retried 3 times.
 */
export async function startTwilioSandbox(o: { port: number; recorder: Recorder }): Promise<{ port: number; close: () => Promise<void> }> {
  const callbacks = new TwilioStatusCallbacks(o.recorder);
  const server = http.createServer({ keepAlive: true }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string") headers[k] = v;
      const path = (req.url ?? "").split("?")[0];
      const account = /^\/2010-04-01\/Accounts\/([^/]+)\/Messages\.json$/.exec(path)?.[1];
      const form = Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString()));
      const to = form.To ?? "";
      const record = (status: number, reason?: string): void =>
        o.recorder.record({ provider: "twilio", token: to, account, nid: nidOf(form.StatusCallback), body: form.Body, data: form, headers, status, reason, at: Date.now() });
      const fail = (status: number, code: number, message: string, retryAfter?: number): void => {
        record(status, String(code));
        res.writeHead(status, { "content-type": "application/json; charset=utf-8", ...(retryAfter !== undefined ? { "retry-after": String(retryAfter) } : {}) });
        res.end(errorBody(status, code, message));
      };
      const creds = basicCredentials(headers.authorization);
      const sid = creds?.sid;
      if (!sid || (account !== undefined && sid !== account)) return fail(401, 20003, "Authenticate");
      if (req.method !== "POST" || !account) return fail(404, 20404, `The requested resource ${path} was not found`);
      if (!to) return fail(400, 21604, "A 'To' phone number is required.");
      if (!E164.test(to)) return fail(400, 21211, `The 'To' number ${to} is not a valid phone number.`);
      if (!form.From && !form.MessagingServiceSid) return fail(400, 21603, "A 'From' phone number is required.");
      const body = form.Body ?? "";
      if (!body) return fail(400, 21602, "Message body is required.");
      if ([...body].length > MAX_BODY) return fail(400, 21617, `The concatenated message body exceeds the ${MAX_BODY} character limit.`);
      const statusCallback = form.StatusCallback;
      if (statusCallback !== undefined && !isWebhookUrl(statusCallback)) return fail(400, 21609, `The StatusCallback URL ${statusCallback} is not a valid URL.`);
      const v = o.recorder.faults.decide("twilio", { token: to, account });
      afterDelay(v, () => {
        if (v.error?.code === "reset") {
          record(0, "reset");
          return void req.socket.destroy();
        }
        if (v.error) {
          const [status, code, message] = TWILIO_FAULT[v.error.code];
          return fail(status, code, message, v.error.retryAfterSec);
        }
        if (to.startsWith(UNSUBSCRIBED_PREFIX)) return fail(400, 21610, "Attempt to send to unsubscribed recipient");
        const messageSid = `SM${randomBytes(16).toString("hex")}`;
        const now = rfc2822(new Date());
        const uri = `/2010-04-01/Accounts/${account}/Messages/${messageSid}`;
        record(201);
        res.writeHead(201, { "content-type": "application/json; charset=utf-8", "twilio-request-id": `RQ${randomBytes(16).toString("hex")}` });
        res.end(
          JSON.stringify({
            account_sid: account, api_version: "2010-04-01", body, date_created: now, date_sent: null, date_updated: now,
            direction: "outbound-api", error_code: null, error_message: null, from: form.From ?? null,
            messaging_service_sid: form.MessagingServiceSid ?? null, num_media: "0", num_segments: String(segmentsOf(body)),
            price: null, price_unit: "USD", sid: messageSid, status: "queued",
            subresource_uris: { media: `${uri}/Media.json` }, to, uri: `${uri}.json`,
          }),
        );
        if (statusCallback) {
          callbacks.accepted({ messageSid, accountSid: account, authToken: creds.token, to, statusCallback, ...(form.From ? { from: form.From } : {}), ...(form.MessagingServiceSid ? { messagingServiceSid: form.MessagingServiceSid } : {}) });
        }
      });
    });
  });
  const listening = await listenLocal(server, o.port);
  return {
    port: listening.port,
    close: () => {
      callbacks.close();
      return listening.close();
    },
  };
}
