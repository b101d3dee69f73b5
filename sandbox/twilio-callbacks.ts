// Twilio's message status callbacks as the sandbox posts them: `sent`, then the final status, form-encoded and signed with X-Twilio-Signature.
import { createHmac, randomBytes } from "node:crypto";

import type { Recorder } from "./recorder.js";
import { WebhookPoster } from "./webhooks.js";

/** Delay between the `sent` callback and the final one. */
const FINAL_AFTER_MS = 20;
/** Retries of a refused callback, each after `BACKOFF_MS`. */
const RETRIES = 3;
const BACKOFF_MS = 100;

/** The sandbox's numbering conventions for failed deliveries: Twilio error codes. */
const UNDELIVERED_PREFIX = "+998";
const FAILED_PREFIX = "+997";
/** 30003 Unreachable destination handset; 30008 Unknown error. */
const UNREACHABLE = "30003";
const UNKNOWN = "30008";

/** One accepted message whose request carried `StatusCallback`. */
export interface CallbackMessage {
  messageSid: string;
  accountSid: string;
  /** The password of the request's Basic credentials: the key Twilio signs callbacks with. */
  authToken: string;
  to: string;
  from?: string;
  messagingServiceSid?: string;
  statusCallback: string;
}

/** The final status for `to`: `+998…` undelivered (30003), `+997…` failed (30008), anything else delivered. */
export function finalStatusOf(to: string): { status: "delivered" | "undelivered" | "failed"; errorCode?: string } {
  if (to.startsWith(UNDELIVERED_PREFIX)) return { status: "undelivered", errorCode: UNREACHABLE };
  if (to.startsWith(FAILED_PREFIX)) return { status: "failed", errorCode: UNKNOWN };
  return { status: "delivered" };
}

/** The form parameters of one status callback, as Twilio posts them. */
export function callbackParams(m: CallbackMessage, status: string, errorCode?: string): Record<string, string> {
  return {
    MessageSid: m.messageSid, SmsSid: m.messageSid, MessageStatus: status, SmsStatus: status, AccountSid: m.accountSid,
    ...(m.from ? { From: m.from } : {}), ...(m.messagingServiceSid ? { MessagingServiceSid: m.messagingServiceSid } : {}),
    To: m.to, ApiVersion: "2010-04-01", ...(errorCode ? { ErrorCode: errorCode } : {}),
  };
}

/**
 * Twilio's request signature: base64 of HMAC-SHA1 keyed with the auth token
 * over the full URL followed by every POST parameter's name and value,
 * sorted by name.
 */
export function twilioSignature(authToken: string, url: string, params: Record<string, string>): string {
  const data = Object.keys(params)
    .sort()
    .reduce((acc, k) => acc + k + params[k], url);
  return createHmac("sha1", authToken).update(Buffer.from(data, "utf8")).digest("base64");
}

/**
 * Status callbacks of one Twilio sandbox: for each accepted message, posts
 * `sent`, then, {@link FINAL_AFTER_MS} after that post settles, the
 * {@link finalStatusOf} its `To`; each signed and retried 3 times (100 ms
 * apart) on a non-2xx answer or connection error. Never throws.
 */
export class TwilioStatusCallbacks {
  private readonly poster: WebhookPoster;
  private closed = false;

  constructor(recorder: Recorder) {
    this.poster = new WebhookPoster({ provider: "twilio", recorder, retries: RETRIES, backoffMs: BACKOFF_MS, backoffFactor: 1 });
  }

  /** Starts the callbacks of `m` in the background. */
  accepted(m: CallbackMessage): void {
    void this.run(m);
  }

  /** Stops pending callbacks and their retries. */
  close(): void {
    this.closed = true;
    this.poster.close();
  }

  private async run(m: CallbackMessage): Promise<void> {
    await this.post(m, callbackParams(m, "sent"));
    await new Promise((r) => setTimeout(r, FINAL_AFTER_MS).unref());
    if (this.closed) return;
    const final = finalStatusOf(m.to);
    await this.post(m, callbackParams(m, final.status, final.errorCode));
  }

  private post(m: CallbackMessage, params: Record<string, string>): Promise<number> {
    const body = new URLSearchParams(params).toString();
    const headers = (): Record<string, string> => ({
      "content-type": "application/x-www-form-urlencoded",
      "user-agent": "TwilioProxy/1.1",
      "x-twilio-signature": twilioSignature(m.authToken, m.statusCallback, params),
    });
    return this.poster.post({ url: m.statusCallback, body, headers, events: [params] });
  }
}

/** An inbound SMS as Twilio posts it to a number's messaging webhook. */
export interface InboundSms {
  /** The messaging webhook (the receiver's URL, query included, as Twilio signs it). */
  url: string;
  accountSid: string;
  /** The account's auth token: the key of `X-Twilio-Signature`. */
  authToken: string;
  from: string;
  to: string;
  body: string;
}

/**
 * Posts an inbound message as Twilio does: form-encoded `MessageSid`, `AccountSid`, `From`, `To`, `Body`, `NumMedia`,
 * `NumSegments`, `SmsStatus=received`, `ApiVersion`, signed with `X-Twilio-Signature`. Resolves the receiver's answer
 * (status, content type and body: TwiML when it replies).
 */
export async function postInboundSms(m: InboundSms): Promise<{ status: number; contentType: string; body: string }> {
  const sid = `SM${randomBytes(16).toString("hex")}`;
  const params: Record<string, string> = {
    MessageSid: sid, SmsSid: sid, SmsMessageSid: sid, AccountSid: m.accountSid, From: m.from, To: m.to, Body: m.body,
    NumMedia: "0", NumSegments: "1", SmsStatus: "received", ApiVersion: "2010-04-01",
  };
  const res = await fetch(m.url, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", "x-twilio-signature": twilioSignature(m.authToken, m.url, params), "user-agent": "TwilioProxy/1.1" },
    body: new URLSearchParams(params).toString(),
    signal: AbortSignal.timeout(10_000),
  });
  return { status: res.status, contentType: res.headers.get("content-type") ?? "", body: await res.text() };
}
