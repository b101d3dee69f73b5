// `nfx init`: creates or updates every stream, consumer and KV bucket (idempotent, as nfx-admin); roles wait for it at start.
import { AckPolicy, type ConsumerConfig, DeliverPolicy, DiscardPolicy, RetentionPolicy, StorageType, type StreamConfig } from "@nats-io/jetstream";
import { nanos } from "@nats-io/transport-node";

import { backoffMs } from "../core/backoff.js";
import type { Config } from "../core/config.js";
import type { Logger } from "../core/log.js";
import {
  BUCKET, CHANNELS, CONSUMER,   deferAll, dlqAll, fanAll, GATEWAY_CHANNELS, intakeAll, intakeLane, KV_STORE, PRIORITIES, receiptAll, retryAll, retryOf, scheduledAll, sendAll, sendSubject,
STREAM,
trailAll, webhookSendSubject, } from "../core/subjects.js";
import { type Nats, retryTransient } from "./nats.js";
import { PROCESS_TTL_MS } from "./processes.js";

/** The stream configurations derived from config. Exported for `nfx init --print` and tests. */
export function streamConfigs(cfg: Config): (Partial<StreamConfig> & { name: string })[] {
  const storage = cfg.streams.storage === "memory" ? StorageType.Memory : StorageType.File;
  const base = { storage, num_replicas: cfg.streams.replicas, duplicate_window: nanos(cfg.streams.duplicateWindowSec * 1000) };
  const keep = { retention: RetentionPolicy.Limits, max_age: nanos(cfg.streams.retentionHours * 3600_000) };
  return [
    { ...base, ...keep, name: STREAM.intake, subjects: [intakeAll] },
    // Fan chunks are read by each shard's owner from its checkpointed position (no acks): kept until the owner's checkpoint purges them.
    { ...base, name: STREAM.fan, subjects: [fanAll], retention: RetentionPolicy.Limits, max_age: nanos(cfg.streams.retentionHours * 3600_000) },
    { ...base, name: STREAM.defer, subjects: [deferAll], retention: RetentionPolicy.Workqueue },
    { ...base, name: STREAM.retry, subjects: [retryAll], retention: RetentionPolicy.Workqueue },
    { ...base, name: STREAM.trails, subjects: [trailAll], retention: RetentionPolicy.Limits, max_age: nanos(cfg.policy.trailRetentionHours * 3600_000), max_bytes: cfg.policy.trailMaxBytes, discard: DiscardPolicy.Old },
    ...CHANNELS.map((c) => ({ ...base, name: STREAM.send(c), subjects: [sendAll(c)], retention: RetentionPolicy.Workqueue })),
    { ...base, ...keep, name: STREAM.receipts, subjects: [receiptAll] },
    { ...base, ...keep, name: STREAM.dlq, subjects: [dlqAll] },
  ];
}

/** The durable consumers: one per stage and priority lane, so urgent lanes never queue behind bulk. */
export function consumerConfigs(cfg: Config): { stream: string; config: Partial<ConsumerConfig> }[] {
  const common = {
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(cfg.streams.ackWaitSec * 1000),
    max_ack_pending: 1000,
  };
  const out: { stream: string; config: Partial<ConsumerConfig> }[] = [];
  // The tracker folds receipts in order and acks after each flush.
  out.push({ stream: STREAM.receipts, config: { ...common, durable_name: CONSUMER.tracker, max_ack_pending: 20_000 } });
  // Accepted requests, for the tracker's "accepted" counter (the scheduled subject is skipped in code: due requests come back on their lane).
  out.push({ stream: STREAM.intake, config: { ...common, durable_name: CONSUMER.trackerIntake, filter_subject: intakeAll, max_ack_pending: 20_000 } });
  // Lifecycle events for endpoints that subscribe to them: new receipts and accepted requests only (an endpoint gets events from its subscription on).
  out.push({ stream: STREAM.receipts, config: { ...common, deliver_policy: DeliverPolicy.New, durable_name: CONSUMER.events, max_ack_pending: 5000 } });
  out.push({ stream: STREAM.intake, config: { ...common, deliver_policy: DeliverPolicy.New, durable_name: CONSUMER.eventsIntake, filter_subject: intakeAll, max_ack_pending: 5000 } });
  // Held messages stay unacked until due, so the scheduler's ack window is large.
  out.push({ stream: STREAM.intake, config: { ...common, durable_name: CONSUMER.scheduler, filter_subject: scheduledAll, max_ack_pending: 1_000_000 } });
  out.push({ stream: STREAM.defer, config: { ...common, durable_name: CONSUMER.deferred, max_ack_pending: 1_000_000 } });
  // A gateway's pushed-back sends are held by naks with a delay (JetStream keeps the timer): the ack wait only covers one release, so it is the gateways' short one.
  for (const c of GATEWAY_CHANNELS) out.push({ stream: STREAM.retry, config: { ...common, ack_wait: nanos(cfg.gateways.ackWaitSec * 1000), durable_name: CONSUMER.retry(c), filter_subject: retryOf(c), max_ack_pending: 1_000_000 } });
  for (const p of PRIORITIES) {
    out.push({ stream: STREAM.intake, config: { ...common, durable_name: CONSUMER.router(p), filter_subject: intakeLane(p) } });
    out.push({ stream: STREAM.intake, config: { ...common, durable_name: CONSUMER.campaign(p), filter_subject: intakeLane(p) } });
    // Provider gateways' lanes, and the webhook gateway's per endpoint partition (it holds a batch while it posts its
    // deliveries directly), redeliver a dead gateway's batch after `gateways.ackWaitSec` (short: both signal progress while they work).
    const lane = { ...common, ack_wait: nanos(cfg.gateways.ackWaitSec * 1000) };
    for (const c of GATEWAY_CHANNELS) out.push({ stream: STREAM.send(c), config: { ...lane, durable_name: CONSUMER.gateway(c, p), filter_subject: sendSubject(c, p) } });
    for (let part = 0; part < cfg.endpoints.partitions; part++) {
      out.push({ stream: STREAM.send("webhook"), config: { ...lane, durable_name: CONSUMER.webhook(p, part), filter_subject: webhookSendSubject(p, part) } });
    }
    // In-app sends are taken by the in-app dispatcher (ws-gateway role) like a gateway's.
    out.push({ stream: STREAM.send("inapp"), config: { ...common, durable_name: CONSUMER.gateway("inapp", p), filter_subject: sendSubject("inapp", p) } });
  }
  return out;
}

const isNotFound = (err: unknown): boolean => /not found/i.test(String((err as Error)?.message ?? err));

/** `fn` over `items`, four at a time, each retried (with a growing delay, for up to a minute) while JetStream answers transiently; results in order. */
async function withRetries<T, R>(items: readonly T[], fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await retryTransient(() => fn(items[i]), { baseMs: 250, maxMs: 2000, until: Date.now() + 60_000 });
    }
  };
  await Promise.all(Array.from({ length: 4 }, worker));
  return out;
}

/**
 * Creates every stream, consumer and KV bucket, or updates it to the current
 * configuration. Safe to run any number of times and concurrently from
 * several processes. Throws if JetStream is unavailable or a change is one
 * JetStream refuses (e.g. changing a stream's retention).
 */
export async function ensureTopology(n: Nats, cfg: Config): Promise<{ streams: string[]; consumers: string[]; buckets: string[] }> {
  // Streams, then consumers, then buckets, a few at a time: on a nats-server cluster every R3 create waits for its own leader
  // election (about a second), so one after the other took half a minute; all at once, the JetStream API timed out.
  const streams = await withRetries(
    streamConfigs(cfg), async (sc) => {
      try {
        await n.jsm.streams.info(sc.name);
        await n.jsm.streams.update(sc.name, sc);
      } catch (err) {
        if (!isNotFound(err)) throw err;
        await n.jsm.streams.add(sc).catch(async (e) => {
          // Another process created it in between: fine. nats-server 2.9 may then answer "subjects overlap" rather than "already in use", so look.
          if (/already in use/i.test(String(e))) return;
          if (!(await n.jsm.streams.info(sc.name).then(() => true, () => false))) throw e;
        });
      }
      return sc.name;
    },
  );
  const consumers = await withRetries(
    consumerConfigs(cfg), async ({ stream, config }) => {
      try {
        await n.jsm.consumers.info(stream, config.durable_name!);
        await n.jsm.consumers.update(stream, config.durable_name!, { ack_wait: config.ack_wait, max_ack_pending: config.max_ack_pending });
      } catch (err) {
        if (!isNotFound(err)) throw err;
        await n.jsm.consumers.add(stream, config);
      }
      return `${stream}/${config.durable_name}`;
    },
  );
  const storage = cfg.streams.storage === "memory" ? StorageType.Memory : StorageType.File;
  const buckets = await withRetries(
    Object.values(BUCKET), async (name) => {
      const ttl = name === BUCKET.idempotency ? 24 * 3600_000 : name === BUCKET.procs ? PROCESS_TTL_MS : 0;
      try {
        await n.kvm.create(name, { history: 1, replicas: cfg.streams.replicas, storage, ttl });
      } catch (err) {
        // Another process created it in between ("already in use", or "subjects overlap" from nats-server 2.9): fine when it now exists.
        if (!/already in use|exists/i.test(String(err)) && !(await n.jsm.streams.info(KV_STORE.stream(name)).then(() => true, () => false))) throw err;
      }
      return name;
    },
  );
  return { streams, consumers, buckets };
}

/**
 * Resolves once every stream, durable consumer and KV bucket of the topology
 * exists, looking with read-only JetStream calls (what a role's NATS user
 * may do). Logs what is missing with a growing delay (up to 5 s) and keeps
 * waiting: `nfx init` (or `nfx up`) creates them. Never creates anything.
 */
export async function awaitTopology(n: Nats, cfg: Config, log: Logger): Promise<void> {
  const wanted = [
    ...streamConfigs(cfg).map((s) => ({ what: `stream ${s.name}`, look: () => n.jsm.streams.info(s.name) })),
    ...consumerConfigs(cfg).map((c) => ({ what: `consumer ${c.stream}/${c.config.durable_name}`, look: () => n.jsm.consumers.info(c.stream, c.config.durable_name!) })),
    ...Object.values(BUCKET).map((b) => ({ what: `kv bucket ${b}`, look: () => n.jsm.streams.info(KV_STORE.stream(b)) })),
  ];
  for (let attempt = 0; ; attempt++) {
    const missing: string[] = [];
    for (const w of wanted) {
      try {
        await w.look();
      } catch (err) {
        if (!isNotFound(err)) throw err;
        missing.push(w.what);
      }
    }
    if (missing.length === 0) return;
    const waitMs = backoffMs(attempt, { baseMs: 250, maxMs: 5000 });
    log.warn({ missing: missing.slice(0, 5), count: missing.length, retryInMs: waitMs }, "topology incomplete: run `nfx init` (waiting)");
    await new Promise((r) => setTimeout(r, waitMs));
  }
}

/** The configurations of the durable consumers of `stream` named `names` (every one of `stream` without it), as {@link consumerConfigs} makes them. */
export function consumerConfigsOf(cfg: Config, stream: string, names?: readonly string[]): Partial<ConsumerConfig>[] {
  return consumerConfigs(cfg).filter((c) => c.stream === stream && (!names || names.includes(c.config.durable_name!))).map((c) => c.config);
}
