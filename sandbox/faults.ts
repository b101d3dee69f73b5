// Fault injection for the sandbox providers: error rates per code, added latency and outage windows, set at start or at run time.
import { z } from "zod";

export const SANDBOX_PROVIDERS = ["apns", "fcm", "sendgrid", "twilio"] as const;
export type SandboxProvider = (typeof SANDBOX_PROVIDERS)[number];

/**
 * Fault codes every sandbox understands, each answered in its provider's own
 * words: `429` (APNs TooManyRequests, FCM QUOTA_EXCEEDED, SendGrid "too many
 * requests", Twilio 20429), `500`, `503`, and `reset` (the connection or
 * stream is torn down without an answer).
 */
export const FAULT_CODES = ["429", "500", "503", "reset"] as const;
export type FaultCode = (typeof FAULT_CODES)[number];

/** One fault rule, as posted to the control API or given at start (`nfx sandbox --faults <file>`). */
export const faultSpecSchema = z.strictObject({
  provider: z.enum(SANDBOX_PROVIDERS),
  /** Only requests whose token / address / number starts with this. */
  prefix: z.string().optional(),
  /** Only requests of this app or account (APNs topic, FCM project, SendGrid API key, Twilio account sid). */
  account: z.string().optional(),
  /** Added to every matching request before it is answered. */
  latencyMs: z.number().int().min(0).max(120_000).default(0),
  /** Errors answered instead of success, each with its share of matching requests (0..1, summing to at most 1). */
  errors: z
    .array(
      z.strictObject({
        code: z.enum(FAULT_CODES),
        rate: z.number().min(0).max(1),
        /** Seconds sent as `Retry-After` with a 429 or 503. */
        retryAfterSec: z.number().int().min(0).max(3600).optional(),
      }),
    )
    .default([])
    .refine((l) => l.reduce((s, e) => s + e.rate, 0) <= 1 + 1e-9, "rates must sum to at most 1"),
  /** An outage window: every matching request in it is answered 503 (or `outageCode`). Relative to when the rule is set. */
  outage: z.strictObject({ startsInMs: z.number().int().min(0).default(0), forMs: z.number().int().min(1) }).optional(),
  outageCode: z.enum(FAULT_CODES).default("503"),
});
export type FaultSpec = z.input<typeof faultSpecSchema>;
type Rule = z.output<typeof faultSpecSchema> & { id: number; window?: { from: number; to: number } };

/** What a sandbox does with one request: wait `delayMs`, then answer normally or with `error`. */
export interface FaultVerdict {
  delayMs: number;
  error?: { code: FaultCode; retryAfterSec?: number };
}

/** The fault rules of one sandbox process, shared by its providers. */
export class Faults {
  private rules: Rule[] = [];
  private seq = 0;

  constructor(private readonly random: () => number = Math.random) {}

  /** Adds a rule (validated: throws a zod error naming the field). Returns its id. */
  add(spec: unknown, now = Date.now()): number {
    const r = faultSpecSchema.parse(spec);
    const id = ++this.seq;
    const window = r.outage ? { from: now + r.outage.startsInMs, to: now + r.outage.startsInMs + r.outage.forMs } : undefined;
    this.rules.push({ ...r, id, ...(window ? { window } : {}) });
    return id;
  }

  /** Removes one rule, or every rule (of one provider). Returns how many went. */
  remove(which: { id?: number; provider?: SandboxProvider; prefix?: string } = {}): number {
    const before = this.rules.length;
    this.rules = this.rules.filter(
      (r) => !((which.id === undefined || r.id === which.id) && (!which.provider || r.provider === which.provider) && (which.prefix === undefined || r.prefix === which.prefix)),
    );
    return before - this.rules.length;
  }

  list(): readonly Rule[] {
    return this.rules;
  }

  /**
   * Decides one request: latencies of every matching rule add up; the first
   * matching rule in an outage window, or whose error dice roll hits, gives
   * the error.
   */
  decide(provider: SandboxProvider, target: { token: string; account?: string }, now = Date.now()): FaultVerdict {
    const out: FaultVerdict = { delayMs: 0 };
    for (const r of this.rules) {
      if (r.provider !== provider) continue;
      if (r.prefix && !target.token.startsWith(r.prefix)) continue;
      if (r.account && r.account !== target.account) continue;
      out.delayMs += r.latencyMs;
      if (out.error) continue;
      if (r.window && now >= r.window.from && now < r.window.to) {
        out.error = { code: r.outageCode };
        continue;
      }
      let roll = this.random();
      for (const e of r.errors) {
        if (roll < e.rate) {
          out.error = { code: e.code, ...(e.retryAfterSec !== undefined ? { retryAfterSec: e.retryAfterSec } : {}) };
          break;
        }
        roll -= e.rate;
      }
    }
    return out;
  }
}

/** Runs `answer` after the verdict's delay (at once when there is none). */
export function afterDelay(v: FaultVerdict, answer: () => void): void {
  if (v.delayMs > 0) setTimeout(answer, v.delayMs);
  else answer();
}

/** Listens on 127.0.0.1:`port` (0 = any free port); `close` drops open connections, then stops. */
export async function listenLocal(server: import("node:http").Server, port: number): Promise<{ port: number; close: () => Promise<void> }> {
  await new Promise<void>((r) => server.listen(port, "127.0.0.1", r));
  return {
    port: (server.address() as import("node:net").AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
