// Tracker actor: folds receipts into per-notification counters in KV, exactly once across restarts.
import { DeliverPolicy, type JsMsg } from "@nats-io/jetstream";
import type { Config } from "../lib/config.js";
import { decode, encodeJson } from "../lib/codec.js";
import { emptyCounters, fold, readCounters, type Counters } from "../lib/counters.js";
import type { Logger } from "../lib/log.js";
import type { Nats } from "../lib/nats.js";
import { BUCKET, CONSUMER, STREAM } from "../lib/subjects.js";
import type { ReceiptBatch } from "../lib/types.js";

export interface TrackerDeps {
  cfg: Config;
  nats: Nats;
  log: Logger;
  now?: () => number;
}

/** How often counters are written, and after how many receipt messages at most. */
const FLUSH_MS = 200;
const FLUSH_MSGS = 2000;

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
  const { deliver_policy: _p, opt_start_seq: _s, opt_start_time: _t, ...config } = ci.config;
  await n.jsm.consumers.delete(STREAM.receipts, CONSUMER.tracker);
  await n.jsm.consumers.add(STREAM.receipts, { ...config, deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: floor + 1 });
  log.info({ from: floor + 1, unacked: ci.num_ack_pending }, "tracker consumer rewound to its ack floor");
}

/**
 * Starts the tracker: one ordered pass over NFX_RECEIPTS. Receipts are folded
 * in memory and written to nfx-counters at most every 200 ms; messages are
 * acked only after the write. Each counter record keeps the stream sequence
 * of the last receipt folded into it, so a receipt redelivered after a crash
 * (written but not acked) is recognised and skipped; at start the consumer
 * is rewound to its ack floor so that check sees receipts in order. Run one
 * tracker per cluster (the counters and the consumer are its alone).
 */
export async function startTracker(d: TrackerDeps): Promise<{ stop(): Promise<void> }> {
  const log = d.log.child({ actor: "tracker" });
  const now = d.now ?? Date.now;
  const kv = await d.nats.kvm.open(BUCKET.counters);
  const cache = new Map<string, Counters>();
  const dirty = new Set<string>();
  let unacked: JsMsg[] = [];
  let lastFlush = now();

  const flush = async (): Promise<void> => {
    lastFlush = now();
    if (unacked.length === 0) return;
    const ids = [...dirty];
    dirty.clear();
    await Promise.all(ids.map((id) => kv.put(id, encodeJson({ ...cache.get(id)!, updatedAt: now() }))));
    for (const m of unacked) m.ack();
    unacked = [];
    if (cache.size > 50_000) for (const k of cache.keys()) if (!dirty.has(k) && cache.delete(k) && cache.size < 25_000) break;
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
    let c = cache.get(b.nid);
    if (!c) {
      c = await readCounters(kv, b.nid).catch(() => emptyCounters());
      cache.set(b.nid, c);
    }
    if (m.seq > c.seq) {
      fold(c, b);
      c.seq = m.seq;
      dirty.add(b.nid);
    }
    unacked.push(m);
    if (unacked.length >= FLUSH_MSGS || now() - lastFlush >= FLUSH_MS) await flush();
  };

  // One chain: messages and timed flushes never interleave.
  let chain: Promise<void> = Promise.resolve();
  const enqueue = (f: () => Promise<void>): void => {
    chain = chain.then(f).catch((err) => log.warn({ err }, "tracker step failed; receipts will be redelivered"));
  };
  await rewindToAckFloor(d.nats, log);
  const c = await d.nats.js.consumers.get(STREAM.receipts, CONSUMER.tracker);
  const it = await c.consume({ max_messages: 4000 });
  const loop = (async () => {
    for await (const m of it) enqueue(() => apply(m));
  })();
  const timer = setInterval(() => enqueue(flush), FLUSH_MS);
  log.info("tracker ready");
  return {
    async stop() {
      clearInterval(timer);
      await it.close();
      await loop;
      enqueue(flush);
      await chain;
    },
  };
}
