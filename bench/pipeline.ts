// bench:pipeline — end to end through every role process to the sandbox APNs and FCM servers: sends/s, latency, lost and duplicated sends.
import { parseArgs } from "node:util";

import { demoUsers } from "../cmd/demo.js";
import { ROLES } from "../cmd/roles.js";
import { MAX_RECIPIENTS } from "../lib/core/request-schema.js";
import { writeUsers } from "../lib/directory/directory.js";
import { notify } from "../lib/intake/api-client.js";
import { tokenFault } from "../sandbox/recorder.js";
import { startBenchCluster } from "./harness.js";
import { report } from "./report.js";

const { values } = parseArgs({ options: { users: { type: "string", default: "20000" }, timeout: { type: "string", default: "300" } } });
const userCount = Number(values.users);

const bench = await startBenchCluster("pipeline", ROLES, true);
const { cluster, nats, redis } = bench;
let result: Record<string, unknown> = {};
try {
  const cfg = cluster.cfg;
  const users = demoUsers(userCount);
  await writeUsers(redis, cfg.cluster.shards, users);
  const expected = new Map<string, number>();
  for (const u of users) if (!u.optedOut) for (const d of u.devices) if (!tokenFault(d.token)) expected.set(d.token, 0);

  const rec = cluster.sandbox!.recorder;
  const t0 = performance.now();
  const ids: string[] = [];
  for (let i = 0; i < users.length; i += MAX_RECIPIENTS) {
    const { id } = await notify(nats.nc, { recipients: users.slice(i, i + MAX_RECIPIENTS).map((u) => u.id), category: "transactional", content: { push: { title: "Bench", body: "Throughput run" } } });
    ids.push(id);
  }
  const tAccepted = performance.now();
  let firstAt = 0;
  const deadline = Date.now() + Number(values.timeout) * 1000;
  while (rec.accepted().length < expected.size && Date.now() < deadline) {
    if (!firstAt && rec.deliveries.length > 0) firstAt = performance.now();
    await new Promise((r) => setTimeout(r, 20));
  }
  const tDone = performance.now();
  await new Promise((r) => setTimeout(r, 1000)); // let stragglers and duplicates land
  for (const d of rec.accepted()) if (expected.has(d.token)) expected.set(d.token, expected.get(d.token)! + 1);
  const lost = [...expected.values()].filter((c) => c === 0).length;
  const dup = [...expected.values()].reduce((a, c) => a + Math.max(0, c - 1), 0);
  const seconds = (tDone - t0) / 1000;
  const mem = process.memoryUsage().rss;
  result = {
    bench: "pipeline",
    users: users.length,
    notifications: ids.length,
    sends: expected.size,
    seconds: Number(seconds.toFixed(3)),
    sends_per_s: Math.round(expected.size / seconds),
    accept_ms: Number((tAccepted - t0).toFixed(1)),
    first_send_ms: Number((firstAt - t0).toFixed(1)),
    lost,
    dup,
    bench_rss_mb: Math.round(mem / 1048576),
    note: "every role its own process plus nats-server, redis-server and the sandboxes (in this process) on 2 cores",
  };
} finally {
  await bench.close();
}
report("pipeline", result);
