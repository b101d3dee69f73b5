// When a failed or pushed-back send is tried again: exponential backoff with jitter, Retry-After, FCM's quota minute, bounded by expiry.
import type { RetryConfig } from "../../config/schema.js";
import { backoffMs as doublingMs } from "../core/backoff.js";
import type { ProviderError } from "../core/errors.js";

/** What happens to a send whose provider attempt failed with a retryable error. */
export type RetryPlan =
  | { kind: "retry"; at: number }
  /** Attempts ran out: to the dead-letter stream. */
  | { kind: "dead" }
  /** The next attempt would come after the notification expires: failed now. */
  | { kind: "expired" };

/**
 * Backoff before attempt `attempt + 1` after `attempt` failed attempts:
 * `baseMs · 2^(attempt-1)` capped at `maxMs` (the project's one doubling,
 * lib/core/backoff.ts), jittered to between half and all of it, then raised
 * to the provider's Retry-After and, for a quota error, to `quotaMs`.
 */
export function backoffMs(r: RetryConfig, attempt: number, err: Pick<ProviderError, "retryAfterMs" | "quota">, random: () => number = Math.random): number {
  const exp = doublingMs(attempt - 1, r);
  let d = exp / 2 + random() * (exp / 2);
  if (err.retryAfterMs !== undefined) d = Math.max(d, err.retryAfterMs);
  if (err.quota) d = Math.max(d, r.quotaMs);
  return Math.ceil(d);
}

/** Plans the next attempt of a send that has now failed `attempt` times with `err`, for a notification expiring at `expiresAt`. */
export function planRetry(r: RetryConfig, attempt: number, err: Pick<ProviderError, "retryAfterMs" | "quota">, now: number, expiresAt: number, random?: () => number): RetryPlan {
  if (attempt >= r.maxAttempts) return { kind: "dead" };
  const at = now + backoffMs(r, attempt, err, random);
  return at >= expiresAt ? { kind: "expired" } : { kind: "retry", at };
}

/**
 * When a send the bulkhead refused (or whose key another attempt holds) is
 * looked at again: after `retryInMs`, growing by half per earlier wait up to
 * 30 s, with 20% jitter; null if that is past expiry.
 */
export function planWait(retryInMs: number, waits: number, now: number, expiresAt: number, random: () => number = Math.random): number | null {
  const base = Math.min(Math.max(retryInMs, retryInMs * 1.5 ** waits), Math.max(retryInMs, 30_000));
  const at = now + Math.ceil(base * (1 + 0.2 * random()));
  return at >= expiresAt ? null : at;
}

/** Parses a Retry-After header (delta seconds or an HTTP date) into ms from `now`; undefined when absent or unreadable. */
export function parseRetryAfter(v: string | string[] | number | undefined | null, now: number = Date.now()): number | undefined {
  if (Array.isArray(v)) v = v[0];
  if (v === undefined || v === null || v === "") return undefined;
  const secs = Number(v);
  if (Number.isFinite(secs)) return Math.max(0, secs * 1000);
  const at = Date.parse(String(v));
  return Number.isFinite(at) ? Math.max(0, at - now) : undefined;
}

/**
 * The latest Retry-After an app's provider answered with, for SDKs that drop
 * response headers from their errors (firebase-admin, twilio): noted by the
 * app's HTTP layer, read for errors that arrive within a second of it.
 */
export class RetryAfterHint {
  private last: { ms: number; at: number } | null = null;

  /** Notes a response's Retry-After header, if it has one. */
  note(header: string | string[] | undefined): void {
    const ms = parseRetryAfter(header);
    if (ms !== undefined) this.last = { ms, at: Date.now() };
  }

  /** The Retry-After of an answer in the last second, if any. */
  get(): number | undefined {
    return this.last && Date.now() - this.last.at < 1000 ? this.last.ms : undefined;
  }
}
