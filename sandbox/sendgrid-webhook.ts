// SendGrid's Signed Event Webhook as the sandbox posts it: the events of each accepted send, batched, signed with ECDSA P-256, retried.
import { createPrivateKey, createPublicKey, type KeyObject, randomBytes, sign } from "node:crypto";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import type { Recorder } from "./recorder.js";
import { isWebhookUrl, WebhookPoster } from "./webhooks.js";

/** The sandbox's fixed, committed dev signing key (EC P-256, PKCS#8 PEM). Not a secret: it only signs sandbox events. */
export const SENDGRID_WEBHOOK_KEY_FILE = fileURLToPath(new URL("../../sandbox/certs/sendgrid-webhook-key.pem", import.meta.url));

/** The signing key, read once when this module loads. */
export const SENDGRID_WEBHOOK_PRIVATE_KEY: KeyObject = createPrivateKey(readFileSync(SENDGRID_WEBHOOK_KEY_FILE));

/**
 * The verification key as SendGrid's UI shows it under Mail Settings →
 * Signed Event Webhook: base64 of the DER SubjectPublicKeyInfo, no PEM
 * armour. `new EventWebhook().convertPublicKeyToECDSA()` accepts it as is.
 */
export const SENDGRID_WEBHOOK_PUBLIC_KEY: string = createPublicKey(SENDGRID_WEBHOOK_PRIVATE_KEY).export({ type: "spki", format: "der" }).toString("base64");

/** Headers SendGrid signs its event posts with. */
export const SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature";
export const TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp";

/** SendGrid's batching: a post every `FLUSH_MS`, or as soon as `MAX_BATCH` events wait. */
const FLUSH_MS = 100;
const MAX_BATCH = 1000;
/** Retries of a batch the receiver refused, the first after `BACKOFF_MS`, doubling. */
const RETRIES = 5;
const BACKOFF_MS = 100;

/** One event as SendGrid posts it (custom args sit at the top level beside the standard fields). */
export type SendgridEvent = Record<string, unknown> & { email: string; timestamp: number; event: string; sg_event_id: string; sg_message_id: string };

/** The final outcome the sandbox gives an address, by the prefix of its local part. */
type Outcome = ({ event: string } & Record<string, unknown>)[];
const OUTCOMES: [prefix: string, events: Outcome][] = [
  ["bounce-", [{ event: "bounce", type: "bounce", status: "5.1.1", reason: "550 5.1.1 The email account that you tried to reach does not exist" }]],
  ["blocked-", [{ event: "bounce", type: "blocked", status: "4.0.0", reason: "421 4.0.0 Message temporarily blocked by the receiving mail server" }]],
  ["drop-", [{ event: "dropped", reason: "Bounced Address" }]],
  ["defer-", [{ event: "deferred", response: "421 4.7.0 Try again later", attempt: "1" }, { event: "delivered", response: "250 OK" }]],
];
const DELIVERED: Outcome = [{ event: "delivered", response: "250 OK" }];

/**
 * The events after `processed` for `email`: `bounce-…` a hard bounce
 * (5.1.1), `blocked-…` a block (4.0.0), `drop-…` dropped ("Bounced
 * Address"), `defer-…` deferred then delivered, anything else delivered.
 */
export function outcomeOf(email: string): Outcome {
  const local = email.split("@")[0] ?? "";
  return OUTCOMES.find(([p]) => local.startsWith(p))?.[1] ?? DELIVERED;
}

/** What one accepted send contributes to the event stream: each `to` recipient with the custom args of its personalization. */
export interface AcceptedSend {
  /** The X-Message-Id the 202 answered. */
  messageId: string;
  categories: string[];
  recipients: { email: string; customArgs: Record<string, unknown> }[];
}

/**
 * The events SendGrid generates for `send`, recipient by recipient: a
 * `processed`, then its {@link outcomeOf}. Standard fields win over custom
 * args of the same name. `sg_message_id` is `<X-Message-Id>.filter0001.<n>.0`
 * with n the recipient's index in the request.
 */
export function eventsOf(send: AcceptedSend, now = Date.now()): SendgridEvent[] {
  const timestamp = Math.floor(now / 1000);
  const out: SendgridEvent[] = [];
  send.recipients.forEach((r, n) => {
    const common = {
      email: r.email, timestamp, "smtp-id": `<${send.messageId}@ismtpd0001p1sjc2.sendgrid.net>`,
      sg_message_id: `${send.messageId}.filter0001.${n}.0`, category: send.categories,
    };
    for (const e of [{ event: "processed" }, ...outcomeOf(r.email)]) {
      out.push({ ...r.customArgs, ...common, ...e, sg_event_id: randomBytes(16).toString("base64url") });
    }
  });
  return out;
}

/**
 * SendGrid's signature of one post: base64 of the DER-encoded ECDSA P-256
 * SHA-256 signature over the UTF-8 bytes of `timestamp + payload`.
 */
export function signEvents(payload: string, timestamp: string, key: KeyObject = SENDGRID_WEBHOOK_PRIVATE_KEY): string {
  return sign("sha256", Buffer.from(timestamp + payload, "utf8"), { key, dsaEncoding: "der" }).toString("base64");
}

/** Throws unless `url` is null or an absolute http(s) URL. */
function checkUrl(url: string | null): void {
  if (url !== null && !isWebhookUrl(url)) throw new Error(`webhookUrl: must be an absolute http or https URL, got ${JSON.stringify(url)}`);
}

/**
 * The Event Webhook of one SendGrid sandbox: queues events while a URL is
 * set, posts them as JSON arrays of at most 1000 every 100 ms, signed with
 * `key`, and retries a refused batch 5 times (100 ms, doubling). Events
 * queued while no URL is set are dropped; a batch goes to the URL current
 * when it is flushed. Throws when constructed with a URL that is not http(s).
 */
export class SendgridEventWebhook {
  private queue: SendgridEvent[] = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly poster: WebhookPoster;

  constructor(
    private url: string | null,
    recorder: Recorder,
    private readonly key: KeyObject = SENDGRID_WEBHOOK_PRIVATE_KEY,
  ) {
    checkUrl(url);
    this.poster = new WebhookPoster({ provider: "sendgrid", recorder, retries: RETRIES, backoffMs: BACKOFF_MS, backoffFactor: 2 });
  }

  /** The URL events are posted to, or null when the webhook is off. */
  get webhookUrl(): string | null {
    return this.url;
  }

  /** Sets or (null) clears the URL; clearing drops events not yet posted. Throws unless `url` is null or an absolute http(s) URL. */
  setUrl(url: string | null): void {
    checkUrl(url);
    this.url = url;
    if (!url) this.queue = [];
  }

  /** Queues the events of one accepted send (nothing when no URL is set). */
  accepted(send: AcceptedSend): void {
    if (!this.url) return;
    this.queue.push(...eventsOf(send));
    if (this.queue.length >= MAX_BATCH) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), FLUSH_MS).unref();
  }

  /** Posts everything queued now, in batches of at most 1000. */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const url = this.url;
    const all = this.queue;
    this.queue = [];
    if (!url) return;
    for (let i = 0; i < all.length; i += MAX_BATCH) void this.postBatch(url, all.slice(i, i + MAX_BATCH));
  }

  /** Stops the timer and the retries, drops what is queued, tears down connections. */
  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.queue = [];
    this.poster.close();
  }

  private postBatch(url: string, events: SendgridEvent[]): Promise<number> {
    const body = JSON.stringify(events);
    const headers = (): Record<string, string> => {
      const timestamp = String(Math.floor(Date.now() / 1000));
      return { "content-type": "application/json", "user-agent": "SendGrid Event API", [SIGNATURE_HEADER]: signEvents(body, timestamp, this.key), [TIMESTAMP_HEADER]: timestamp };
    };
    return this.poster.post({ url, body, headers, events });
  }
}
