// The webhook gateways' receipt outbox on a real nats-server and Redis: outcomes recorded twice are published once, many to a receipt batch per notification; a batch whose publisher crashed is published by another process, once.
import t, { type Test } from "tap";

import { decode } from "../../lib/core/codec.js";
import { WEBHOOK_RECEIPT_OUTBOX as K } from "../../lib/core/keys.js";
import { createLogger, type Logger } from "../../lib/core/log.js";
import { MSGID, STREAM } from "../../lib/core/subjects.js";
import type { ReceiptBatch, ReceiptEntry } from "../../lib/core/types.js";
import type { StreamReconciler } from "../../lib/flow/stream-reconciler.js";
import { jsPublisher } from "../../lib/flow/stream-reconciler.js";
import { type OutboxItem, ReceiptOutbox } from "../../lib/gateway/receipt-outbox.js";
import { publishReceipts } from "../../lib/gateway/receipts.js";
import type { Nats } from "../../lib/infra/nats.js";
import type { Redis } from "../../lib/infra/redis.js";
import { withScripts } from "../../lib/infra/scripts.js";
import { ensureTopology } from "../../lib/infra/topology.js";
import { clientsFor } from "../helpers/cluster.js";
import { startServers } from "../helpers/servers.js";

const log: Logger = createLogger({ level: "silent", redact: true });
const item = (nid: string, endpoint: string): OutboxItem => {
  const entry: ReceiptEntry = { user: endpoint, channel: "webhook", device: endpoint, outcome: "sent", at: 1 };
  return { id: MSGID.webhookOutcome(`${nid}.${endpoint}`, "sent"), nid, entry };
};

async function setUp(t: Test): Promise<{ nats: Nats; redis: Redis }> {
  const servers = await startServers(t);
  const cfg = servers.config();
  const { nats, redis } = await clientsFor(t, cfg);
  await ensureTopology(nats, cfg);
  return { nats, redis };
}

/** Every receipt batch stored on NFX_RECEIPTS: its message id and batch. */
async function stored(nats: Nats): Promise<{ id: string; rb: ReceiptBatch }[]> {
  const out: { id: string; rb: ReceiptBatch }[] = [];
  const si = await nats.jsm.streams.info(STREAM.receipts);
  for (let s = si.state.first_seq; si.state.messages > 0 && s <= si.state.last_seq; s++) {
    const m = await nats.jsm.streams.getMessage(STREAM.receipts, { seq: s }).catch(() => null);
    if (m) out.push({ id: m.header.get("Nats-Msg-Id"), rb: decode<ReceiptBatch>(m.data) });
  }
  return out;
}

/** The stored batches once `want` entries are there (or 15 s passed). */
async function entriesUntil(nats: Nats, want: number): Promise<{ id: string; rb: ReceiptBatch }[]> {
  let got = await stored(nats);
  for (const end = Date.now() + 15_000; got.reduce((a, b) => a + b.rb.entries.length, 0) < want && Date.now() < end; got = await stored(nats)) await new Promise((r) => setTimeout(r, 50));
  return got;
}

const usersOf = (got: { rb: ReceiptBatch }[]): string[] => got.flatMap((g) => g.rb.entries.map((e) => `${g.rb.nid}.${e.user}`)).sort();

t.test("outcomes recorded twice are published once, many to a receipt batch per notification", async (t) => {
  const { nats, redis } = await setUp(t);
  const outbox = new ReceiptOutbox(redis, jsPublisher(nats), null, log, { maxBatch: 3, idleMs: 100 });
  t.teardown(() => outbox.stop());
  // One turn: five outcomes (one of them twice); the next turn, one of them again.
  const first = outbox.add([item("A", "e1"), item("A", "e2"), item("A", "e1"), item("A", "e3")]);
  const second = outbox.add([item("B", "e1"), item("B", "e2")]);
  await Promise.all([first, second]);
  await outbox.add([item("A", "e2")]);
  const got = await entriesUntil(nats, 5);
  t.same(usersOf(got), ["A.e1", "A.e2", "A.e3", "B.e1", "B.e2"], "each outcome once");
  t.same(got.map((g) => [g.rb.nid, g.rb.entries.length]), [["A", 3], ["B", 2]], "a receipt batch per notification, up to the batch size");
  t.ok(got.every((g) => g.id.startsWith("whb:")), "under the outbox's message ids");
  // Recorded again after it was published (a delivery redone after a crash before it was finished in its queue): dropped.
  await outbox.add([item("A", "e3"), item("B", "e3")]);
  const after = await entriesUntil(nats, 6);
  t.same(usersOf(after), ["A.e1", "A.e2", "A.e3", "B.e1", "B.e2", "B.e3"], "an outcome recorded again after it was published is not published twice");
  t.equal(await redis.hlen(K.batches), 0, "no batch left taken");
});

t.test("a batch whose publisher crashed is published by another process, under the same message ids: once", async (t) => {
  const { nats, redis } = await setUp(t);
  const r = withScripts(redis);
  const pub = jsPublisher(nats);
  const args = (items: OutboxItem[]): string[] => items.flatMap((i) => [i.id, JSON.stringify({ nid: i.nid, e: i.entry })]);
  // Process 1 records four outcomes and takes two batches: it publishes the first and crashes before finishing it; the second it never publishes.
  await r.nfxReceiptOutboxAdd(K.entries, K.order, K.taken, ...args([item("C", "e1"), item("C", "e2"), item("D", "e1"), item("D", "e2")]));
  const [b1, body1] = await r.nfxReceiptOutboxTake(K.entries, K.order, K.taken, K.batches, K.batchTimes, Date.now(), 2, "batch-1", 10_000, 900_000);
  const [b2] = await r.nfxReceiptOutboxTake(K.entries, K.order, K.taken, K.batches, K.batchTimes, Date.now(), 2, "batch-2", 10_000, 900_000);
  t.same([b1, b2], ["batch-1", "batch-2"], "two batches taken");
  const entries1 = (JSON.parse(body1) as { nid: string; e: ReceiptEntry }[]).map((x) => x.e);
  await publishReceipts(pub, null as StreamReconciler | null, "C", MSGID.webhookReceipts("batch-1", "C"), entries1);
  // Process 2, with batches taken for 300 ms counted stale.
  const outbox = new ReceiptOutbox(redis, pub, null, log, { staleMs: 300, idleMs: 100 });
  t.teardown(() => outbox.stop());
  await entriesUntil(nats, 4);
  await new Promise((res) => setTimeout(res, 600));
  const all = await stored(nats);
  t.same(usersOf(all), ["C.e1", "C.e2", "D.e1", "D.e2"], "every outcome stored once");
  t.same(all.map((g) => g.id).sort(), [MSGID.webhookReceipts("batch-1", "C"), MSGID.webhookReceipts("batch-2", "D")], "batch 1 published again under its ids (dropped as a copy), batch 2 published");
  t.equal(await redis.hlen(K.batches), 0, "both batches finished");
});
