// Connection handling: restarting nats-server and redis-server under running role processes is logged, not fatal, and loses nothing.
import { join } from "node:path";

import t from "tap";

import { writeUsers } from "../../lib/directory/directory.js";
import { startNatsServer, startRedisServer } from "../../lib/infra/launch.js";
import { notify, status } from "../../lib/intake/api-client.js";
import { clientsFor, eventually, startTestCluster } from "../helpers/cluster.js";

t.test("roles survive a nats-server and a redis-server restart", async (t) => {
  const cluster = await startTestCluster(t);
  const cfg = cluster.cfg;
  const { nats, redis } = await clientsFor(t, cfg);
  const users = [{ id: "ron", devices: [{ id: "ron-phone", platform: "android" as const, token: "fr0n" }] }];
  await writeUsers(redis, cfg.cluster.shards, users);

  // Restart nats-server on the same port and store: JetStream state survives, clients reconnect.
  const storeDir = join(cluster.configFile, "..", "nats");
  await cluster.nats.stop();
  const nats2 = await startNatsServer({ storeDir, port: cluster.nats.port, conf: cluster.natsConf });
  t.teardown(nats2.stop);
  // Restart redis-server (no persistence in tests): the directory is empty until rewritten.
  if (cluster.redisCluster) {
    // On a Redis Cluster (NFX_TEST_REDIS=cluster), every node: each rejoins from its nodes.conf on the same ports.
    const rc = cluster.redisCluster;
    await Promise.all(rc.nodes.map((n) => n.stop()));
    for (const n of rc.nodes) await n.start();
    await rc.waitHealthy();
  } else {
    await cluster.redis.stop();
    const redis2 = await startRedisServer({ dir: join(cluster.configFile, "..", "redis"), port: cluster.redis.port });
    t.teardown(redis2.stop);
  }
  await writeUsers(redis, cfg.cluster.shards, users);

  for (const [role, p] of cluster.procs) t.equal(p.exitCode, null, `${role} is still running`);
  let id = "";
  t.ok(
    await eventually(async () => {
      id ||= await notify(nats.nc, { recipients: ["ron"], category: "transactional", content: { push: { title: "Back", body: "Online again" } } }).then((r) => r.id, () => "");
      return id !== "" && (await status(nats.nc, id).then((s) => s.complete, () => false));
    }, 30_000),
    "a notification sent after both restarts completes",
  );
  t.same(cluster.sandbox!.recorder.countsByDevice("fcm"), { fr0n: 1 }, "and arrives once");
});
