// Admission control of bulk work: urgent-lane processes report their latency on core NATS, and every bulk consumer slows its pace by feedback (AIMD) while urgent latency is above target.
import { hostname } from "node:os";

import { decodeJson, encodeJson } from "../core/codec.js";
import type { Config } from "../core/config.js";
import type { Logger } from "../core/log.js";
import { ADMISSION, type Priority } from "../core/subjects.js";
import { admissionFactor, laneLatency, throttledSeconds } from "../infra/metrics.js";
import type { Nats } from "../infra/nats.js";

/** Where a latency is measured, from the notification's acceptance: decided by its shard owner, or handed to the provider / a WebSocket client. */
export type LatencyStage = "decided" | "delivered";

/** One urgent-lane reporter's view of the last eight intervals, on `nfx.ctl.latency.<stage>`. */
export interface LatencyReport {
  /** The reporting process and part (unique per reporter). */
  src: string;
  stage: LatencyStage;
  /** p99 of urgent latencies in the last eight intervals, ms (0 when none). */
  p99: number;
  /** Urgent samples in those intervals. */
  n: number;
  /** Age of the oldest urgent item waiting to be handled, ms (0 when none waits): a starved lane reports no samples but this grows. */
  waiting: number;
  at: number;
}

/** Intervals a report's p99 covers (8 × 250 ms = 2 s by default). */
const WINDOW_INTERVALS = 8;

/** The p99 of `xs` (sorted in place). */
function p99(xs: number[]): number {
  if (xs.length === 0) return 0;
  xs.sort((a, b) => a - b);
  return xs[Math.min(xs.length - 1, Math.floor(xs.length * 0.99))];
}

/**
 * Records end-to-end latencies of one stage: every lane into the histogram
 * `nfx_lane_latency_seconds{stage,priority}`, and the urgent ones (critical,
 * high) into a sliding window of eight intervals whose p99, every `lanes.admission.intervalMs`, is published
 * as a {@link LatencyReport} (with the age `waiting()` of the oldest urgent
 * item still waiting) for the bulk consumers' {@link Admission} controllers.
 */
export class LatencyReporter {
  /** Urgent samples of the last {@link WINDOW_INTERVALS} intervals, oldest interval first. */
  private intervals: number[][] = [[]];
  private readonly timer: NodeJS.Timeout | null;
  private readonly src: string;
  /** The histogram's child of each priority (label lookups once, not per item). */
  private readonly lane: Partial<Record<Priority, ReturnType<typeof laneLatency.labels>>> = {};

  /** `report`: publish reports (urgent-lane parts only); `waiting`: age in ms of the oldest urgent item not yet handled. */
  constructor(private readonly nats: Nats, cfg: Config, readonly stage: LatencyStage, part: string, report: boolean, private readonly waiting: () => number = () => 0) {
    this.src = `${hostname()}-${process.pid}-${part}`;
    this.timer = report ? setInterval(() => this.flush(), cfg.lanes.admission.intervalMs) : null;
    this.timer?.unref();
  }

  /** Records one item of priority `p` accepted at `acceptedAt`, reaching this stage at `now`. */
  observe(p: Priority, acceptedAt: number, now: number, count = 1): void {
    const ms = Math.max(0, now - acceptedAt);
    const h = (this.lane[p] ??= laneLatency.labels(this.stage, p));
    for (let i = 0; i < count; i++) h.observe(ms / 1000);
    if (this.timer && (p === "critical" || p === "high")) this.intervals[this.intervals.length - 1].push(ms);
  }

  private flush(): void {
    // p99 over a sliding window of intervals: a single interval holds a handful of urgent samples, whose p99 is just their maximum.
    const w = this.intervals.flat();
    this.intervals.push([]);
    if (this.intervals.length > WINDOW_INTERVALS) this.intervals.shift();
    const r: LatencyReport = { src: this.src, stage: this.stage, p99: p99(w), n: w.length, waiting: Math.round(this.waiting()), at: Date.now() };
    this.nats.nc.publish(ADMISSION.latency(this.stage), encodeJson(r));
  }

  /** Stops reporting. */
  close(): void {
    if (this.timer) clearInterval(this.timer);
  }
}

/** The controller's view for status displays. */
export interface AdmissionState {
  factor: number;
  /** The worst urgent latency signal of the last tick, ms (p99 or oldest waiting, over fresh reports); null: no urgent-lane reports. */
  signal: number | null;
  /** Total time bulk work of this process was held back, ms. */
  throttledMs: number;
}

/**
 * The admission controller of one bulk consumer (campaign expansion, bulk
 * shard chunks, bulk gateway batches). It listens to every
 * {@link LatencyReport}; each `intervalMs` it takes the worst signal of the
 * reports fresher than three intervals and moves its factor f (the share of
 * its unthrottled pace bulk work may use): above `targetMs` f shrinks to 0.7·f (down
 * to `minFactor`), below 70% of it (or with no urgent traffic) f grows to
 * 1.5·f + 0.05 (up to 1: from the floor back to 1 in about six intervals). {@link pace} turns f into waiting: after a unit of bulk work
 * that took w ms, the caller waits w·(1/f − 1), so bulk uses about f of the
 * time it would. With admission off, f stays 1.
 */
export class Admission {
  private f = 1;
  private signal: number | null = null;
  private throttled = 0;
  private readonly reports = new Map<string, LatencyReport>();
  private readonly timer: NodeJS.Timeout | null = null;
  private readonly sub: { unsubscribe(): void } | null = null;

  /** `nats`: where reports arrive (null: only through {@link receive}, for tests); `part`: names this consumer in metrics. */
  constructor(nats: Nats | null, private readonly cfg: Config, private readonly part: string, private readonly log?: Logger) {
    const a = cfg.lanes.admission;
    if (!a.enabled) return;
    this.sub =
      nats?.nc.subscribe(ADMISSION.all, {
        callback: (err, m) => {
          if (err) return;
          try {
            this.receive(decodeJson<LatencyReport>(m.data));
          } catch {
            /* not a report */
          }
        },
      }) ?? null;
    this.timer = setInterval(() => this.tick(), a.intervalMs);
    this.timer.unref();
  }

  /** Takes one report (kept as of `at`, its arrival); anything not shaped like a {@link LatencyReport} is ignored. */
  receive(r: LatencyReport, at = Date.now()): void {
    if (typeof r?.src === "string" && typeof r.p99 === "number" && typeof r.waiting === "number") this.reports.set(r.src, { ...r, at });
  }

  /** Current factor in [minFactor, 1]. */
  get factor(): number {
    return this.f;
  }

  state(): AdmissionState {
    return { factor: this.f, signal: this.signal, throttledMs: Math.round(this.throttled) };
  }

  /** One control step (also called by tests with a fixed report set). */
  tick(now = Date.now()): void {
    const a = this.cfg.lanes.admission;
    if (!a.enabled) return;
    let worst: number | null = null;
    for (const [k, r] of this.reports) {
      if (now - r.at > 3 * a.intervalMs) {
        this.reports.delete(k);
        continue;
      }
      const s = Math.max(r.p99, r.waiting);
      worst = worst === null ? s : Math.max(worst, s);
    }
    this.signal = worst;
    const before = this.f;
    if (worst !== null && worst > a.targetMs) this.f = Math.max(a.minFactor, this.f * 0.7);
    else if (worst === null || worst < 0.7 * a.targetMs) this.f = Math.min(1, this.f * 1.5 + 0.05);
    if (this.f !== before && (this.f === a.minFactor || this.f === 1)) this.log?.info({ part: this.part, factor: this.f, signalMs: worst }, "bulk admission factor");
    admissionFactor.set({ part: this.part }, this.f);
  }

  /**
   * Waits as long as bulk work that took `workMs` must wait at the current
   * factor (at most 5 s at a time); resolves the milliseconds waited (0 at f = 1).
   */
  async pace(workMs: number): Promise<number> {
    if (this.f >= 1 || workMs <= 0) return 0;
    const ms = Math.min(5000, workMs * (1 / this.f - 1));
    await new Promise((r) => setTimeout(r, ms));
    this.throttled += ms;
    throttledSeconds.inc({ part: this.part }, ms / 1000);
    return ms;
  }

  /** Stops listening. */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.sub?.unsubscribe();
  }
}
