// What the sandbox providers received: every request, its answer, and counts per device including duplicates.

import { Faults, SANDBOX_PROVIDERS, type SandboxProvider } from "./faults.js";

export type { SandboxProvider };

/** One request a sandbox answered. */
export interface Delivery {
  provider: SandboxProvider;
  /** Device token, email address or phone number. */
  token: string;
  /** The app or account the request came from (APNs topic, FCM project, SendGrid API key name, Twilio account sid). */
  account?: string;
  /** The nfx notification id carried in the payload (APNs `nfx.id`, FCM `data.nfx_id`). */
  nid?: string;
  title?: string;
  body?: string;
  data?: Record<string, unknown>;
  headers: Record<string, string>;
  status: number;
  reason?: string;
  at: number;
  /** The client had given up on the request (closed its stream or connection) before the sandbox answered: recorded as the provider would have acted on it, but the client never learnt the outcome. */
  unanswered?: true;
}

/** Providers that post delivery webhooks back to the customer (SendGrid's Event Webhook, Twilio's status callbacks). */
export type WebhookProvider = "sendgrid" | "twilio";

/** One webhook POST attempt a sandbox made (each retry is its own entry). */
export interface WebhookPost {
  provider: WebhookProvider;
  url: string;
  /** HTTP status the receiver answered, 0 for a connection error or timeout. */
  status: number;
  /** Events in the body: a SendGrid batch's length, 1 for a Twilio callback. */
  events: number;
  at: number;
}

export interface ProviderStats {
  requests: number;
  accepted: number;
  rejected: number;
  /** Distinct (token, notification) pairs accepted. */
  unique: number;
  /** Accepted requests beyond the first for the same (token, notification). */
  duplicates: number;
}

/** Records deliveries in memory. One per sandbox process, shared by its providers. */
export class Recorder {
  readonly deliveries: Delivery[] = [];
  /** Faults injected at start or at run time (control API `POST /faults`, `DELETE /faults`). */
  readonly faults = new Faults();

  /** Accepted requests per provider, kept as they are recorded (cheap to poll while a benchmark runs). */
  readonly acceptedCount: Record<SandboxProvider, number> = Object.fromEntries(SANDBOX_PROVIDERS.map((p) => [p, 0])) as Record<SandboxProvider, number>;

  /** Every webhook POST attempt, retries included, in the order they were answered. */
  readonly webhooks: WebhookPost[] = [];
  private readonly posted: Record<WebhookProvider, Record<string, unknown>[]> = { sendgrid: [], twilio: [] };

  record(d: Delivery): void {
    this.deliveries.push(d);
    if (d.status >= 200 && d.status < 300) this.acceptedCount[d.provider]++;
  }

  /** Accepted deliveries, optionally of one provider. */
  accepted(provider?: SandboxProvider): Delivery[] {
    return this.deliveries.filter((d) => d.status >= 200 && d.status < 300 && (!provider || d.provider === provider));
  }

  /** Accepted count per device token of one provider. */
  countsByDevice(provider: SandboxProvider): Record<string, number> {
    const out: Record<string, number> = {};
    for (const d of this.accepted(provider)) out[d.token] = (out[d.token] ?? 0) + 1;
    return out;
  }

  /** Records one webhook POST attempt; its events count as delivered to the receiver only when it answered 2xx. */
  recordWebhook(post: WebhookPost, events: readonly Record<string, unknown>[]): void {
    this.webhooks.push(post);
    if (post.status >= 200 && post.status < 300) this.posted[post.provider].push(...events);
  }

  /**
   * Every event (SendGrid: one object of a batch) or callback (Twilio: its
   * form parameters) that a receiver accepted with a 2xx, in posting order.
   * A batch retried after a failure appears once, from its successful attempt.
   */
  webhookEvents(provider: WebhookProvider): Record<string, unknown>[] {
    return this.posted[provider].slice();
  }

  /** Accepted webhook events per kind: SendGrid's `event`, Twilio's `MessageStatus`. */
  webhookCounts(provider: WebhookProvider): Record<string, number> {
    const out: Record<string, number> = {};
    for (const e of this.posted[provider]) {
      const kind = String(provider === "sendgrid" ? e.event : e.MessageStatus);
      out[kind] = (out[kind] ?? 0) + 1;
    }
    return out;
  }

  stats(): Record<SandboxProvider, ProviderStats> {
    const one = (p: SandboxProvider): ProviderStats => {
      const all = this.deliveries.filter((d) => d.provider === p);
      const ok = all.filter((d) => d.status >= 200 && d.status < 300);
      const unique = new Set(ok.map((d) => `${d.token}|${d.nid ?? ""}`)).size;
      return { requests: all.length, accepted: ok.length, rejected: all.length - ok.length, unique, duplicates: ok.length - unique };
    };
    return Object.fromEntries(SANDBOX_PROVIDERS.map((p) => [p, one(p)])) as Record<SandboxProvider, ProviderStats>;
  }

  reset(): void {
    this.deliveries.length = 0;
    this.webhooks.length = 0;
    this.posted.sendgrid.length = 0;
    this.posted.twilio.length = 0;
    for (const p of SANDBOX_PROVIDERS) this.acceptedCount[p] = 0;
  }
}

/**
 * Token conventions that make a sandbox answer with a provider error, so
 * tests and the demo can exercise every outcome: `bad-…` is a malformed
 * token, `gone-…` an unregistered one.
 */
export function tokenFault(token: string): "bad" | "gone" | null {
  if (token.startsWith("bad-")) return "bad";
  if (token.startsWith("gone-")) return "gone";
  return null;
}
