// The stream reconciler and the tracker's fences on a real nats-server and Redis: a send or receipt batch its stream lost is published again under a new id, one taken or still stored is not; the tracker folds a copy published again once, and folds receipts stored after the stream's sequence went back.
import { DeliverPolicy } from "@nats-io/jetstream";
import t, { type Test } from "tap";

import { startTracker } from "../../actors/tracker.js";
import { readCounters, readTotals } from "../../lib/campaign/counters.js";
import { decode, encode } from "../../lib/core/codec.js";
import type { Config } from "../../lib/core/config.js";
import { deliveredField, deliveredKey, sendBatchDoneKey } from "../../lib/core/keys.js";
import { createLogger, type Logger } from "../../lib/core/log.js";
import { BUCKET, CONSUMER, receiptSubject, sendSubject, STREAM } from "../../lib/core/subjects.js";
import type { SendBatch } from "../../lib/core/types.js";
import { JsPublisher, type PubAck } from "../../lib/flow/js-publisher.js";
import { jsPublisher, StreamReconciler } from "../../lib/flow/stream-reconciler.js";
import { ReceiptCollector } from "../../lib/gateway/receipts.js";
import { messagesRepublished, messagesUnchecked } from "../../lib/infra/metrics.js";
import { connectNats, type Nats } from "../../lib/infra/nats.js";
import type { Redis } from "../../lib/infra/redis.js";
import { ensureTopology } from "../../lib/infra/topology.js";
import { takenKeys } from "../../lib/shard/taken-keys.js";
import { clientsFor } from "../helpers/cluster.js";
import { startServers } from "../helpers/servers.js";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const batchOf = (name: string): SendBatch => ({
  type: "send_batch", channel: "apns", shard: 3, notifications: {},
  sends: [0, 1, 2].map((i) => ({ nid: "n1", user: `${name}-${i}`, device: "d", token: `tok-${name}-${i}` })),
});
/** Sets send `i`'s delivery key (a field of its notification's hash) to `v`, as a gateway does. */
const setKey = (redis: Redis, b: SendBatch, i: number, v: string): Promise<number> => redis.hset(deliveredKey(b.shard, b.sends[i].nid, "apns"), deliveredField(b.sends[i].user, b.sends[i].device), v);
const total = async (c: typeof messagesRepublished): Promise<number> => (await c.get()).values.reduce((a, v) => a + v.value, 0);

/** A nats-server and Redis with nfx's streams, an admin client of each, a silent logger. */
async function setUp(t: Test): Promise<{ cfg: Config; admin: Nats; redis: Redis; log: Logger }> {
  const servers = await startServers(t);
  const cfg = servers.config();
  const { nats: admin, redis } = await clientsFor(t, cfg);
  await ensureTopology(admin, cfg);
  return { cfg, admin, redis, log: createLogger({ level: "silent", redact: true }) };
}

/** The messages stored in `stream`, in stream order: each one's sequence and message id. */
async function stored(admin: Nats, stream: string): Promise<{ seq: number; id: string }[]> {
  const out: { seq: number; id: string }[] = [];
  const si = await admin.jsm.streams.info(stream);
  for (let s = si.state.first_seq; si.state.messages > 0 && s <= si.state.last_seq; s++) {
    const m = await admin.jsm.streams.getMessage(stream, { seq: s }).catch(() => null);
    if (m) out.push({ seq: s, id: m.header.get("Nats-Msg-Id") });
  }
  return out;
}

/** The message ids stored in `stream`, in stream order. */
const idsIn = async (admin: Nats, stream: string): Promise<string[]> => (await stored(admin, stream)).map((x) => x.id);

/** The sequence of the message stored in `stream` under message id `id` (0: none). */
const seqOf = async (admin: Nats, stream: string, id: string): Promise<number> => (await stored(admin, stream)).find((x) => x.id === id)?.seq ?? 0;

t.test("every send batch is checked: one its stream lost is published again, even after a gateway claimed it; one a gateway finished, or still queued, is not", async (t) => {
  const { cfg, admin, redis, log } = await setUp(t);
  // As the shard role: its NATS user may read its send streams' messages (lib/infra/nats-auth.ts).
  const nats = await connectNats(cfg, log, "test-shard", "shard");
  t.teardown(() => nats.nc.close());
  const pub = new JsPublisher(nats.nc);
  t.teardown(() => pub.close());
  const stream = STREAM.send("apns");
  const subject = sendSubject("apns", "normal");
  /** Publishes batch `name`; `observe` hands its ack to a reconciler (at once with {@link publishVia}). */
  const publishBatch = async (name: string): Promise<{ b: SendBatch; seq: number; observe: (rec: StreamReconciler) => void }> => {
    const b = batchOf(name);
    const data = encode(b);
    const a = await pub.publish(subject, data, `snd:${name}`);
    return { b, seq: a.seq, observe: (rec) => rec.observe(subject, `snd:${name}`, data, a, takenKeys(`snd:${name}`)) };
  };
  const publishVia = (rec: StreamReconciler) => async (name: string): Promise<{ b: SendBatch; seq: number }> => {
    const p = await publishBatch(name);
    p.observe(rec);
    return p;
  };
  const ids = async (): Promise<string[]> => (await idsIn(admin, stream)).sort();
  const reconciled0 = await total(messagesRepublished);

  const rec = new StreamReconciler({ jsm: nats.jsm, redis, pub, log, streams: [stream], tickMs: 100, verifyAfterMs: 300 });
  t.teardown(() => rec.stop());
  const a = await publishBatch("a");
  const b = await publishBatch("b");
  const c = await publishBatch("c");
  const d = await publishBatch("d");
  // a: a gateway finished it (its done key) and acked it; b: lost by the stream, untouched; c: still queued; d: a
  // gateway claimed its keys and recorded a send, then the stream lost it before the gateway finished it (its receipts
  // not yet published): it must come again. All of it set before the reconciler hears of the acks, so its first check
  // (verifyAfterMs later) sees it, however slowly the machine runs.
  await redis.set(sendBatchDoneKey("snd:a"), "1");
  await setKey(redis, d.b, 0, "~claimed");
  await setKey(redis, d.b, 2, '{"outcome":"sent"}');
  for (const x of [a, b, d]) await admin.jsm.streams.deleteMessage(stream, x.seq);
  for (const x of [a, b, c, d]) x.observe(rec);

  const want = ["snd:b~r1", "snd:c", "snd:d~r1"];
  for (let i = 0; i < 50 && JSON.stringify(await ids()) !== JSON.stringify(want); i++) await sleep(100);
  t.same(await ids(), want, "b and d (claimed, not finished) published again under a new id; a (finished) not; c (queued) not twice");
  t.equal((await total(messagesRepublished)) - reconciled0, 2, "two counted in nfx_messages_republished_total");
  const again = await admin.jsm.streams.getMessage(stream, { last_by_subj: subject });
  t.same(decode<SendBatch>(again!.data).sends.map((s) => s.user), ["d-0", "d-1", "d-2"], "the same batch");
  t.equal(rec.pending, 3, "c, b~r1 and d~r1 are held until a gateway finishes them");

  // Lost again: published again once more, under the next id.
  await admin.jsm.streams.deleteMessage(stream, await seqOf(admin, stream, "snd:b~r1"));
  for (let i = 0; i < 50 && !(await ids()).includes("snd:b~r2"); i++) await sleep(100);
  t.same(await ids(), ["snd:b~r2", "snd:c", "snd:d~r1"], "lost again: published as ~r2");

  // Gateways finish them (under each batch's first id, whatever copy they took): let go at their next check (ten times verifyAfterMs after the last).
  for (const n of ["b", "c", "d"]) await redis.set(sendBatchDoneKey(`snd:${n}`), "1");
  for (let i = 0; i < 60 && rec.pending > 0; i++) await sleep(100);
  t.equal(rec.pending, 0, "nothing held once gateways finished everything");
  t.same(await ids(), ["snd:b~r2", "snd:c", "snd:d~r1"], "nothing published twice");

  // The memory bound: past it the oldest batches go unchecked, counted.
  const small = new StreamReconciler({ jsm: nats.jsm, redis, pub, log, streams: [stream], tickMs: 100, verifyAfterMs: 60_000, maxBytes: encode(batchOf("x")).length + 1 });
  t.teardown(() => small.stop());
  const unchecked0 = await total(messagesUnchecked);
  for (const n of ["x", "y", "z"]) await publishVia(small)(n);
  t.equal(small.pending, 1, "one batch fits");
  t.equal((await total(messagesUnchecked)) - unchecked0, 2, "two counted in nfx_messages_unchecked_total");
});

t.test("receipt batches: one NFX_RECEIPTS lost is published again and counted once, folded first or not, however late it is lost; receipts stored after the stream's sequence went back are counted", async (t) => {
  const set = await setUp(t);
  const { admin, redis, log } = set;
  // As on replicated streams: the tracker marks each batch folded, and the reconciler keeps a batch until it is.
  const cfg: Config = { ...set.cfg, gateways: { ...set.cfg.gateways, reconcileReceipts: "on" } };
  // As a gateway and as the tracker, each with its role's NATS permissions (lib/infra/nats-auth.ts).
  const gw = await connectNats(cfg, log, "test-gateway", "gateway-apns");
  const tr = await connectNats(cfg, log, "test-tracker", "tracker");
  t.teardown(() => Promise.all([gw.nc.close(), tr.nc.close()]));
  const pub = jsPublisher(gw);
  const rec = new StreamReconciler({ jsm: gw.jsm, redis, pub, log, streams: [STREAM.receipts], tickMs: 100, verifyAfterMs: 300 });
  t.teardown(() => rec.stop());
  const kv = await admin.kvm.open(BUCKET.counters);
  let tracker = await startTracker({ cfg, nats: tr, redis, log });
  t.teardown(() => tracker.stop());

  /** Publishes a gateway's receipt batch of `users` sent for `nid`, as batch `batchId`; checked by `rec` when given. */
  const receipts = async (nid: string, batchId: string, users: string[], r?: StreamReconciler): Promise<PubAck> => {
    const c = new ReceiptCollector();
    for (const u of users) c.add(nid, { user: u, outcome: "sent", channel: "apns", device: "d", at: Date.now() });
    return ((await c.publish(gw, batchId, r)) as PubAck[])[0];
  };
  const sent = async (nid: string): Promise<number> => (await readCounters(kv, nid)).sent;
  const until = async (what: () => Promise<boolean>, ms = 20_000): Promise<boolean> => {
    for (const end = Date.now() + ms; Date.now() < end; await sleep(100)) if (await what()) return true;
    return what();
  };
  const stored = (): Promise<string[]> => idsIn(admin, STREAM.receipts);
  const republished0 = await total(messagesRepublished);

  // b1 is folded, then lost by the stream; its publisher publishes it again: not counted twice.
  const b1 = await receipts("n1", "b1", ["a0", "a1", "a2"]);
  await receipts("n1", "b2", ["b0", "b1"], rec);
  t.ok(await until(async () => (await sent("n1")) === 5), "the tracker counted b1 and b2");
  const b1data = (await admin.jsm.streams.getMessage(STREAM.receipts, { seq: b1.seq }))!.data;
  await admin.jsm.streams.deleteMessage(STREAM.receipts, b1.seq);
  rec.observe(receiptSubject("n1"), "dlv:b1:n1", b1data, b1);
  t.ok(await until(async () => (await stored()).includes("dlv:b1:n1~r1")), "b1, lost, published again under a new id");
  await receipts("n1", "b3", ["c0"]);
  t.ok(await until(async () => (await sent("n1")) >= 6), "b3 after it counted");
  t.equal(await sent("n1"), 6, "b1's copy not counted again: a0-a2, b0-b1, c0");

  // b4 is lost before the tracker saw it (the tracker is down): its copy is counted.
  await tracker.stop();
  const b4 = await receipts("n2", "b4", ["d0", "d1"], rec);
  await admin.jsm.streams.deleteMessage(STREAM.receipts, b4.seq);
  t.ok(await until(async () => (await stored()).includes("dlv:b4:n2~r1")), "b4, lost, published again by the reconciler the collector handed it to");
  tracker = await startTracker({ cfg, nats: tr, redis, log });
  t.ok(await until(async () => (await sent("n2")) === 2), "b4's copy counted: d0, d1");
  t.equal((await total(messagesRepublished)) - republished0, 2, "two republished, counted");
  t.ok(await until(async () => rec.pending === 0, 15_000), "b2 and b4's copy let go once the tracker marked them folded, b1's copy after two checks found it stored");
  t.equal((await stored()).filter((id) => id.includes("~r")).length, 2, "nothing else published again");

  // b8 is lost long after it was published (two checks found it stored), while the tracker is down: published again, counted.
  await tracker.stop();
  const b8 = await receipts("n4", "b8", ["k0", "k1"], rec);
  await sleep(300 + 10 * 300 + 10 * 300 + 500);
  t.same(await stored().then((ids) => ids.filter((id) => id.startsWith("dlv:b8"))), ["dlv:b8:n4"], "b8 still stored after two checks, not published again");
  await admin.jsm.streams.deleteMessage(STREAM.receipts, b8.seq);
  t.ok(await until(async () => (await stored()).includes("dlv:b8:n4~r1")), "b8, lost after those checks, published again: kept until the tracker folds it");
  tracker = await startTracker({ cfg, nats: tr, redis, log });
  t.ok(await until(async () => (await sent("n4")) === 2), "b8's copy counted: k0, k1");
  t.ok(await until(async () => rec.pending === 0, 15_000), "let go once folded");

  // The stream's sequence goes back (as nats-server does after a leader loss; here: the stream made anew): receipts stored after it are counted.
  await tracker.stop();
  await admin.jsm.streams.delete(STREAM.receipts);
  await ensureTopology(admin, cfg);
  tracker = await startTracker({ cfg, nats: tr, redis, log });
  const b5 = await receipts("n1", "b5", ["e0", "e1"]);
  t.ok(b5.seq < 6, `the new receipt's sequence (${b5.seq}) is below those counted before`);
  t.ok(await until(async () => (await sent("n1")) === 8), "b5 counted although its sequence went back");
  t.equal((await readTotals(kv)).channels.push.sent, 12, "the push totals too: 8 + 2 + 2");

  // Out of order: b7 reaches the tracker before b6 (b6's first delivery never arrived), as after a consumer's leader change: both counted, once.
  const ci = await admin.jsm.consumers.info(STREAM.receipts, CONSUMER.tracker);
  const { deliver_policy: _p, opt_start_seq: _s, ...config } = ci.config;
  const startAt = async (seq: number): Promise<void> => {
    await admin.jsm.consumers.delete(STREAM.receipts, CONSUMER.tracker);
    await admin.jsm.consumers.add(STREAM.receipts, { ...config, deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: seq });
  };
  await admin.jsm.consumers.delete(STREAM.receipts, CONSUMER.tracker);
  const b6 = await receipts("n3", "b6", ["g0", "g1"]);
  const b7 = await receipts("n3", "b7", ["h0", "h1", "h2"]);
  await admin.jsm.consumers.add(STREAM.receipts, { ...config, deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: b7.seq });
  t.ok(await until(async () => (await sent("n3")) === 3, 30_000), "b7 counted first");
  await startAt(b6.seq);
  t.ok(await until(async () => (await sent("n3")) === 5, 30_000), "b6, delivered after it, counted too");
  await sleep(500);
  t.equal(await sent("n3"), 5, "b7, delivered again, not counted twice");
});
