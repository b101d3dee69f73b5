// Campaigns on real NATS and Redis with every role its own process: pause, resume and cancel (the SIGKILL test is test/chaos/campaign-kills.test.ts).
import t from "tap";

import type { CampaignStatus } from "../../lib/campaign/campaigns.js";
import { API } from "../../lib/core/subjects.js";
import { writeUsers } from "../../lib/directory/directory.js";
import { syntheticUser } from "../../lib/directory/users.js";
import { notify } from "../../lib/intake/api-client.js";
import { callApi } from "../../lib/intake/api-client.js";
import { clientsFor, eventually, startTestCluster } from "../helpers/cluster.js";


t.test("pause, resume and cancel; a cancel drops sends already queued downstream", async (t) => {
  const cluster = await startTestCluster(t, { own: ["gateway-apns", "shard"], overrides: { campaign: { chunkSize: 200 }, shard: { usersInFlight: 150 } } });
  const cfg = cluster.cfg;
  const { nats, redis } = await clientsFor(t, cfg);
  const now = Date.now();
  const users = Array.from({ length: 6000 }, (_, i) => ({ ...syntheticUser(i, now), lastActive: now, optedOut: false, preferences: {} }));
  await writeUsers(redis, cfg.cluster.shards, users);
  const control = (id: string, action: string) => callApi<CampaignStatus & { state: string }>(nats.nc, API.campaign, { id, action });

  // Pause within a second, resume, finish.
  const a = await notify(nats.nc, { segment: "all", category: "marketing", content: { push: { title: "A", body: "a" } }, campaign: { rate: 1500 } });
  const created = Date.now();
  t.ok(await eventually(async () => (await control(a.id, "status")).scanned > 0));
  await new Promise((r) => setTimeout(r, 800));
  const early = (await control(a.id, "status")).scanned;
  const allowed = 1500 * ((Date.now() - created) / 1000) + 8 * 200; // the rate, plus one chunk per expansion worker in flight
  t.ok(early <= allowed, `the expansion rate limit holds: ${early} users listed in ${Date.now() - created} ms at 1,500/s (allowed ${Math.round(allowed)})`);
  t.equal((await control(a.id, "pause")).state, "paused");
  await new Promise((r) => setTimeout(r, 1000));
  const held = (await control(a.id, "status")).scanned;
  await new Promise((r) => setTimeout(r, 1500));
  t.equal((await control(a.id, "status")).scanned, held, "no expansion while paused (measured 1 s after the pause, then 1.5 s later)");
  t.ok(held < users.length, "paused before the end");
  const again = await nats.nc.request(API.campaign, new TextEncoder().encode(JSON.stringify({ id: a.id, action: "pause" })));
  t.equal(again.headers?.get("Nfx-Error"), "NFX_ERR_CAMPAIGN_STATE", "pausing a paused campaign is a state conflict");
  const viaHttp = await fetch(`${cluster.httpUrl}/v1/campaigns/${a.id}/resume`, { method: "POST", headers: { authorization: `Bearer ${cluster.apiKey}` } });
  t.equal(((await viaHttp.json()) as { state: string }).state, "running", "resume over HTTP");
  t.ok(await eventually(async () => (await control(a.id, "status")).complete, 60_000), "the resumed campaign completes");
  t.equal(cluster.sandbox!.recorder.accepted().filter((d) => d.nid === a.id).length, users.reduce((n, u) => n + u.devices.length, 0), "and every device got it once");

  // Cancel with sends queued at a stopped gateway: they are dropped, not sent.
  const gw = cluster.procs.get("gateway-apns")!;
  await new Promise<void>((r) => (gw.once("exit", () => r()), gw.kill("SIGTERM")));
  const b = await notify(nats.nc, { segment: "all", category: "marketing", content: { push: { title: "B", body: "b" } } });
  const fcmSends = users.reduce((n, u) => n + u.devices.filter((d) => d.platform === "android").length, 0);
  const apnsSends = users.reduce((n, u) => n + u.devices.filter((d) => d.platform === "ios").length, 0);
  t.ok(await eventually(async () => (await control(b.id, "status")).counters.queued === fcmSends + apnsSends, 60_000), "all sends queued");
  t.equal((await control(b.id, "cancel")).state, "cancelled");
  await cluster.startRole("gateway-apns");
  t.ok(await eventually(async () => (await control(b.id, "status")).complete, 30_000), "every queued send is finished after the cancel");
  const cb = (await control(b.id, "status")).counters;
  const fcmGot = cluster.sandbox!.recorder.accepted("fcm").filter((d) => d.nid === b.id).length;
  t.equal(cluster.sandbox!.recorder.accepted("apns").filter((d) => d.nid === b.id).length, 0, "no queued APNs send reached APNs");
  t.equal(cb.sent, fcmGot, "the FCM sends made before the cancel are counted as sent");
  t.equal(cb.cancelledSends, apnsSends + fcmSends - fcmGot, "every other queued send is counted as cancelled");

  // Cancel with chunks queued at a stopped shard actor: no sends are built.
  const sh = cluster.procs.get("shard")!;
  await new Promise<void>((r) => (sh.once("exit", () => r()), sh.kill("SIGTERM")));
  const c = await notify(nats.nc, { segment: "all", category: "marketing", content: { push: { title: "C", body: "c" } } });
  t.ok(await eventually(async () => (await control(c.id, "status")).shardsDone === cfg.cluster.shards, 30_000), "expansion finished into the fan stream");
  await control(c.id, "cancel");
  await cluster.startRole("shard");
  t.ok(await eventually(async () => (await control(c.id, "status")).counters.cancelled === users.length, 30_000), "every recipient counted as cancelled");
  const sc = await control(c.id, "status");
  t.equal(sc.counters.queued, 0, "no send was built");
  t.equal(cluster.sandbox!.recorder.accepted().filter((d) => d.nid === c.id).length, 0, "nothing reached a provider");
});
