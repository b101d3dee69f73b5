// Tracker actor: folds receipts into per-notification counters, per-channel totals and per-user logs, exactly once across restarts.
import { type ConsumerConfig, type ConsumerInfo, DeliverPolicy, type JsMsg } from "@nats-io/jetstream";

import { advance, type ChannelTotals, type Counters, emptyCounters, type Fence, fold, FoldedIds, foldTotal, notFolded, readCounters, readTotals } from "../lib/campaign/counters.js";
import { decode, encodeJson } from "../lib/core/codec.js";
import type { Config } from "../lib/core/config.js";
import { receiptFoldedKey } from "../lib/core/keys.js";
import type { Logger } from "../lib/core/log.js";
import { BUCKET, CONSUMER, COUNTERS_KEY, MSGID, scheduledSubject, STREAM } from "../lib/core/subjects.js";
import type { Notification, ReceiptBatch } from "../lib/core/types.js";
import { readDurable } from "../lib/flow/pull.js";
import { consumerFault } from "../lib/flow/stranded.js";
import { reconcileWanted } from "../lib/flow/stream-reconciler.js";
import { consumerRepairs, stageItems } from "../lib/infra/metrics.js";
import type { Nats } from "../lib/infra/nats.js";
import { pipelineOf, type Redis } from "../lib/infra/redis.js";
import { userLogFor } from "../lib/tracking/user-log.js";

export interface TrackerDeps {
  cfg: Config;
  nats: Nats;
  redis: Redis;
  log: Logger;
  now?: () => number;
}

/** How often counters are written, and after how many receipt messages at most. */
const FLUSH_MS = 200;
const FLUSH_MSGS = 2000;

/** How long a receipt batch's folded mark lives (lib/core/keys.ts `receiptFoldedKey`): well past the reconcilers' 50 s between checks. */
const FOLDED_MARK_SEC = 600;

/** Deletes the tracker's consumer `ci` and creates it again with its configuration, delivering from `start`. */
async function recreateFrom(n: Nats, ci: ConsumerInfo, start: Partial<ConsumerConfig>): Promise<void> {
  const { deliver_policy: _p, opt_start_seq: _s, opt_start_time: _t, ...config } = ci.config;
  await n.jsm.consumers.delete(STREAM.receipts, CONSUMER.tracker).catch(() => false);
  await n.jsm.consumers.add(STREAM.receipts, { ...config, ...start });
}

/**
 * Recreates the tracker's consumer to start right after its ack floor, so
 * receipts a dead tracker had received but not acked come back first and in
 * order, before anything newer. Without this they would be redelivered only
 * after the ack wait, behind newer receipts, and the "already folded" check
 * (stream sequence ≤ the record's) would wrongly skip them.
 */
async function rewindToAckFloor(n: Nats, log: Logger): Promise<void> {
  const ci = await n.jsm.consumers.info(STREAM.receipts, CONSUMER.tracker);
  const floor = ci.ack_floor.stream_seq;
  if (ci.num_ack_pending === 0) return;
  await recreateFrom(n, ci, { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: floor + 1 });
  log.info({ from: floor + 1, unacked: ci.num_ack_pending }, "tracker consumer rewound to its ack floor");
}

/**
 * Every `everyMs`, checks that the tracker's consumer has not
 * delivered past NFX_RECEIPTS' last sequence. nats-server can leave it there
 * when the stream's sequence goes back after a leader loss; it would then skip
 * every receipt stored until the stream passes that point. Found so twice in a
 * row, it is recreated to deliver from the time the last receipt folded was
 * stored (`foldedAt`, µs): what came before is skipped by the fences
 * ({@link notFolded}). Logged and counted (`nfx_consumer_repairs_total`).
 */
function watchAhead(n: Nats, log: Logger, foldedAt: () => number, everyMs: number): { stop(): void } {
  let suspect = false;
  const check = async (): Promise<void> => {
    const [ci, si] = await Promise.all([n.jsm.consumers.info(STREAM.receipts, CONSUMER.tracker), n.jsm.streams.info(STREAM.receipts)]);
    const ahead = consumerFault(ci, si.state.last_seq, 0) === "ahead" && foldedAt() > 0;
    if (!ahead || !suspect) {
      suspect = ahead;
      return;
    }
    suspect = false;
    const from = new Date(Math.floor(foldedAt() / 1000)).toISOString();
    log.warn({ delivered: ci.delivered.stream_seq, streamLast: si.state.last_seq, from }, "tracker consumer past its stream's messages (nats-server); recreating it from the last receipt folded");
    await recreateFrom(n, ci, { deliver_policy: DeliverPolicy.StartTime, opt_start_time: from });
    consumerRepairs.inc({ stream: STREAM.receipts, consumer: CONSUMER.tracker, fault: "ahead" });
  };
  let running = false;
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    check().catch((err) => log.warn({ err }, "tracker consumer check failed")).finally(() => (running = false));
  }, everyMs);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}

/**
 * Starts the tracker: one ordered pass over NFX_RECEIPTS, plus a read of
 * accepted requests on NFX_INTAKE for their recipient counts. Receipts are
 * folded in memory into per-notification counters and per-channel totals,
 * written to nfx-counters at most every 200 ms, and appended to the users'
 * delivery logs in Redis; messages are acked only after the writes. Each
 * record keeps the stream sequence and time of the last receipt folded into
 * it ({@link notFolded}), so a receipt redelivered after a crash (written but
 * not acked) is recognised and skipped (the user log is idempotent by itself),
 * while one stored after a stream's sequence went back (nats-server) is still
 * folded; at start the consumer is rewound to its ack floor so that check sees
 * receipts in order, and later recreated if nats-server leaves it past the
 * stream ({@link watchAhead}). The ids of the batches folded in the last 10–20 minutes
 * are kept ({@link FoldedIds}): a batch a stream lost and its publisher
 * published again is folded once. On replicated streams, once a batch's
 * counters are stored its original id is marked folded in Redis
 * (`receiptFoldedKey`, 10 minutes): its publisher's reconciler then lets it
 * go, and until then keeps checking that NFX_RECEIPTS still holds it. Run
 * one tracker per cluster (the counters and the consumers are its alone).
 */
export async function startTracker(d: TrackerDeps): Promise<{ stop(): Promise<void> }> {
  const log = d.log.child({ actor: "tracker" });
  const now = d.now ?? Date.now;
  const kv = await d.nats.kvm.open(BUCKET.counters);
  const userLog = userLogFor(d.cfg, d.redis);
  const cache = new Map<string, Counters>();
  /** Receipt batches folded lately, by original id: a batch published again after its stream lost it is not folded twice. */
  const folded = new FoldedIds();
  const dirty = new Set<string>();
  const totals: ChannelTotals = await readTotals(kv);
  let totalsDirty = false;
  /** Receipt entries folded since the last flush, for the users' delivery logs: kept until a flush wrote them. */
  let logPending: { nid: string; entries: ReceiptBatch["entries"] }[] = [];
  let unacked: JsMsg[] = [];
  /** Original ids of the receipt batches among `unacked`, marked folded in Redis once their counters are stored (for the publishers' reconcilers). */
  let foldedPending: string[] = [];
  const markFolded = reconcileWanted(d.cfg.gateways.reconcileReceipts, d.cfg.streams.replicas) || reconcileWanted(d.cfg.shard.reconcileSends, d.cfg.streams.replicas);
  let lastFlush = now();

  /**
   * Writes the users' log lines, then every dirty counter record, then acks what they came from. A write that fails
   * leaves its lines pending and its records dirty, so the next flush writes them again before those messages are
   * acked (the fold already happened in memory: a redelivery of them is recognised by its sequence and skipped).
   */
  const flush = async (): Promise<void> => {
    lastFlush = now();
    if (unacked.length === 0) return;
    if (userLog && logPending.length > 0) {
      const p = pipelineOf(d.redis);
      for (const x of logPending) userLog.append(x.nid, x.entries, p);
      const res = await p.exec();
      const bad = res?.find(([err]) => err);
      if (bad?.[0]) throw bad[0];
      logPending = [];
    }
    const ids = [...dirty];
    const withTotals = totalsDirty;
    dirty.clear();
    totalsDirty = false;
    const puts = ids.map((id) => kv.put(COUNTERS_KEY.notification(id), encodeJson({ ...cache.get(id)!, updatedAt: now() })));
    if (withTotals) puts.push(kv.put(COUNTERS_KEY.totals, encodeJson({ ...totals, updatedAt: now() })));
    try {
      await Promise.all(puts);
    } catch (err) {
      for (const id of ids) dirty.add(id);
      totalsDirty ||= withTotals;
      throw err;
    }
    if (foldedPending.length > 0) {
      // Best effort: a batch whose mark is missing is looked for in its stream instead, and kept until marked or let go.
      const p = pipelineOf(d.redis);
      for (const id of foldedPending) p.set(receiptFoldedKey(id), "1", "EX", FOLDED_MARK_SEC);
      foldedPending = [];
      const res = await p.exec().catch((err: Error) => [[err, null]] as [Error | null, unknown][]);
      const bad = res?.find(([err]) => err);
      if (bad?.[0]) log.warn({ err: bad[0] }, "marking receipt batches folded failed (their publishers look for them in the stream instead)");
    }
    for (const m of unacked) m.ack();
    unacked = [];
    if (cache.size > 50_000) for (const k of cache.keys()) if (!dirty.has(k) && cache.delete(k) && cache.size < 25_000) break;
  };

  const countersOf = async (nid: string): Promise<Counters> => {
    let c = cache.get(nid);
    if (!c) {
      c = await readCounters(kv, nid).catch(() => emptyCounters());
      cache.set(nid, c);
    }
    return c;
  };

  const apply = async (m: JsMsg): Promise<void> => {
    let b: ReceiptBatch;
    try {
      b = decode<ReceiptBatch>(m.data);
    } catch (err) {
      log.error({ err, seq: m.seq }, "undecodable receipt terminated");
      m.term();
      return;
    }
    const c = await countersOf(b.nid);
    // When the stream stored it (µs), and under which id: the fences below, and the ids of batches folded lately.
    const at = Math.floor(Number(m.info.timestampNanos) / 1000);
    const msgId = m.headers?.get("Nats-Msg-Id") ?? "";
    const again = msgId !== "" && folded.has(msgId);
    // A batch stored since this tracker began, lately: the memory of folded ids decides (a receipt redelivered out of
    // order is counted); otherwise the fences do.
    const known = msgId !== "" && folded.covers(at / 1000);
    const isNew = (f: Fence): boolean => !again && (known || notFolded(f, m.seq, at));
    if (isNew(c)) {
      fold(c, b);
      advance(c, m.seq, at);
      dirty.add(b.nid);
      // Endpoint deliveries (channel webhook) are not a user's: their log is the endpoint's (nfx endpoints deliveries).
      if (userLog) logPending.push({ nid: b.nid, entries: b.entries.filter((e) => e.channel !== "webhook") });
    } else if (again) {
      // Folded already under another copy: a batch a stream lost, published again (lib/flow/stream-reconciler.ts).
      log.info({ nid: b.nid, msgId, seq: m.seq }, "receipt batch folded already (a copy published again): skipped");
    }
    if (isNew(totals)) {
      for (const e of b.entries) if (!e.echo) foldTotal(totals, e);
      advance(totals, m.seq, at);
      totalsDirty = true;
    }
    if (msgId !== "") {
      folded.add(msgId);
      if (markFolded) foldedPending.push(MSGID.original(msgId));
    }
    stageItems.inc({ stage: "tracker" }, b.entries.length || 1);
    unacked.push(m);
    if (unacked.length >= FLUSH_MSGS || now() - lastFlush >= FLUSH_MS) await flush();
  };

  /** An accepted request: its explicit recipients are its "accepted" count (set, not added: a redelivery changes nothing). */
  const accept = async (m: JsMsg): Promise<void> => {
    if (m.subject === scheduledSubject(m.subject.split(".").pop()!)) {
      // Held by the scheduler; counted when it comes back on its lane.
      m.ack();
      return;
    }
    let n: Notification;
    try {
      n = decode<Notification>(m.data);
    } catch {
      m.ack();
      return;
    }
    if (n.recipients.length > 0) {
      const c = await countersOf(n.id);
      if (c.accepted !== n.recipients.length) {
        c.accepted = n.recipients.length;
        dirty.add(n.id);
      }
    }
    unacked.push(m);
    if (unacked.length >= FLUSH_MSGS || now() - lastFlush >= FLUSH_MS) await flush();
  };

  // One chain: messages and timed flushes never interleave.
  let chain: Promise<void> = Promise.resolve();
  const enqueue = (f: () => Promise<void>): void => {
    chain = chain.then(f).catch((err) => log.warn({ err }, "tracker step failed; its writes are tried again at the next flush"));
  };
  await rewindToAckFloor(d.nats, log);
  // Both consumers are read for as long as the process runs: a reader that ends (its consumer lost in a leader election) is opened again.
  const readers = [
    readDurable({ js: d.nats.js, stream: STREAM.receipts, consumer: CONSUMER.tracker, maxMessages: 4000, log, onMsg: (m) => enqueue(() => apply(m)) }),
    readDurable({ js: d.nats.js, stream: STREAM.intake, consumer: CONSUMER.trackerIntake, maxMessages: 1000, log, onMsg: (m) => enqueue(() => accept(m)) }),
  ];
  const timer = setInterval(() => enqueue(flush), FLUSH_MS);
  const ahead = watchAhead(d.nats, log, () => totals.seqAt, 15_000);
  log.info("tracker ready");
  return {
    async stop() {
      clearInterval(timer);
      ahead.stop();
      await Promise.all(readers.map((r) => r.stop()));
      enqueue(flush);
      await chain;
    },
  };
}
