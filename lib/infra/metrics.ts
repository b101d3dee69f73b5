// Prometheus metrics of one process (prom-client): the metric families every stage updates, and cluster gauges read from JetStream on scrape.
import { collectDefaultMetrics, Counter, Gauge, Histogram, register } from "prom-client";
/** What the breaker gauge reads of a bulkhead (lib/flow/bulkhead.ts's state has these fields). */
interface BulkheadState {
  app: string;
  breaker: "closed" | "half-open" | "open" | "isolated";
}
import { PRIORITIES, STREAM } from "../core/subjects.js";
import type { Nats } from "./nats.js";

export { register };

let defaults = false;
/** Starts the default process metrics (CPU, memory, event loop lag, GC), once per process. */
export function collectProcessMetrics(labels: Record<string, string>): void {
  if (defaults) return;
  defaults = true;
  register.setDefaultLabels(labels);
  collectDefaultMetrics({ prefix: "nfx_" });
}

/** Items each pipeline stage handled: ingest (accepted requests), router (fan chunks), shard (recipients decided), gateway-<channel> (sends settled), inapp, tracker (receipt entries). */
export const stageItems = new Counter({ name: "nfx_stage_items_total", help: "Items handled per pipeline stage", labelNames: ["stage"] as const });

/** Provider sends by outcome: sent, failed, retry (pushed back after a retryable error), dead_letter, refused (breaker or bulkhead). */
export const gatewaySends = new Counter({ name: "nfx_gateway_sends_total", help: "Provider sends by channel, app and outcome", labelNames: ["channel", "app", "outcome"] as const });

/**
 * Recipients and sends shed under overload (docs/architecture.md, "Overload and shedding"), by stage (shard,
 * gateway-<channel>, inapp), priority (normal, bulk) and reason (max_delay, expired). Each is also a `shed` receipt.
 */
export const shedTotal = new Counter({ name: "nfx_shed_total", help: "Recipients and sends shed under overload, by stage, priority and reason", labelNames: ["stage", "priority", "reason"] as const });

/** Readers opened again by a stall watchdog (lib/flow/pull.ts, StallWatch): by stage. Anything above 0 is worth a look at the nats-servers. */
export const readerReopens = new Counter({ name: "nfx_reader_reopens_total", help: "Stream readers found stalled and opened again", labelNames: ["stage"] as const });

/** Retryable provider failures scheduled for another attempt. */
export const gatewayRetries = new Counter({ name: "nfx_gateway_retries_total", help: "Sends scheduled for a retry after a retryable provider error", labelNames: ["channel"] as const });

/** One provider request's duration (an email request carries up to 1000 personalizations). */
export const gatewayLatency = new Histogram({
  name: "nfx_gateway_request_seconds",
  help: "Provider request duration",
  labelNames: ["channel", "app", "result"] as const,
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
});

const BREAKER_VALUE: Record<BulkheadState["breaker"], number> = { closed: 0, "half-open": 1, open: 2, isolated: 3 };
const breakerSources: { channel: string; lanes: string; states: () => BulkheadState[] }[] = [];
/** Breaker state per provider app: 0 closed, 1 half-open, 2 open, 3 isolated. */
export const breakerState = new Gauge({
  name: "nfx_breaker_state",
  help: "Provider breaker state: 0 closed, 1 half-open, 2 open, 3 isolated",
  labelNames: ["channel", "app", "lanes"] as const,
  collect() {
    for (const src of breakerSources) for (const s of src.states()) this.set({ channel: src.channel, app: s.app, lanes: src.lanes }, BREAKER_VALUE[s.breaker]);
  },
});
/** Reports the breakers of a gateway's bulkheads (those of lane class `lanes`: each class has its own) on every scrape. */
export function watchBreakers(channel: string, lanes: string, states: () => BulkheadState[]): void {
  breakerSources.push({ channel, lanes, states });
}

/** End-to-end latency from acceptance, per stage (`decided` by the shard owner, `delivered` to the provider or a WebSocket client) and priority. */
export const laneLatency = new Histogram({
  name: "nfx_lane_latency_seconds",
  help: "Time from a notification's acceptance to a stage (decided, delivered), per priority lane",
  labelNames: ["stage", "priority"] as const,
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
});
/** Admission factor of each bulk consumer in this process: the share of its unthrottled pace bulk work may use (1 = not throttled). */
export const admissionFactor = new Gauge({ name: "nfx_admission_factor", help: "Bulk admission factor (1 = not throttled)", labelNames: ["part"] as const });
/** Time bulk work was held back by admission control. */
export const throttledSeconds = new Counter({ name: "nfx_bulk_throttled_seconds_total", help: "Time bulk work waited for admission", labelNames: ["part"] as const });

/** Work-queue consumers recreated because nats-server left them past their stream's messages (lib/flow/stranded.ts). */
export const consumerRepairs = new Counter({ name: "nfx_consumer_repairs_total", help: "Work-queue consumers recreated because nats-server left them past their stream's messages, without a leader, or missing", labelNames: ["stream", "consumer", "fault"] as const });
/** Messages (send batches, receipt batches) published again because their replicated stream lost them after a leader change (lib/flow/stream-reconciler.ts). */
export const messagesRepublished = new Counter({ name: "nfx_messages_republished_total", help: "Messages published again because their stream lost them after a leader change (nats-server)", labelNames: ["stream"] as const });
/** Messages the stream reconciler let go unchecked: over its memory bound. */
export const messagesUnchecked = new Counter({ name: "nfx_messages_unchecked_total", help: "Messages the stream reconciler let go unchecked (over its memory bound while consumers are far behind)", labelNames: ["stream"] as const });
/** Shard checkpoint bytes written, by kind: `full` (the whole state) or `changes` (only what changed since the last write). */
export const checkpointBytes = new Counter({ name: "nfx_checkpoint_bytes_total", help: "Shard checkpoint bytes written (full state or changes)", labelNames: ["kind"] as const });

/** Live WebSocket connections held by this process. */
export const wsConnections = new Gauge({ name: "nfx_ws_connections", help: "Live in-app WebSocket connections in this process" });

/** Webhook and engagement events by source and result (applied, duplicate, refused). */
export const inboundEvents = new Counter({ name: "nfx_inbound_events_total", help: "Provider webhook and engagement events", labelNames: ["source", "result"] as const });

/** Consumer state of one durable consumer, as JetStream reports it. */
export interface ConsumerLag {
  stream: string;
  consumer: string;
  priority?: string;
  /** Messages not yet delivered to the consumer. */
  pending: number;
  /** Delivered, not yet acknowledged. */
  ackPending: number;
}

/** The priority lane in a consumer name (`gw-apns-high`, `router-bulk`), if any. */
const priorityOf = (consumer: string): string | undefined => PRIORITIES.find((p) => consumer.endsWith(`-${p}`));

/** Every durable consumer's lag and every stream's message count, read from JetStream. */
export async function readLag(n: Nats): Promise<{ consumers: ConsumerLag[]; streams: Record<string, number> }> {
  const consumers: ConsumerLag[] = [];
  const streams: Record<string, number> = {};
  for await (const si of n.jsm.streams.list()) {
    const name = si.config.name;
    if (!name.startsWith("NFX_")) continue;
    streams[name] = si.state.messages;
    for await (const ci of n.jsm.consumers.list(name)) {
      // Durable consumers only: ephemeral ones (ordered reads, status queries) come and go.
      if (!ci.config.durable_name) continue;
      const priority = priorityOf(ci.name);
      consumers.push({ stream: name, consumer: ci.name, ...(priority ? { priority } : {}), pending: ci.num_pending, ackPending: ci.num_ack_pending });
    }
  }
  return { consumers, streams };
}

/**
 * Registers the cluster-wide gauges (consumer lag per stream, consumer and
 * priority; stream sizes; dead-letter depth), read from JetStream when
 * scraped, at most once a second. One process per cluster should do this
 * (the tracker role does), so sums over processes stay right.
 */
export function watchCluster(n: Nats): void {
  let cached: { at: number; v: ReturnType<typeof readLag> } | null = null;
  const lag = (): ReturnType<typeof readLag> => {
    if (!cached || Date.now() - cached.at > 1000) cached = { at: Date.now(), v: readLag(n) };
    return cached.v;
  };
  /** A gauge refilled from the cached JetStream read on every scrape. */
  const fromLag = (name: string, help: string, labelNames: string[], fill: (l: Awaited<ReturnType<typeof readLag>>, set: (labels: Record<string, string>, v: number) => void) => void): void =>
    void new Gauge({
      name, help, labelNames,
      async collect() {
        const l = await lag();
        this.reset();
        fill(l, (labels, v) => this.set(labels, v));
      },
    });
  const lagLabels = (c: ConsumerLag): Record<string, string> => ({ stream: c.stream, consumer: c.consumer, priority: c.priority ?? "" });
  fromLag("nfx_consumer_pending", "Messages not yet delivered to a durable consumer (its lag)", ["stream", "consumer", "priority"], (l, set) => l.consumers.forEach((c) => set(lagLabels(c), c.pending)));
  fromLag("nfx_consumer_ack_pending", "Messages delivered to a durable consumer and not yet acknowledged", ["stream", "consumer", "priority"], (l, set) => l.consumers.forEach((c) => set(lagLabels(c), c.ackPending)));
  fromLag("nfx_stream_messages", "Messages stored in a stream (for work-queue streams: the backlog)", ["stream"], (l, set) => Object.entries(l.streams).forEach(([s, v]) => set({ stream: s }, v)));
  new Gauge({
    name: "nfx_dlq_depth",
    help: "Sends in the dead-letter stream",
    async collect() {
      this.set((await lag()).streams[STREAM.dlq] ?? 0);
    },
  });
}
