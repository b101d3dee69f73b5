// The send reconciler on a real nats-server and Redis: after a send stream's sequence goes back, batches it lost are published again, batches a gateway took or the stream holds are not.
import t from "tap";

import { decode } from "../../lib/core/codec.js";
import { encode } from "../../lib/core/codec.js";
import { deliveryKey } from "../../lib/core/ids.js";
import { deliveredKey } from "../../lib/core/keys.js";
import { createLogger } from "../../lib/core/log.js";
import { sendSubject, STREAM } from "../../lib/core/subjects.js";
import type { SendBatch } from "../../lib/core/types.js";
import { JsPublisher } from "../../lib/flow/js-publisher.js";
import { sendsReconciled } from "../../lib/infra/metrics.js";
import { connectNats } from "../../lib/infra/nats.js";
import { ensureTopology } from "../../lib/infra/topology.js";
import { SendReconciler } from "../../lib/shard/send-reconciler.js";
import { clientsFor } from "../helpers/cluster.js";
import { startServers } from "../helpers/servers.js";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const batchOf = (name: string): SendBatch => ({
  type: "send_batch", channel: "apns", shard: 3, notifications: {},
  sends: [0, 1].map((i) => ({ nid: "n1", user: `${name}-${i}`, device: "d", token: `tok-${name}-${i}` })),
});
const firstKey = (b: SendBatch): string => deliveredKey(b.shard, deliveryKey(b.sends[0].nid, b.sends[0].user, "apns", b.sends[0].device));

t.test("a stream's sequence goes back: lost batches are published again under new ids, taken or stored ones are not", async (t) => {
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
  const rec = new SendReconciler({ jsm: nats.jsm, redis, pub, log, channels: ["apns"], pollMs: 100, holdMs: 3000, verifyAfterMs: 300, suspectMs: 2500 });
  t.teardown(() => rec.stop());
  const stream = STREAM.send("apns");
  const subject = sendSubject("apns", "normal");
  const publish = async (name: string): Promise<{ b: SendBatch; seq: number }> => {
    const b = batchOf(name);
    const data = encode(b);
    const a = await pub.publish(subject, data, `snd:${name}`);
    rec.observe(subject, `snd:${name}`, data, b, a);
    return { b, seq: a.seq };
  };
  const before = (await sendsReconciled.get()).values.reduce((a, v) => a + v.value, 0);

  const a = await publish("a");
  await publish("b");
  const c = await publish("c");
  await sleep(600);
  t.equal(rec.pending, 0, "nothing is suspect while the stream's sequence only grows");

  // A gateway took batch a (it claims every delivery key first); then the stream loses everything and starts again at 1.
  await redis.set(firstKey(a.b), "~claimed");
  await admin.jsm.streams.delete(stream);
  await ensureTopology(admin, cfg);
  await sleep(300);
  // Published after the fault: d is stored and stays; e is dropped by the stream (as nats-server's work queue does).
  const d = await publish("d");
  const e = await publish("e");
  // d takes a sequence already acked before the fault (a suspect by its ack); e may not (a suspect by the window after the fault).
  t.ok(d.seq <= c.seq, `the sequence went back (d ${d.seq}, e ${e.seq}, c was ${c.seq})`);
  await admin.jsm.streams.deleteMessage(stream, e.seq);

  const ids = async (): Promise<string[]> => {
    const out: string[] = [];
    const si = await admin.jsm.streams.info(stream);
    for (let s = si.state.first_seq; s <= si.state.last_seq && si.state.messages > 0; s++) {
      const m = await admin.jsm.streams.getMessage(stream, { seq: s }).catch(() => null);
      if (m) out.push(m.header.get("Nats-Msg-Id"));
    }
    return out.sort();
  };
  const want = ["snd:b~r1", "snd:c~r1", "snd:d", "snd:e~r1"];
  for (let i = 0; i < 100 && JSON.stringify(await ids()) !== JSON.stringify(want); i++) await sleep(100);
  t.same(await ids(), want, "b, c and e published again; a (taken by a gateway) and d (stored) not");
  const after = (await sendsReconciled.get()).values.reduce((s, v) => s + v.value, 0);
  t.equal(after - before, 3, "three counted in nfx_sends_reconciled_total");
  const again = await admin.jsm.streams.getMessage(stream, { last_by_subj: subject });
  t.same(decode<SendBatch>(again!.data).sends.map((s) => s.user), ["e-0", "e-1"], "the same batch, byte for byte");

  // Checked again after their first look (ten times verifyAfterMs): still nothing more; then a publish well past the window is no suspect.
  await sleep(3500);
  t.same(await ids(), want, "nothing published twice");
  t.equal(rec.pending, 0, "every suspect settled");
  await sleep(2600);
  await publish("f");
  await publish("g");
  t.equal(rec.pending, 0, "batches above the highest sequence seen, after the window, are not suspects");
});
