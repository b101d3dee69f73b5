// `nfx init` against a real nats-server: creates everything, is safe to run twice and concurrently, and the CLI reports it.
import { pino } from "pino";
import t from "tap";

import { createLogger } from "../../lib/core/log.js";
import { BUCKET } from "../../lib/core/subjects.js";
import { connectNats } from "../../lib/infra/nats.js";
import { consumerConfigs, ensureTopology, streamConfigs } from "../../lib/infra/topology.js";
import { nfxRunner } from "../helpers/cli.js";
import { startServers } from "../helpers/servers.js";


t.test("ensureTopology is idempotent", async (t) => {
  const servers = await startServers(t);
  const cfg = servers.config();
  const n = await connectNats(cfg, createLogger({ level: "warn", redact: true }, pino.destination(2)), "test");
  t.teardown(() => n.nc.close());
  const first = await ensureTopology(n, cfg);
  await Promise.all([ensureTopology(n, cfg), ensureTopology(n, cfg)]);
  const streams: string[] = [];
  for await (const s of n.jsm.streams.list()) streams.push(s.config.name);
  const expected = [...streamConfigs(cfg).map((s) => s.name), ...Object.values(BUCKET).map((b) => `KV_${b}`)].sort();
  t.same(streams.sort(), expected, "exactly the expected streams and KV buckets, once each");
  t.equal(first.consumers.length, consumerConfigs(cfg).length);
  for (const { stream, config } of consumerConfigs(cfg)) {
    const ci = await n.jsm.consumers.info(stream, config.durable_name!);
    t.equal(ci.config.filter_subject, config.filter_subject, `${config.durable_name} filters its lane`);
  }
  const env = { NFX_NATS__SERVERS: JSON.stringify([servers.natsUrl]), NFX_NATS__SECRET: servers.natsSecret, NFX_REDIS__URL: servers.redisUrl, NFX_REDIS__CLUSTER: JSON.stringify(servers.redisSeeds) };
  const cli = await nfxRunner(env)("init");
  t.match(cli.stdout, /streams: NFX_INTAKE, NFX_FAN, NFX_DEFER, NFX_RETRY, NFX_TRAILS, NFX_SEND_APNS, NFX_SEND_FCM, NFX_SEND_EMAIL, NFX_SEND_SMS, NFX_SEND_INAPP, NFX_SEND_WEBHOOK, NFX_RECEIPTS, NFX_DLQ/, "`nfx init` on an existing cluster succeeds and lists the streams");
  const bad = await nfxRunner({ ...env, NFX_CLUSTER__SHARDS: "0" })("init").then(() => null, (e: { code: number; stderr: string }) => e);
  t.equal(bad?.code, 1, "invalid config: exit 1 before connecting");
  t.match(bad?.stderr ?? "", /NFX_ERR_CONFIG_INVALID.*\n.*cluster\.shards/);
});
