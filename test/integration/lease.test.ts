// Leases on a real JetStream KV with a fake clock: one holder, takeover after expiry, a stale holder is fenced; shard checkpoints stored in parts, whole or as changes on top; the process registry lists each process once; work-queue consumers recreated under their readers; a reader left without a pull request opened again.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import t, { type Test } from "tap";

import { encodeJson } from "../../lib/core/codec.js";
import { Fenced } from "../../lib/core/errors.js";
import { createLogger, type Logger } from "../../lib/core/log.js";
import { BUCKET, checkpointKey, checkpointPartKey, PROCESS_KEY } from "../../lib/core/subjects.js";
import { Lease } from "../../lib/flow/lease.js";
import { readDurable } from "../../lib/flow/pull.js";
import { consumerFault, watchWorkQueue } from "../../lib/flow/stranded.js";
import { freePort, track, waitForPort } from "../../lib/infra/launch.js";
import type { Nats } from "../../lib/infra/nats.js";
import { listProcesses } from "../../lib/infra/processes.js";
import { ensureTopology } from "../../lib/infra/topology.js";
import { DedupWindow } from "../../lib/shard/dedup-window.js";
import { RateBuckets } from "../../lib/shard/rate-buckets.js";
import { type CheckpointHead, CheckpointStore, emptyHead, startPositions } from "../../lib/shard/shard-checkpoint.js";
import { clientsFor } from "../helpers/cluster.js";
import { startServers } from "../helpers/servers.js";

/** A nats-server with nfx's topology, and an admin client of it. */
async function topologyOn(t: Test): Promise<Nats> {
  const servers = await startServers(t);
  const cfg = servers.config();
  const { nats } = await clientsFor(t, cfg);
  await ensureTopology(nats, cfg);
  return nats;
}

/** A durable reader of consumer "r" of `stream` collecting each message's `i` (acked), and a wait until `n` were read (at most 15 s). */
async function readInto(t: Test, nats: Nats, stream: string, log: Logger, expiresMs?: number): Promise<{ got: number[]; until: (n: number) => Promise<void> }> {
  const got: number[] = [];
  const reader = readDurable({ js: nats.js, stream, consumer: "r", maxMessages: 16, log, ...(expiresMs ? { expiresMs } : {}), onMsg: (m) => (got.push(m.json<{ i: number }>().i), m.ack()) });
  t.teardown(() => reader.stop());
  await reader.opened;
  const until = async (n: number): Promise<void> => {
    for (const end = Date.now() + 15_000; got.length < n && Date.now() < end; ) await new Promise((r) => setTimeout(r, 50));
  };
  return { got, until };
}

t.test("lease: exclusive, expires, fences the stale holder", async (t) => {
  const nats = await topologyOn(t);
  const kv = await nats.kvm.open(BUCKET.leases);
  let clock = 1_000_000;
  const now = () => clock;

  const a = await Lease.acquire(kv, "x", "A", 3000, now);
  t.ok(a, "A takes a free lease");
  t.equal(await Lease.acquire(kv, "x", "B", 3000, now), null, "B cannot take it while A holds it");
  clock += 2000;
  t.ok(await a!.renew(), "A renews before expiry");
  clock += 2500;
  t.equal(await Lease.acquire(kv, "x", "B", 3000, now), null, "the renewal pushed expiry out: still A's");
  clock += 4000; // A stops renewing (paused, partitioned)
  t.notOk(a!.valid, "by its own clock A knows it has lapsed");
  const b = await Lease.acquire(kv, "x", "B", 3000, now);
  t.ok(b, "B takes the expired lease");
  clock -= 4000; // A's clock says it is still fine, e.g. it was paused and resumes believing it holds the lease
  t.notOk(await a!.renew(), "A's renewal fails: the revision moved (fenced)");
  t.ok(a!.lost, "A knows it lost the lease");
  clock += 4000;
  t.ok(await b!.renew(), "B keeps it");
  await b!.release();
  t.ok(await Lease.acquire(kv, "x", "C", 3000, now), "a released lease is free at once");
});

t.test("checkpoint in parts: read back whole; the previous generation's parts are dropped when a new one is published", async (t) => {
  const nats = await topologyOn(t);
  const kv = await nats.kvm.open(BUCKET.checkpoints);
  const store = new CheckpointStore(kv, "bulk");
  const key = checkpointKey("bulk", 7);
  /** How many of generation `gen`'s parts (of `n`) are stored (a dropped part leaves only its purge marker). */
  const partsOf = async (gen: string | undefined, n = 4): Promise<number> => {
    let k = 0;
    for (let i = 0; i < n; i++) if ((await kv.get(checkpointPartKey(key, gen!, i)))?.operation === "PUT") k++;
    return k;
  };
  // A dedup window of 100,000 entries (16 bytes each, 1.6 MB): four parts of 512 KB.
  let clock = 1_000_000;
  const w = new DedupWindow(86_400_000, () => clock);
  for (let i = 0; i < 100_000; i++) w.add(`n_${i}|u${i}`);
  const b = new RateBuckets(() => clock);
  const cap = { count: 3, periodSec: 3600 };
  b.take("ana", "promo", cap);
  const write = (head: CheckpointHead, full: boolean, epoch = 1) =>
    store.write(7, { owner: "A", epoch, at: clock, pos: { ...startPositions(), bulk: clock }, posAt: { ...startPositions(), bulk: clock * 1000 + 7 }, full, dedup: full ? w.pack() : w.packChanges(), buckets: full ? b.pack() : b.packChanges() }, head);
  /** The state a new owner restores: the full state, then each change, in order. */
  const restore = async () => {
    const { cp, head } = await store.load(7);
    const w2 = new DedupWindow(86_400_000, () => clock);
    const b2 = new RateBuckets(() => clock);
    for (const sec of cp!.sections) {
      w2.restore(sec.dedup);
      b2.restore(sec.buckets, clock - sec.at);
    }
    return { cp: cp!, head, w: w2, b: b2 };
  };

  const h1 = await write(emptyHead(), true);
  t.equal(await partsOf(h1.base?.gen), 4, "the first checkpoint is stored whole in 4 parts");
  let back = await restore();
  t.ok(back.w.size === 100_000 && back.w.has("n_0|u0") && back.w.has("n_99999|u99999") && back.cp.pos.bulk === clock, "read back whole, positions included");
  t.notOk(CheckpointStore.wantsFull(h1), "a large full state: the next write may carry only the changes");

  // Changes since: 10 new keys and a token taken. Stored as one small part; the full state's parts stay.
  clock += 1000;
  for (let i = 0; i < 10; i++) w.add(`n_new|u${i}`);
  b.take("ana", "promo", cap);
  const h2 = await write(h1, false);
  t.equal(h2.deltas.length, 1, "one change part on top of the full state");
  t.ok(h2.deltas[0].bytes < 1000, `the change part holds only what changed (${h2.deltas[0].bytes} bytes)`);
  t.equal(await partsOf(h1.base?.gen), 4, "the full state's parts are kept");
  back = await restore();
  t.equal(back.w.size, 100_010, "restored: the full state and the changes");
  t.ok(back.w.has("n_new|u9") && back.w.has("n_5|u5"), "old and new keys alike");
  t.equal(back.b.take("ana", "promo", cap, false).left, 0, "ana's bucket: two of three tokens taken before, one left now (this check would take it)");
  t.equal(back.cp.pos.bulk, clock, "the positions of the last write");
  t.equal(back.cp.posAt.bulk, clock * 1000 + 7, "and when the stream stored the chunk at each");

  // Changes as large as the full state: the next write is whole, and the older parts are dropped.
  const big = { ...h2, deltas: [{ ...h2.deltas[0], bytes: h2.baseBytes }] };
  t.ok(CheckpointStore.wantsFull(big), "changes as large as the full state: write it whole");
  clock += 1000;
  const h3 = await write(h2, true, 2);
  await new Promise((r) => setTimeout(r, 500)); // dropped after the manifest moved on, without waiting
  t.equal(await partsOf(h1.base?.gen), 0, "the first full state's parts are dropped");
  t.equal(await partsOf(h2.deltas[0].gen, 1), 0, "and its change part");
  t.equal(await partsOf(h3.base?.gen), 4, "the new full state's 4 parts are stored");
  back = await restore();
  t.ok(back.w.size === 100_010 && back.cp.sections.length === 1 && back.cp.epoch === 2, "the new full state is the one read");

  // A stale owner's write of changes is fenced, and its part dropped.
  await t.rejects(write(h2, false), Fenced, "a write naming an old revision is fenced");
});

t.test("process registry: each process listed once, even when entries are refreshed while the listing runs", async (t) => {
  const nats = await topologyOn(t);
  const kv = await nats.kvm.open(BUCKET.procs);
  const infos = Array.from({ length: 10 }, (_, i) => ({ id: PROCESS_KEY.of("h", 100 + i), roles: ["shard"], host: "h", pid: 100 + i, startedAt: 1 }));
  const put = () => Promise.all(infos.map((p) => kv.put(p.id, encodeJson(p))));
  await put();
  // Entries are refreshed without pause (as announceProcess does every 5 s per process) while the listings run.
  let listing = true;
  const refresher = (async () => {
    while (listing) await put();
  })();
  const counts: number[] = [];
  for (let i = 0; i < 30; i++) counts.push((await listProcesses(nats)).length);
  listing = false;
  await refresher;
  t.same(new Set(counts), new Set([10]), "every listing names the 10 processes, none twice");
});

t.test("a work-queue consumer left past its stream's last sequence is recreated and delivers what it skipped", async (t) => {
  const nats = await topologyOn(t);
  // The state nats-server leaves after a stream's sequence went back: messages in the stream the consumer has passed.
  // The API cannot make it on a work queue (its consumers must deliver all; a start past the end is clamped), so a
  // limits stream and a consumer that delivers only new messages, created after five were published, stand in for it.
  await nats.jsm.streams.add({ name: "WQT", subjects: ["wq.>"], retention: RetentionPolicy.Limits, storage: StorageType.Memory });
  const config = { durable_name: "c", filter_subject: "wq.a", ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All };
  for (let i = 0; i < 5; i++) await nats.js.publish("wq.a", encodeJson({ i }));
  await nats.js.publish("wq.b", encodeJson({ i: -1 }));
  await nats.jsm.consumers.add("WQT", { ...config, deliver_policy: DeliverPolicy.New });
  const take = async (): Promise<number[]> => {
    const c = await nats.js.consumers.get("WQT", "c");
    const got: number[] = [];
    for await (const m of await c.fetch({ max_messages: 10, expires: 1000 })) {
      got.push((m.json<{ i: number }>()).i);
      m.ack();
    }
    return got;
  };
  t.same(await take(), [], "the consumer has passed the five messages (the fault)");
  const ci = await nats.jsm.consumers.info("WQT", "c");
  t.equal(consumerFault(ci, (await nats.jsm.streams.info("WQT")).state.last_seq, 5), "stranded", "seen as stranded");
  t.equal(consumerFault({ delivered: { stream_seq: 300 }, num_pending: 0, num_ack_pending: 0 }, 284, 0), "ahead", "a consumer delivered past its stream's last sequence: ahead");
  const log = createLogger({ level: "silent", redact: true });
  const w = watchWorkQueue({ jsm: nats.jsm, stream: "WQT", configs: [config], log, everyMs: 200, settleMs: 0 });
  t.teardown(() => w.stop());
  // Recreated (a new creation time); then the watch stops: on a limits stream delivered messages stay, which on a work queue would mean stranded again.
  // Between the delete and the create the consumer does not exist: not recreated yet.
  const created = (): Promise<string> => nats.jsm.consumers.info("WQT", "c").then((i) => i.created, () => ci.created);
  for (const until = Date.now() + 15_000; (await created()) === ci.created && Date.now() < until; ) await new Promise((r) => setTimeout(r, 100));
  w.stop();
  await new Promise((r) => setTimeout(r, 500));
  let got: number[] = [];
  for (const until = Date.now() + 10_000; got.length < 5 && Date.now() < until; ) got = got.concat(await take());
  t.same(got, [0, 1, 2, 3, 4], "recreated, it delivers every skipped message once, in order");
  t.equal(consumerFault({ delivered: { stream_seq: 10 }, num_pending: 2, num_ack_pending: 0 }, 12, 2), null, "pending: healthy");
});

t.test("a reader whose consumer is deleted and created again under it reads on from the new one", async (t) => {
  const nats = await topologyOn(t);
  await nats.jsm.streams.add({ name: "RDT", subjects: ["rd.>"], retention: RetentionPolicy.Workqueue, storage: StorageType.Memory });
  const config = { durable_name: "r", ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All };
  await nats.jsm.consumers.add("RDT", config);
  const { got, until } = await readInto(t, nats, "RDT", createLogger({ level: "silent", redact: true }));
  await nats.js.publish("rd.a", encodeJson({ i: 0 }));
  await until(1);
  t.same(got, [0], "read before");
  // The ack is published without a reply: wait until the stream has removed message 0, or the new consumer rightly delivers it again.
  for (const end = Date.now() + 5_000; (await nats.jsm.streams.info("RDT")).state.messages > 0 && Date.now() < end; ) await new Promise((r) => setTimeout(r, 20));
  // What the consumer watch does to a stranded or leaderless consumer (lib/flow/stranded.ts): delete it, add it again.
  await nats.jsm.consumers.delete("RDT", "r");
  await nats.jsm.consumers.add("RDT", config);
  for (let i = 1; i <= 3; i++) await nats.js.publish("rd.a", encodeJson({ i }));
  await until(4);
  t.same(got, [0, 1, 2, 3], "every message published after the consumer was created again is read, once, in order");
});

t.test("a reader that hears no heartbeats for a while is opened again, and reads on", async (t) => {
  const servers = await startServers(t);
  const { nats } = await clientsFor(t, servers.config());
  await nats.jsm.streams.add({ name: "RDH", subjects: ["rh.>"], retention: RetentionPolicy.Workqueue, storage: StorageType.Memory });
  await nats.jsm.consumers.add("RDH", { durable_name: "r", ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All });
  const warned: string[] = [];
  const log = createLogger({ level: "warn", redact: true }, { write: (line: string) => void warned.push((JSON.parse(line) as { msg: string }).msg) });
  // Pulls expire after 1 s: heartbeats every 0.5 s, so the reader is opened again after about 3 s without them.
  const { got, until } = await readInto(t, nats, "RDH", log, 1000);
  await nats.js.publish("rh.a", encodeJson({ i: 0 }));
  await until(1);
  // nats-server paused for 5 s: no heartbeats, and no look-up of the consumer answers meanwhile.
  servers.natsProc.kill("SIGSTOP");
  await new Promise((r) => setTimeout(r, 5000));
  servers.natsProc.kill("SIGCONT");
  t.ok(warned.includes("no heartbeats from the consumer; opening the reader again"), "the reader was opened again");
  for (let i = 1; i <= 3; i++) await nats.js.publish("rh.a", encodeJson({ i }));
  await until(4);
  t.same(got, [0, 1, 2, 3], "what was published after the pause is read, once, in order");
});

t.test("a reader left without a pull request while messages wait for it is opened again", async (t) => {
  // A nats-server of its own, started here with its config file alone (a reload refuses a store directory given on
  // the command line), whose config this test rewrites: pulls refused, then allowed again (SIGHUP reloads it).
  const dir = mkdtempSync(join(tmpdir(), "nfx-stall-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const conf = (pulls: boolean): string =>
    [
      `jetstream { store_dir: "${join(dir, "js")}" }`,
      "authorization { users: [ { user: r, password: p, permissions: {",
      `  publish: { allow: [">"]${pulls ? "" : ', deny: ["$JS.API.CONSUMER.MSG.NEXT.>"]'} }`,
      '  subscribe: { allow: [">"] } } } ] }',
    ].join("\n");
  const confFile = join(dir, "nats.conf");
  writeFileSync(confFile, conf(true));
  const port = await freePort();
  let server: { proc: ChildProcess; stop: () => Promise<void> } | null = null;
  const start = async (): Promise<void> => {
    const proc = spawn("nats-server", ["-c", confFile, "-a", "127.0.0.1", "-p", String(port)], { stdio: ["ignore", "pipe", "pipe"] });
    server = { proc, stop: track(proc).stop };
    await waitForPort(port);
  };
  t.teardown(() => server?.stop());
  await start();
  const reload = (pulls: boolean): void => {
    writeFileSync(confFile, conf(pulls));
    server!.proc.kill("SIGHUP");
  };
  const nc = await connect({ servers: `nats://127.0.0.1:${port}`, user: "r", pass: "p", reconnectTimeWait: 100, maxReconnectAttempts: -1 });
  t.teardown(() => nc.close());
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  await jsm.streams.add({ name: "RDS", subjects: ["rs.>"], retention: RetentionPolicy.Workqueue, storage: StorageType.File });
  await jsm.consumers.add("RDS", { durable_name: "r", ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All });
  const warned: string[] = [];
  const log = createLogger({ level: "warn", redact: true }, { write: (line: string) => void warned.push((JSON.parse(line) as { msg: string }).msg) });
  const got: number[] = [];
  // Pulls expire after 60 s: nats.js's heartbeat watch would not notice a lost pull for a minute. The stall check runs every second.
  const reader = readDurable({ js, stream: "RDS", consumer: "r", maxMessages: 16, log, expiresMs: 60_000, stallCheckMs: 1000, onMsg: (m) => (got.push(m.json<{ i: number }>().i), m.ack()) });
  t.teardown(() => reader.stop());
  await reader.opened;
  const until = async (n: number, ms: number): Promise<void> => {
    for (const end = Date.now() + ms; got.length < n && Date.now() < end; ) await new Promise((r) => setTimeout(r, 50));
  };
  await js.publish("rs.a", encodeJson({ i: 0 }));
  await until(1, 10_000);
  t.same(got, [0], "read while pulls are allowed");

  // The server restarted with pulls refused: it forgot the reader's pull request, and the one the client makes once
  // reconnected is refused. nats.js then waits for heartbeats that no pull request will bring.
  writeFileSync(confFile, conf(false));
  await server!.stop();
  await start();
  for (const end = Date.now() + 10_000; !(await nc.flush().then(() => true, () => false)) && Date.now() < end; ) await new Promise((r) => setTimeout(r, 100));
  await new Promise((r) => setTimeout(r, 1000));
  await js.publish("rs.a", encodeJson({ i: 1 }));
  await new Promise((r) => setTimeout(r, 3000));
  const stuck = await jsm.consumers.info("RDS", "r");
  t.same([got, stuck.num_pending, stuck.num_waiting], [[0], 1, 0], "one message waits, and no pull request does");

  // Pulls allowed again: nats.js alone would pull again only after two missed heartbeats (a minute); the stall check opens the reader again.
  reload(true);
  await until(2, 15_000);
  t.same(got, [0, 1], "the waiting message is read within seconds");
  t.ok(warned.includes("messages waiting and no pull request at the server; opening the reader again"), "the stall was noticed and logged");
});
