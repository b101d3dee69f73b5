// Campaigns on real NATS and Redis with every role its own process: 50,000 users, the campaign actor SIGKILLed twice (and the tracker once), every eligible device notified exactly once. In `npm run test:chaos` (and test:cluster), not `npm test`.
import t from "tap";

import type { CampaignStatus } from "../../lib/campaign/campaigns.js";
import { API } from "../../lib/core/subjects.js";
import type { UserRecord } from "../../lib/core/types.js";
import { writeUsers } from "../../lib/directory/directory.js";
import { syntheticUser } from "../../lib/directory/users.js";
import { notify } from "../../lib/intake/api-client.js";
import { callApi } from "../../lib/intake/api-client.js";
import { clientsFor, eventually, startTestCluster } from "../helpers/cluster.js";

const DAY = 86_400_000;

t.test("50,000-user campaign survives two SIGKILLs of the campaign actor (and one of the tracker): exactly once", async (t) => {
  const cluster = await startTestCluster(t, { own: "all", overrides: { campaign: { chunkSize: 1000, leaseMs: 1000 } } });
  const cfg = cluster.cfg;
  const { nats, redis } = await clientsFor(t, cfg);
  const now = Date.now();
  const users: UserRecord[] = Array.from({ length: 50_000 }, (_, i) => syntheticUser(i, now));
  for (let i = 0; i < users.length; i += 5000) await writeUsers(redis, cfg.cluster.shards, users.slice(i, i + 5000));

  const { id } = await notify(nats.nc, { segment: "active_30d", category: "marketing", content: { push: { title: "Sale", body: "Starts now" } }, campaign: { rate: 12_000 } });
  const status = () => callApi<CampaignStatus>(nats.nc, API.campaign, { id, action: "status" });
  const pids: number[] = [cluster.procs.get("campaign")!.pid!];
  for (const at of [0.25, 0.6]) {
    t.ok(await eventually(async () => (await status()).scanned >= at * users.length, 30_000), `expansion reached ${at * 100}% of users`);
    const victim = cluster.procs.get("campaign")!;
    await new Promise<void>((r) => (victim.once("exit", () => r()), victim.kill("SIGKILL")));
    pids.push((await cluster.startRole("campaign")).pid!);
  }
  t.equal(new Set(pids).size, 3, "three different campaign actor processes ran it");
  // The tracker too: counters folded but not yet acked are redelivered, and must not be counted twice.
  t.ok(await eventually(async () => (await status()).counters.sent > 5000, 60_000), "deliveries under way");
  const tracker = cluster.procs.get("tracker")!;
  await new Promise<void>((r) => (tracker.once("exit", () => r()), tracker.kill("SIGKILL")));
  await cluster.startRole("tracker");
  t.ok(await eventually(async () => (await status()).complete, 120_000), "the campaign completes");
  const s = await status();
  const asOf = s.createdAt;

  // What a user expects: active in the 30 days before the campaign, not opted out, marketing push not turned off.
  const eligible = users.filter((u) => (u.lastActive ?? 0) >= asOf - 30 * DAY && !u.optedOut && u.preferences?.categories?.marketing?.push !== false);
  const expected = new Set(eligible.flatMap((u) => u.devices.map((d) => d.token)));
  await new Promise((r) => setTimeout(r, 1000)); // stragglers or duplicates would land now
  const rec = cluster.sandbox!.recorder;
  const got = new Map<string, number>();
  for (const d of rec.accepted()) if (d.nid === id) got.set(d.token, (got.get(d.token) ?? 0) + 1);
  const missing = [...expected].filter((tok) => !got.has(tok));
  const dups = [...got.values()].filter((c) => c > 1).length;
  const extra = [...got.keys()].filter((tok) => !expected.has(tok));
  t.equal(missing.length, 0, `no eligible device missed (of ${expected.size})`);
  t.equal(dups, 0, "no device notified twice");
  t.equal(extra.length, 0, "no ineligible device notified");
  t.equal(s.counters.sent, expected.size, "counters: sent equals what the sandboxes got");
  t.equal(s.counters.decided, users.filter((u) => (u.lastActive ?? 0) >= asOf - 30 * DAY).length, "counters: every active user decided once");
  t.equal(s.scanned, users.length, "every user listed once");
  t.equal(s.members, s.counters.decided, "every active user went out in a chunk once");
  t.equal(s.shardsDone, cfg.cluster.shards, "every shard done");
});
