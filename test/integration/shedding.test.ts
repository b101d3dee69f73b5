// Shedding under overload: a bulk category with `overload: "shed"` sheds what it cannot deliver within `maxDelaySec`, at the shard actor and at a gateway, with receipts whose count equals the counters; critical is never shed.
import t from "tap";

import { total } from "../../lib/campaign/counters.js";
import type { UserRecord } from "../../lib/core/types.js";
import { writeUsers } from "../../lib/directory/directory.js";
import { listProcesses } from "../../lib/infra/processes.js";
import { notify, status } from "../../lib/intake/api-client.js";
import { nfxRunner } from "../helpers/cli.js";
import { clientsFor, eventually, startTestCluster } from "../helpers/cluster.js";

const N = 300;
const push = (title: string) => ({ push: { title, body: "b" } });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test("a bulk category with overload: shed sheds under a forced overload, with receipts equal to the counters; critical still goes", async (t) => {
  const cluster = await startTestCluster(t, {
    own: ["shard", "gateway-apns", "gateway-fcm"],
    overrides: {
      categories: {
        promo: { defaultPriority: "bulk", quietHours: false, overload: "shed", maxDelaySec: 2 },
        alerts: { defaultPriority: "critical", quietHours: false },
      },
    },
  });
  const cfg = cluster.cfg;
  const { nats, redis } = await clientsFor(t, cfg);
  const rec = cluster.sandbox!.recorder;
  const now = Date.now();
  const users: UserRecord[] = Array.from({ length: N }, (_, i) => ({ id: `u${i}`, lastActive: now, devices: [{ id: `d${i}`, platform: i % 2 ? "android" : "ios", token: `tok-${i % 2 ? "fcm" : "apns"}-${i}` }] }));
  await writeUsers(redis, cfg.cluster.shards, users);
  const recipients = users.map((u) => u.id);
  const reached = (id: string) => rec.deliveries.filter((d) => d.nid === id).length;

  // Overload at the shard stage: nobody decides while the shard actor is down, so the bulk sends outlive their 2 s max delay.
  const sh = cluster.procs.get("shard")!;
  await new Promise<void>((r) => (sh.once("exit", () => r()), sh.kill("SIGTERM")));
  const bulk = await notify(nats.nc, { recipients, category: "promo", content: push("bulk") });
  const camp = await notify(nats.nc, { segment: "all", category: "promo", content: push("campaign") });
  const crit = await notify(nats.nc, { recipients, category: "alerts", content: push("critical") });
  await sleep(2500);
  await cluster.startRole("shard");

  t.ok(await eventually(async () => (await status(nats.nc, bulk.id)).complete, 60_000), "the bulk notification completes");
  const s = await status(nats.nc, bulk.id);
  const shed = s.lines.filter((l) => l.outcome === "shed");
  t.equal(shed.length, N, "every recipient shed");
  t.ok(shed.every((l) => l.reason === "max_delay" && l.device === undefined), "at the shard, for max_delay");
  t.equal(s.counts.shed, shed.length, "the shed counter equals the shed receipt lines");
  t.same(s.counts.shedReasons, { max_delay: N }, "by reason");
  t.equal(s.counts.sent + s.counts.suppressed + s.counts.failed + s.counts.queued, 0, "nothing else");

  t.ok(await eventually(async () => (await status(nats.nc, camp.id)).complete, 60_000), "the campaign completes");
  const c = (await status(nats.nc, camp.id)).campaign!.counters;
  t.equal(c.decided, N, "every member decided once");
  t.same(c.shed, { max_delay: N }, "every member shed once, counted once");
  t.equal(c.queued + c.sent + total(c.suppressed), 0, "nothing queued, sent or suppressed");

  t.ok(await eventually(async () => (await status(nats.nc, crit.id)).complete, 60_000), "the critical notification completes");
  const cs = await status(nats.nc, crit.id);
  t.equal(cs.counts.sent, N, "critical is never shed: every recipient sent");
  t.equal(rec.accepted().filter((d) => d.nid === crit.id).length, N, "and it arrived at the sandboxes");
  t.equal(reached(bulk.id) + reached(camp.id), 0, "nothing shed reached a provider");

  const nfx = nfxRunner({ NFX_CONFIG: cluster.configFile });
  t.match((await nfx("explain", bulk.id, "u7")).stdout, /overload\s+shed\s+shed \(max_delay\)/, "nfx explain shows the shed step");
  t.match((await nfx("status", bulk.id)).stdout, `shed=${N}`, "nfx status prints it");
  const shardProc = (await listProcesses(nats)).filter((p) => p.roles.includes("shard"));
  let counted = 0;
  // The stopped shard process may still be listed: its metrics URL no longer answers.
  for (const p of shardProc) {
    const text = await fetch(p.metricsUrl!).then((r) => r.text(), () => "");
    for (const m of text.matchAll(/^nfx_shed_total\{[^}]*stage="shard"[^}]*\} (\d+)$/gm)) counted += Number(m[1]);
  }
  t.equal(counted, 2 * N, "nfx_shed_total counts them at the shard stage");

  // Overload at the gateways: decided in time, then held at stopped gateways past the max delay; shed there with no provider call.
  const gws = (["gateway-apns", "gateway-fcm"] as const).map((r) => cluster.procs.get(r)!);
  for (const g of gws) g.kill("SIGSTOP");
  const late = await notify(nats.nc, { recipients: recipients.slice(0, 50), category: "promo", content: push("late") });
  t.ok(await eventually(async () => (await status(nats.nc, late.id)).counts.queued === 50, 20_000), "decided in time and queued");
  await sleep(2500);
  for (const g of gws) g.kill("SIGCONT");
  t.ok(await eventually(async () => (await status(nats.nc, late.id)).complete, 60_000), "the held sends settle");
  const ls = await status(nats.nc, late.id);
  const lshed = ls.lines.filter((l) => l.outcome === "shed");
  t.equal(lshed.length, 50, "every held send shed");
  t.ok(lshed.every((l) => l.reason === "max_delay" && l.device !== undefined && (l.channel === "apns" || l.channel === "fcm")), "at the gateway, per device, for max_delay");
  t.equal(ls.counts.shed, lshed.length, "the shed counter equals the shed lines");
  t.equal(ls.counts.sent, 0, "none sent");
  t.equal(reached(late.id), 0, "no provider call for a shed send");
});
