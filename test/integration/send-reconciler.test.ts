// The send reconciler on a real nats-server and Redis: a batch its stream lost is published again under a new id; a batch a gateway took, or still in its stream, is not.
import t from "tap";

import { decode, encode } from "../../lib/core/codec.js";
import { deliveryKey } from "../../lib/core/ids.js";
import { deliveredKey } from "../../lib/core/keys.js";
import { createLogger } from "../../lib/core/log.js";
import { sendSubject, STREAM } from "../../lib/core/subjects.js";
import type { SendBatch } from "../../lib/core/types.js";
import { JsPublisher } from "../../lib/flow/js-publisher.js";
import { sendsReconciled, sendsUnchecked } from "../../lib/infra/metrics.js";
import { connectNats } from "../../lib/infra/nats.js";
import { ensureTopology } from "../../lib/infra/topology.js";
import { SendReconciler } from "../../lib/shard/send-reconciler.js";
import { clientsFor } from "../helpers/cluster.js";
import { startServers } from "../helpers/servers.js";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const batchOf = (name: string): SendBatch => ({
  type: "send_batch", channel: "apns", shard: 3, notifications: {},
  sends: [0, 1, 2].map((i) => ({ nid: "n1", user: `${name}-${i}`, device: "d", token: `tok-${name}-${i}` })),
});
const keyOf = (b: SendBatch, i: number): string => deliveredKey(b.shard, deliveryKey(b.sends[i].nid, b.sends[i].user, "apns", b.sends[i].device));
const total = async (c: typeof sendsReconciled): Promise<number> => (await c.get()).values.reduce((a, v) => a + v.value, 0);

t.test("every send batch is checked: one its stream lost is published again; one a gateway took, or still queued, is not", async (t) => {
  const servers = await startServers(t);
  const cfg = servers.config();
  const { nats: admin, redis } = await clientsFor(t, cfg);
  await ensureTopology(admin, cfg);
  const log = createLogger({ level: "silent", redact: true });
  // As the shard role: its NATS user may read its send streams' messages (lib/infra/nats-auth.ts).
  const nats = await connectNats(cfg, log, "test-shard", "shard");
  t.teardown(() => nats.nc.close());
  const pub = new JsPublisher(nats.nc);
  t.teardown(() => pub.close());
  const stream = STREAM.send("apns");
  const subject = sendSubject("apns", "normal");
  /** Publishes batch `name`; `observe` hands its ack to a reconciler (at once with {@link publishVia}). */
  const publishBatch = async (name: string): Promise<{ b: SendBatch; seq: number; observe: (rec: SendReconciler) => void }> => {
    const b = batchOf(name);
    const data = encode(b);
    const a = await pub.publish(subject, data, `snd:${name}`);
    return { b, seq: a.seq, observe: (rec) => rec.observe(subject, `snd:${name}`, data, b, a) };
  };
  const publishVia = (rec: SendReconciler) => async (name: string): Promise<{ b: SendBatch; seq: number }> => {
    const p = await publishBatch(name);
    p.observe(rec);
    return p;
  };
  const ids = async (): Promise<string[]> => {
    const out: string[] = [];
    const si = await admin.jsm.streams.info(stream);
    for (let s = si.state.first_seq; si.state.messages > 0 && s <= si.state.last_seq; s++) {
      const m = await admin.jsm.streams.getMessage(stream, { seq: s }).catch(() => null);
      if (m) out.push(m.header.get("Nats-Msg-Id"));
    }
    return out.sort();
  };
  const reconciled0 = await total(sendsReconciled);

  const rec = new SendReconciler({ jsm: nats.jsm, redis, pub, log, channels: ["apns"], tickMs: 100, verifyAfterMs: 300 });
  t.teardown(() => rec.stop());
  const a = await publishBatch("a");
  const b = await publishBatch("b");
  const c = await publishBatch("c");
  const d = await publishBatch("d");
  // a: a gateway took it (claimed its keys) and acked it; b: lost by the stream, untouched; c: still queued;
  // d: taken, its first send dead-lettered (key released) but its last recorded. All of it set before the reconciler
  // hears of the acks, so its first check (verifyAfterMs later) sees it, however slowly the machine runs.
  await redis.set(keyOf(a.b, 0), "~claimed");
  await redis.set(keyOf(d.b, 2), '{"outcome":"sent"}');
  for (const x of [a, b, d]) await admin.jsm.streams.deleteMessage(stream, x.seq);
  for (const x of [a, b, c, d]) x.observe(rec);

  const want = ["snd:b~r1", "snd:c"];
  for (let i = 0; i < 50 && JSON.stringify(await ids()) !== JSON.stringify(want); i++) await sleep(100);
  t.same(await ids(), want, "b published again under a new id; a and d (taken) not; c (queued) not twice");
  t.equal((await total(sendsReconciled)) - reconciled0, 1, "one counted in nfx_sends_reconciled_total");
  const again = await admin.jsm.streams.getMessage(stream, { last_by_subj: subject });
  t.same(decode<SendBatch>(again!.data).sends.map((s) => s.user), ["b-0", "b-1", "b-2"], "the same batch");
  t.equal(rec.pending, 2, "c and b~r1 are held until a gateway takes them");

  // Lost again: published again once more, under the next id.
  await admin.jsm.streams.deleteMessage(stream, again!.seq);
  for (let i = 0; i < 50 && !(await ids()).includes("snd:b~r2"); i++) await sleep(100);
  t.same(await ids(), ["snd:b~r2", "snd:c"], "lost again: published as ~r2");

  // A gateway takes both: they are let go at their next check (ten times verifyAfterMs after the last).
  await redis.set(keyOf(b.b, 0), "~claimed");
  await redis.set(keyOf(c.b, 0), "~claimed");
  for (let i = 0; i < 60 && rec.pending > 0; i++) await sleep(100);
  t.equal(rec.pending, 0, "nothing held once gateways took everything");
  t.same(await ids(), ["snd:b~r2", "snd:c"], "nothing published twice");

  // The memory bound: past it the oldest batches go unchecked, counted.
  const small = new SendReconciler({ jsm: nats.jsm, redis, pub, log, channels: ["apns"], tickMs: 100, verifyAfterMs: 60_000, maxBytes: encode(batchOf("x")).length + 1 });
  t.teardown(() => small.stop());
  const unchecked0 = await total(sendsUnchecked);
  for (const n of ["x", "y", "z"]) await publishVia(small)(n);
  t.equal(small.pending, 1, "one batch fits");
  t.equal((await total(sendsUnchecked)) - unchecked0, 2, "two counted in nfx_sends_unchecked_total");
});
