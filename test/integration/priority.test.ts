// Urgent lanes in processes of their own (shard@urgent, shard@bulk): nice values, collapse keys across classes, critical sends ahead of a running campaign, admission control holding the campaign back, and the urgent process SIGKILLed mid-stream with nothing lost or doubled.
import { readFileSync } from "node:fs";

import t from "tap";

import type { CampaignStatus } from "../../lib/campaign/campaigns.js";
import { API } from "../../lib/core/subjects.js";
import type { UserRecord } from "../../lib/core/types.js";
import { writeUsers } from "../../lib/directory/directory.js";
import { callApi, notify, status } from "../../lib/intake/api-client.js";
import { clientsFor, eventually, startTestCluster } from "../helpers/cluster.js";

/** A process's nice value (field 19 of /proc/<pid>/stat, after the parenthesised command name). */
const niceOf = (pid: number): number => Number(readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ")[16]);
const push = (title: string) => ({ push: { title, body: "b" } });
const CAMPAIGN_USERS = 12_000;

t.test("urgent lanes isolated from a running campaign", async (t) => {
  const cluster = await startTestCluster(t, {
    roles: ["ingest", "router", "campaign", "shard@urgent", "shard@bulk", "gateway-apns@urgent", "gateway-apns@bulk", "tracker"],
    // A target no urgent latency meets: admission holds bulk work back whenever urgent traffic reports, down to half its pace.
    overrides: { shard: { checkpointMs: 500 }, lanes: { admission: { targetMs: 1, minFactor: 0.5, intervalMs: 100 } } },
  });
  const cfg = cluster.cfg;
  const { nats, redis } = await clientsFor(t, cfg);
  const rec = cluster.sandbox!.recorder;
  const pid = (spec: Parameters<typeof cluster.procs.get>[0]) => cluster.procs.get(spec)!.pid!;

  t.equal(niceOf(pid("shard@urgent")), cfg.lanes.nice.urgent, "the urgent shard process runs at the urgent nice value");
  t.equal(niceOf(pid("shard@bulk")), cfg.lanes.nice.bulk, "the bulk shard process at the bulk one");
  t.equal(niceOf(pid("campaign")), cfg.lanes.nice.bulk, "the campaign actor is bulk work");
  t.equal(niceOf(pid("gateway-apns@urgent")), cfg.lanes.nice.urgent, "the urgent gateway at the urgent nice value");
  t.equal(niceOf(pid("ingest")), cfg.lanes.nice.urgent, "ingest is on every urgent path");
  t.equal(niceOf(pid("tracker")), cfg.lanes.nice.other, "everything else at the default");
  t.equal(niceOf(cluster.nats.proc.pid!), cfg.lanes.nice.servers, "nats-server above the roles");

  const now = Date.now();
  const vip = Array.from({ length: 10 }, (_, i): UserRecord => ({ id: `vip${i}`, lastActive: now - 400 * 86_400_000, devices: [{ id: "p", platform: "ios", token: `tok-vip-${i}-0123456789abcdef` }] }));
  await writeUsers(redis, cfg.cluster.shards, vip);

  // A collapse key shared by a high and a bulk notification: their owners are different processes, and the second is still a duplicate.
  const hi = await notify(nats.nc, { recipients: ["vip0"], category: "transactional", priority: "high", collapseKey: "order-9", content: push("shipped") });
  t.ok(await eventually(async () => (await status(nats.nc, hi.id)).complete));
  const lo = await notify(nats.nc, { recipients: ["vip0"], category: "social", priority: "bulk", collapseKey: "order-9", content: push("shipped, again") });
  t.ok(await eventually(async () => (await status(nats.nc, lo.id)).complete));
  t.same((await status(nats.nc, lo.id)).lines.map((l) => `${l.outcome}:${l.reason ?? ""}`), ["suppressed:duplicate_collapse_key"], "the bulk one is suppressed by the high one's collapse key");

  for (let i = 0; i < CAMPAIGN_USERS; i += 2000) {
    await writeUsers(redis, cfg.cluster.shards, Array.from({ length: 2000 }, (_, k): UserRecord => ({ id: `c${i + k}`, lastActive: now, devices: [{ id: "p", platform: "ios", token: `tok-c-${i + k}-0123456789abcdef` }] })));
  }

  // A steady stream of critical notifications, one every 100 ms, from before the campaign to after it; the urgent shard process is SIGKILLed and restarted on the way.
  const urgent: { id: string; user: string }[] = [];
  let streaming = true;
  const stream = (async () => {
    for (let k = 0; streaming || k < 40; k++) {
      const user = vip[k % vip.length].id;
      const { id } = await notify(nats.nc, { recipients: [user], category: "security", priority: "critical", content: push(`code ${k}`) });
      urgent.push({ id, user });
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  await new Promise((r) => setTimeout(r, 1000));
  // APNs takes 100 ms over each campaign device: with the gateway's 256 requests in flight the campaign needs at least
  // 12,000 / 2,560 per s = 4.7 s at the provider on any machine, so "after the probe" cannot be empty because the campaign was quicker than one probe's trip.
  rec.faults.add({ provider: "apns", prefix: "tok-c-", latencyMs: 100 });
  const campaign = await notify(nats.nc, { segment: "active_30d", category: "marketing", priority: "bulk", content: push("Sale starts") });
  const campaignStatus = () => callApi<CampaignStatus>(nats.nc, API.campaign, { id: campaign.id, action: "status" });
  const ofCampaign = () => rec.deliveries.filter((d) => d.nid === campaign.id && d.status === 200);
  t.ok(await eventually(() => ofCampaign().length > 500, 60_000), "the campaign is delivering");

  // A critical notification sent now reaches its device before the campaign's later sends (counted once the campaign is done).
  const probeSentAt = Date.now();
  const campaignAtProbe = ofCampaign().length;
  const probe = await notify(nats.nc, { recipients: ["vip9"], category: "security", priority: "critical", content: push("sign-in code") });
  t.ok(await eventually(() => rec.deliveries.some((d) => d.nid === probe.id), 30_000), "the critical probe arrives");
  const probeAt = rec.deliveries.find((d) => d.nid === probe.id)!.at;
  t.comment(`probe: ${probeAt - probeSentAt} ms; campaign sends at the sandbox when it was sent: ${campaignAtProbe}`);

  cluster.procs.get("shard@urgent")!.kill("SIGKILL");
  await new Promise((r) => setTimeout(r, 500));
  await cluster.startRole("shard@urgent");

  t.ok(await eventually(async () => (await campaignStatus()).complete, 180_000), "the campaign completes");
  const campaignAfter = ofCampaign().filter((d) => d.at > probeAt).length;
  t.ok(campaignAfter > 0, `campaign sends still arrived after the critical one (${campaignAfter} of ${CAMPAIGN_USERS})`);
  streaming = false;
  await stream;
  const tokenOf = (user: string) => vip.find((v) => v.id === user)!.devices[0].token;
  const arrived = () => new Set(rec.deliveries.filter((d) => d.status === 200).map((d) => `${d.nid}|${d.token}`));
  t.ok(await eventually(() => urgent.every((u) => arrived().has(`${u.id}|${tokenOf(u.user)}`)), 30_000), `every one of ${urgent.length} critical notifications arrived, across the kill`);
  const sent = new Map<string, number>();
  for (const d of rec.deliveries) if (d.status === 200) sent.set(`${d.nid}|${d.token}`, (sent.get(`${d.nid}|${d.token}`) ?? 0) + 1);
  const lost = urgent.filter((u) => !sent.has(`${u.id}|${tokenOf(u.user)}`));
  t.same(lost, [], "no critical notification lost");
  t.same(urgent.filter((u) => (sent.get(`${u.id}|${tokenOf(u.user)}`) ?? 0) > 1), [], "none delivered twice");

  const s = await campaignStatus();
  t.equal(s.counters.sent, CAMPAIGN_USERS, "every campaign recipient was sent to");
  const perToken = ofCampaign().map((d) => d.token);
  t.equal(new Set(perToken).size, CAMPAIGN_USERS, "each device got the campaign");
  t.equal(perToken.length, CAMPAIGN_USERS, "exactly once");
  t.notMatch(cluster.nats.output(), /Violation/, "no process was refused a subject (admission reports, lane connections)");
  t.ok(s.throttle && s.throttle.ms > 0 && s.throttle.min < 1, `admission held the expansion back while urgent traffic ran (${JSON.stringify(s.throttle)})`);
});
