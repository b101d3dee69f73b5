// Delivery logs for operators: what happened, per notification (from its receipts) or per user (from the tracker's log); and the cluster overview.
import { z } from "zod";

import type { Campaigns, CampaignStatus } from "../campaign/campaigns.js";
import { type ChannelTotals, outstanding, readTotals } from "../campaign/counters.js";
import { decode } from "../core/codec.js";
import { RequestInvalid } from "../core/errors.js";
import { parseWith } from "../core/request-schema.js";
import { BUCKET, ID_PATTERN, receiptSubject, STREAM } from "../core/subjects.js";
import { type Outcome, OUTCOMES, type ReceiptBatch } from "../core/types.js";
import { readStored } from "../flow/stream-read.js";
import { type ConsumerLag, readLag } from "../infra/metrics.js";
import type { Nats } from "../infra/nats.js";
import { listProcesses, type ProcessInfo } from "../infra/processes.js";
import type { UserLog, UserLogEntry } from "./user-log.js";

/** One line of a notification's delivery log: a receipt entry with its place in the receipts stream. */
export interface LogLine {
  seq: number;
  stage: ReceiptBatch["stage"];
  user: string;
  outcome: Outcome;
  channel?: string;
  device?: string;
  reason?: string;
  providerId?: string;
  at: number;
}

/** A delivery log query: one notification or one user, optionally filtered, at most `limit` lines. */
export const logQuerySchema = z
  .strictObject({
    notification: z.string().regex(ID_PATTERN, "must be a notification id").optional(),
    user: z.string().regex(ID_PATTERN, "must be a user id").optional(),
    outcome: z.enum(OUTCOMES).optional(),
    limit: z.coerce.number().int().min(1).max(1000).default(100),
    /** Notification log: lines after this receipts-stream sequence (the `next` of the previous page). */
    after: z.coerce.number().int().min(0).optional(),
    /** User log: entries older than this time (ms; the `next` of the previous page). */
    before: z.coerce.number().int().min(0).optional(),
  })
  .refine((q) => (q.notification === undefined) !== (q.user === undefined), { message: "name exactly one of notification and user", path: ["notification"] });
export type LogQuery = z.output<typeof logQuerySchema>;

/** A page of a delivery log; `next` continues it (absent at the end). */
export interface LogPage {
  lines: (LogLine | (UserLogEntry & { user: string }))[];
  next?: number;
}

/**
 * Reads a delivery log page. A notification's comes from its receipts in
 * stream order (`after` pages on); a user's from the tracker's per-user log,
 * newest first (`before` pages back). Throws RequestInvalid naming the field
 * for a bad query.
 */
export async function readDeliveryLog(n: Nats, userLog: UserLog | null, query: unknown): Promise<LogPage> {
  const q = parseWith(logQuerySchema, query);
  if (q.user !== undefined) {
    if (!userLog) throw new RequestInvalid("user: per-user logs are off (tracker.userLog)", { field: "user" });
    const got = await userLog.read(q.user, q.outcome ? 1000 : q.limit, q.before);
    const lines = got.filter((l) => !q.outcome || l.outcome === q.outcome).slice(0, q.limit).map((l) => ({ ...l, user: q.user! }));
    return { lines, ...(got.length >= q.limit && lines.length ? { next: lines[lines.length - 1].at } : {}) };
  }
  const lines: LogLine[] = [];
  let last = 0;
  let full = false;
  await readStored(
    n,
    STREAM.receipts,
    (m) => {
      if (q.after !== undefined && m.seq <= q.after) return true;
      const b = decode<ReceiptBatch>(m.data);
      for (const e of b.entries) {
        if (q.outcome && e.outcome !== q.outcome) continue;
        if (lines.length >= q.limit) {
          full = true;
          return false;
        }
        lines.push({ seq: m.seq, stage: b.stage, user: e.user, outcome: e.outcome, channel: e.channel, device: e.device, reason: e.reason, providerId: e.providerId, at: e.at });
      }
      last = m.seq;
      return true;
    },
    receiptSubject(q.notification!),
  );
  // A page ends at a whole receipt batch, so `after` never splits one.
  if (full) {
    const cut = lines.findIndex((l) => l.seq === lines[lines.length - 1].seq);
    const kept = cut > 0 ? lines.slice(0, cut) : lines;
    return { lines: kept, next: kept[kept.length - 1].seq };
  }
  return { lines, ...(last && lines.length >= q.limit ? { next: last } : {}) };
}

/** The cluster at a glance: what the web status page and `nfx top` show. */
export interface Overview {
  at: number;
  channels: ChannelTotals["channels"];
  campaigns: (CampaignStatus & { outstanding: number; category: string })[];
  processes: (ProcessInfo & { role: string })[];
  lag: ConsumerLag[];
  streams: Record<string, number>;
  breakers: BreakerView[];
}

/** A provider app's breaker, as its gateway process reports it. */
export interface BreakerView {
  channel: string;
  app: string;
  state: "closed" | "half-open" | "open" | "isolated";
}

export type MetricJson = { name: string; type: string; values: { value: number; labels: Record<string, string | number> }[] };

/** Reads every live process's metrics (`/metrics.json`); a process that does not answer within 2 s is left out. */
export async function scrapeProcesses(processes: readonly ProcessInfo[]): Promise<{ process: ProcessInfo; metrics: MetricJson[] }[]> {
  const got = await Promise.all(
    processes.map(async (p) => {
      if (!p.metricsUrl) return null;
      try {
        const r = await fetch(`${p.metricsUrl}.json`, { signal: AbortSignal.timeout(2000) });
        if (!r.ok) return null;
        const j = (await r.json()) as { metrics: MetricJson[] };
        return { process: p, metrics: j.metrics };
      } catch {
        return null;
      }
    }),
  );
  return got.filter((x) => x !== null);
}

const BREAKER_NAMES = ["closed", "half-open", "open", "isolated"] as const;

/** The breakers in scraped metrics (nfx_breaker_state). */
export function breakersOf(scraped: { metrics: MetricJson[] }[]): BreakerView[] {
  const out: BreakerView[] = [];
  for (const s of scraped) {
    for (const v of s.metrics.find((m) => m.name === "nfx_breaker_state")?.values ?? []) {
      out.push({ channel: String(v.labels.channel), app: String(v.labels.app), state: BREAKER_NAMES[v.value] ?? "open" });
    }
  }
  return out;
}

/** Reads the overview: per-channel totals, the newest campaigns with their counters, live processes, consumer lag. */
export async function readOverview(n: Nats, campaigns: Campaigns, limit = 20): Promise<Overview> {
  const [totals, ids, processes, lag] = await Promise.all([readTotals(await n.kvm.open(BUCKET.counters)), campaigns.list(limit), listProcesses(n), readLag(n)]);
  const list = await Promise.all(
    ids.map(async (id) => {
      const st = await campaigns.status(id).catch(() => null);
      const rec = st ? await campaigns.get(id) : null;
      return st ? { ...st, outstanding: outstanding(st.counters), category: rec?.rec.brief.category ?? "" } : null;
    }),
  );
  const breakers = breakersOf(await scrapeProcesses(processes.filter((p) => p.roles.some((r) => r.startsWith("gateway-")))));
  return { at: Date.now(), channels: totals.channels, campaigns: list.filter((c) => c !== null), processes: processes.map((p) => ({ ...p, role: p.roles.join("+") })), lag: lag.consumers, streams: lag.streams, breakers };
}
