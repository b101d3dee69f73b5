// After a nats-server dies: an ordered reader whose client and consumer were on it is noticed (watchOrdered) and opened again on a live server; a work-queue consumer left without a leader is created again (watchWorkQueue).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { AckPolicy, type ConsumerMessages, DeliverPolicy, jetstream, jetstreamManager, RetentionPolicy } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import t, { type Test } from "tap";

import type { Logger } from "../../lib/core/log.js";
import { watchOrdered } from "../../lib/flow/pull.js";
import { watchWorkQueue } from "../../lib/flow/stranded.js";
import { type NatsCluster, startNatsCluster } from "../../lib/infra/nats-cluster.js";
import { eventually } from "../helpers/cluster.js";

/** Three nats-servers with JetStream (stopped and removed at the end of `t`) and a client of all three. */
async function threeServers(t: Test): Promise<{ cluster: NatsCluster; admin: NatsConnection }> {
  const dir = mkdtempSync(join(tmpdir(), "nfx-watch-"));
  const cluster = await startNatsCluster({ dir, nodes: 3, conf: (name) => `server_name: "${name}"\njetstream {}\n` });
  t.teardown(async () => {
    await cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const admin = await connect({ servers: cluster.urls, reconnectTimeWait: 500 });
  t.teardown(() => admin.close());
  return { cluster, admin };
}

t.test("a reader stuck after its server's loss is reported and a new one reads on", { timeout: 180_000 }, async (t) => {
  const { cluster, admin } = await threeServers(t);
  const jsm = await jetstreamManager(admin);
  // A new cluster's meta leader may refuse an R3 stream until every peer reported in.
  let refused = "";
  t.ok(await eventually(() => jsm.streams.add({ name: "W", subjects: ["w.>"], num_replicas: 3 }).then(() => true, (err: Error) => ((refused = err.message), false)), 30_000), `an R3 stream (${refused || "created at once"})`);
  await jetstream(admin).publish("w.1", "first");

  // The reader's client on node i, and its consumer placed on that same node (the meta leader picks; try each node).
  let home = -1;
  let nc = null as Awaited<ReturnType<typeof connect>> | null;
  let it: ConsumerMessages | null = null;
  for (let attempt = 0; attempt < 12 && home < 0; attempt++) {
    const i = attempt % 3;
    const c = await connect({ servers: [cluster.urls[i], ...cluster.urls.filter((_, j) => j !== i)], noRandomize: true, reconnectTimeWait: 500 });
    const oc = await jetstream(c).consumers.get("W", { filter_subjects: "w.>", deliver_policy: DeliverPolicy.All });
    const leader = (await oc.info(true)).cluster?.leader;
    if (leader === cluster.nodes[i].name) {
      [home, nc, it] = [i, c, await oc.consume({ max_messages: 8, expires: 5000 })];
    } else await c.close();
  }
  t.ok(home >= 0 && nc && it, "a reader whose client and consumer are on the same node");
  if (!nc || !it) return;
  t.teardown(() => nc.close());

  const seen: string[] = [];
  let stuck = "";
  const read = (r: ConsumerMessages): void =>
    void (async () => {
      for await (const m of r) seen.push(m.string());
    })();
  read(it);
  const watch = watchOrdered(it, nc, (why) => (stuck ||= why));
  t.teardown(() => watch.stop());
  t.ok(await eventually(() => seen.includes("first"), 10_000), "the reader reads");

  await cluster.kill(home);
  t.ok(await eventually(() => stuck !== "", 60_000), `the watch reports the reader stuck (${stuck})`);
  t.match(stuck, /reconnect|heartbeats|recreated/, "with the reason");

  // What the caller does: a new reader after the last message read, placed by the meta leader on a live node.
  t.ok(await eventually(() => jetstream(admin).publish("w.2", "second").then(() => true, () => false), 30_000), "the stream takes a message again");
  // Consumers are created by the meta leader, which the kill may have taken: asked again until one is elected (as the shard actor does).
  const reopen = async (): Promise<boolean> => {
    try {
      const again = await jetstream(nc).consumers.get("W", { filter_subjects: "w.>", deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: 2 });
      read(await again.consume({ max_messages: 8, expires: 5000 }));
      return true;
    } catch {
      return false;
    }
  };
  t.ok(await eventually(reopen, 60_000), "a new reader opens on a live node");
  t.ok(await eventually(() => seen.includes("second"), 30_000), "the new reader reads on while the dead node stays down");
});

t.test("a work-queue consumer left without a leader, or missing, is created again and delivers what is unacked", { timeout: 300_000 }, async (t) => {
  const { cluster, admin } = await threeServers(t);
  const jsm = await jetstreamManager(admin);
  t.ok(await eventually(() => jsm.streams.add({ name: "Q", subjects: ["q.>"], num_replicas: 3, retention: RetentionPolicy.Workqueue }).then(() => true, () => false), 30_000), "an R3 work queue");
  for (const n of [1, 2, 3]) await jetstream(admin).publish(`q.${n}`, String(n));
  // A consumer whose one replica is on a node that dies has no leader while its stream has one: what nats-server 2.9.10 left an R3 consumer in.
  const config = { durable_name: "c", filter_subject: "q.>", ack_policy: AckPolicy.Explicit, num_replicas: 1 };
  await jsm.consumers.add("Q", config);
  const placed = (await jsm.consumers.info("Q", "c")).cluster?.leader;
  const home = cluster.nodes.findIndex((n) => n.name === placed);
  t.ok(home >= 0, "the consumer is on one node");
  const repairs: string[] = [];
  const log = { warn: (o: { fault: string }) => repairs.push(o.fault), info: () => {}, error: () => {}, debug: () => {} } as unknown as Logger;
  const w = watchWorkQueue({ jsm, stream: "Q", configs: [config], log, everyMs: 500, settleMs: 0, leaderlessMs: 3000 });
  t.teardown(() => w.stop());

  await cluster.kill(home);
  let why = "";
  t.ok(await eventually(() => jsm.consumers.info("Q", "c").then(() => false, (err: Error) => ((why = err.message), true)), 30_000), `with its node down the consumer cannot answer (${why})`);
  t.ok(await eventually(() => repairs.includes("leaderless"), 60_000), `the watch recreated it (${repairs.join(", ")})`);
  let leader: string | undefined = "";
  const onLive = (): Promise<boolean> => jsm.consumers.info("Q", "c").then((ci) => ((leader = ci.cluster?.leader), !!leader && leader !== cluster.nodes[home].name), () => false);
  // An R1 consumer is placed on one of its stream's peers, the dead one included (nats-server 2.9.10): then it is leaderless again and recreated again.
  t.ok(await eventually(onLive, 90_000), `it lives on a live node now (${leader})`);
  const got = await jetstream(admin).consumers.get("Q", "c").then((c) => c.fetch({ max_messages: 3, expires: 5000 }));
  const bodies: string[] = [];
  for await (const m of got) bodies.push(m.string());
  t.same(bodies.sort(), ["1", "2", "3"], "it delivers every message still in the queue");

  await jsm.consumers.delete("Q", "c");
  t.ok(await eventually(() => repairs.includes("missing") && jsm.consumers.info("Q", "c").then(() => true, () => false), 90_000), "a deleted consumer is created again");
});
