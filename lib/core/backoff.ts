// The one exponential backoff of the project: a delay that doubles per attempt up to a cap.

/** The numbers of one backoff: the first delay and the cap. */
export interface BackoffOptions {
  /** Delay of attempt 0, in ms; each further attempt doubles it. */
  baseMs: number;
  /** No delay is longer than this, in ms. */
  maxMs: number;
}

/**
 * Delay before a retry: `baseMs · 2^attempt`, capped at `maxMs`. `attempt`
 * is the exponent (0 gives `baseMs`); callers counting from 1 pass their
 * count as is or minus one, whichever keeps their delays. Pure, never throws;
 * a fractional attempt counts as its floor, a negative one (or NaN) as 0,
 * and large attempts stay at `maxMs` (the exponent is bounded, so the result
 * is never Infinity or NaN). No jitter: the provider retries of lib/gateway
 * (`retry-policy.ts`) start from this delay and add their jitter,
 * Retry-After and quota floors on top.
 */
export function backoffMs(attempt: number, o: BackoffOptions): number {
  const exp = attempt > 0 ? Math.min(Math.floor(attempt), 52) : 0;
  return Math.min(o.maxMs, o.baseMs * 2 ** exp);
}
