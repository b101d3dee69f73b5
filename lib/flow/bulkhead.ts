// One provider app's bulkhead: its own concurrency limit with a bounded queue, rate limit at the provider's quota, and circuit breaker.
import { BrokenCircuitError, circuitBreaker, type CircuitBreakerPolicy, CircuitState, ConsecutiveBreaker, handleWhenResult } from "cockatiel";

import type { BulkheadConfig } from "../../config/schema.js";
import type { ProviderError } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import { Semaphore } from "./semaphore.js";

/** The result of one send: accepted by the provider, or its error. */
export type SendResult = { ok: true; providerId?: string } | { ok: false; error: ProviderError };

/** What the bulkhead says when it did not call the provider, and how long to wait before trying again. */
export interface Refusal {
  refused: "breaker_open" | "bulkhead_full";
  retryInMs: number;
}

/** A provider request failed as a whole (every send a retryable, provider-side error): it counts against the breaker. */
export const requestFailed = (rs: readonly SendResult[]): boolean => rs.length > 0 && rs.every((r) => !r.ok && r.error.retryable);

/**
 * A rate limit as a virtual schedule (GCRA): each take books its sends at
 * `ratePerSec`, with one second of burst; callers wait until their booking.
 * A rate of 0 means no limit.
 */
export class RateLimit {
  private tat = 0;
  constructor(private readonly ratePerSec: number, private readonly now: () => number = () => performance.now()) {}

  /** Resolves when `n` sends may start. */
  async take(n: number): Promise<void> {
    if (this.ratePerSec <= 0) return;
    const t = this.now();
    this.tat = Math.max(this.tat, t) + (n * 1000) / this.ratePerSec;
    const wait = this.tat - t - 1000;
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
}

/** A snapshot of a bulkhead for logs and `nfx` status output. */
export interface BulkheadState {
  app: string;
  breaker: "closed" | "open" | "half-open" | "isolated";
  inFlight: number;
  queued: number;
}

const STATE_NAME: Record<CircuitState, BulkheadState["breaker"]> = {
  [CircuitState.Closed]: "closed",
  [CircuitState.Open]: "open",
  [CircuitState.HalfOpen]: "half-open",
  [CircuitState.Isolated]: "isolated",
};

/**
 * Isolates one provider app. `run` refuses at once (never calling the
 * provider) when the breaker is open or when more than `queueLimit` requests
 * already wait for a slot; otherwise it waits for a concurrency slot and the
 * rate limit, then calls through the breaker (cockatiel: `breaker.failures`
 * consecutive failed requests open it; after `halfOpenAfterMs` one trial
 * request decides whether it closes).
 */
export class Bulkhead {
  private readonly slots: Semaphore;
  private readonly rate: RateLimit;
  private readonly breaker: CircuitBreakerPolicy;
  /** When the breaker last opened (monotonic ms). cockatiel moves to half-open lazily, on the first call after the wait. */
  private openedAt = 0;
  /** Failed provider calls in a row since the last request that did not fail as a whole (or since the breaker last opened). */
  private failedInARow = 0;

  /**
   * With `perSend`, each send of a request is a provider call of its own (a group of APNs or FCM sends): a request
   * failing as a whole counts as that many failed calls against `breaker.failures`; else as one.
   */
  constructor(readonly app: string, private readonly cfg: BulkheadConfig, log: Logger, private readonly perSend = false) {
    this.slots = new Semaphore(cfg.concurrency);
    this.rate = new RateLimit(cfg.ratePerSec);
    // cockatiel counts requests; the count in calls is kept here, and cockatiel is told "failure" only when it opens the breaker.
    this.breaker = circuitBreaker(handleWhenResult((r) => this.opens(r as SendResult[])), {
      halfOpenAfter: cfg.breaker.halfOpenAfterMs,
      breaker: new ConsecutiveBreaker(1),
    });
    this.breaker.onBreak(() => {
      this.openedAt = performance.now();
      this.failedInARow = 0;
    });
    this.breaker.onBreak(() => log.warn({ app, halfOpenAfterMs: cfg.breaker.halfOpenAfterMs }, "breaker opened"));
    this.breaker.onHalfOpen(() => log.info({ app }, "breaker half-open: one trial request"));
    this.breaker.onReset(() => log.info({ app }, "breaker closed"));
  }

  /** Whether request result `r` opens the breaker: `breaker.failures` failed calls in a row, or a failed half-open trial. */
  private opens(r: SendResult[]): boolean {
    if (!requestFailed(r)) {
      this.failedInARow = 0;
      return false;
    }
    this.failedInARow += this.perSend ? r.length : 1;
    return this.breaker.state === CircuitState.HalfOpen || this.failedInARow >= this.cfg.breaker.failures;
  }

  /**
   * Calls `request` (for `sends` sends, taking `slots` of the app's `concurrency`: 1 for a request that is one
   * provider call, `sends` for a group of calls made together) inside the bulkhead, or refuses. Errors `request`
   * throws pass through.
   */
  async run(sends: number, request: () => Promise<SendResult[]>, slots = 1): Promise<SendResult[] | Refusal> {
    if (this.isOpen()) return { refused: "breaker_open", retryInMs: this.cfg.breaker.halfOpenAfterMs };
    if (this.slots.inFlight >= this.slots.limit && this.slots.queued >= this.cfg.queueLimit) return { refused: "bulkhead_full", retryInMs: 1000 };
    return this.slots.run(async () => {
      await this.rate.take(sends);
      try {
        return await this.breaker.execute(request);
      } catch (err) {
        // Opened while this request waited for its slot, or a half-open trial is already out.
        if (err instanceof BrokenCircuitError) {
          return { refused: "breaker_open", retryInMs: this.cfg.breaker.halfOpenAfterMs };
        }
        throw err;
      }
    }, 0, slots);
  }

  /** Whether the breaker refuses requests now: open and its half-open wait not yet over, or isolated by an operator. */
  isOpen(): boolean {
    const s = this.breaker.state;
    return s === CircuitState.Isolated || (s === CircuitState.Open && performance.now() - this.openedAt < this.cfg.breaker.halfOpenAfterMs);
  }

  state(): BulkheadState {
    const s = this.breaker.state;
    // Open past its wait: the next request is the half-open trial.
    const breaker = s === CircuitState.Open && !this.isOpen() ? "half-open" : STATE_NAME[s];
    return { app: this.app, breaker, inFlight: this.slots.inFlight, queued: this.slots.queued };
  }
}

/** Whether a bulkhead answer is a refusal. */
export const isRefusal = (r: SendResult[] | Refusal): r is Refusal => !Array.isArray(r);
