// Chaos (npm run test:chaos): a 100,000-recipient campaign while shard-actor processes are SIGKILLed at random moments five times; the sandboxes must see every eligible device once.
import type { ChildProcess } from "node:child_process";
import t from "tap";
import { callApi, notify } from "../../lib/api-client.js";
import type { CampaignStatus } from "../../lib/campaigns.js";
import { writeUsers } from "../../lib/directory.js";
import { API } from "../../lib/subjects.js";
import { syntheticUser } from "../../lib/users.js";
import { clientsFor, eventually, startTestCluster } from "../helpers/cluster.js";
import { watchSendBatches } from "../helpers/shards.js";

const DAY = 86_400_000;
const KILLS = Number(process.env.NFX_CHAOS_KILLS ?? 5);

t.test(`100,000 recipients, a shard actor SIGKILLed ${KILLS} times: 0 lost, 0 duplicates at the sandboxes`, async (t) => {
  const cluster = await startTestCluster(t, { overrides: { shard: { leaseMs: 1500, checkpointMs: 500 }, campaign: { chunkSize: 1000 } } });
  const cfg = cluster.cfg;
  const { nats, redis } = await clientsFor(t, cfg);
  const now = Date.now();
  const users = Array.from({ length: 100_000 }, (_, i) => syntheticUser(i, now));
  for (let i = 0; i < users.length; i += 5000) await writeUsers(redis, cfg.cluster.shards, users.slice(i, i + 5000));
  const live: ChildProcess[] = [cluster.procs.get("shard")!, await cluster.startExtra("shard")];
  const watch = watchSendBatches(nats);
  t.teardown(watch.stop);

  const { id } = await notify(nats.nc, { segment: "active_30d", category: "social", content: { push: { title: "Chaos", body: "c" } }, campaign: { rate: 6000 } });
  const status = () => callApi<CampaignStatus>(nats.nc, API.campaign, { id, action: "status" });
  t.ok(await eventually(async () => (await status()).counters.sent > 0, 30_000), "deliveries under way");
  const inFlightAtKills: number[] = [];
  for (let k = 0; k < KILLS; k++) {
    await new Promise((r) => setTimeout(r, 700 + Math.random() * 1800));
    const i = Math.floor(Math.random() * live.length);
    const victim = live[i]!;
    const before = (await status()).counters;
    inFlightAtKills.push(before.queued - before.sent);
    await new Promise<void>((r) => (victim.once("exit", () => r()), victim.kill("SIGKILL")));
    t.pass(`kill ${k + 1}: pid ${victim.pid} at ${(await status()).scanned} users listed`);
    live[i] = await cluster.startExtra("shard");
  }
  t.ok(await eventually(async () => (await status()).complete, 180_000), "the campaign completes");
  const s = await status();
  await new Promise((r) => setTimeout(r, 1000));
  const eligible = users.filter((u) => (u.lastActive ?? 0) >= s.createdAt - 30 * DAY && !u.optedOut && u.preferences?.categories?.social?.push !== false);
  const expected = new Set(eligible.flatMap((u) => u.devices.map((d) => d.token)));
  const got = new Map<string, number>();
  for (const d of cluster.sandbox!.recorder.accepted()) if (d.nid === id) got.set(d.token, (got.get(d.token) ?? 0) + 1);
  const lost = [...expected].filter((tok) => !got.has(tok)).length;
  const dup = [...got.values()].reduce((a, c) => a + (c > 1 ? c - 1 : 0), 0);
  const republished = watch.seen.reduce((a, b) => a + b.sends.length, 0) - expected.size;
  console.error(JSON.stringify({ test: "shard-kills", kills: KILLS, recipients: users.length, expected_devices: expected.size, lost, duplicates: dup, sends_republished_by_new_owners: republished, queued_not_sent_at_kills: inFlightAtKills }));
  t.equal(lost, 0, `no eligible device missed (of ${expected.size})`);
  t.equal(dup, 0, "no device notified twice");
  t.equal([...got.keys()].filter((tok) => !expected.has(tok)).length, 0, "no ineligible device notified");
  t.equal(s.counters.sent, expected.size, "counters: sent equals what the sandboxes got");
});
