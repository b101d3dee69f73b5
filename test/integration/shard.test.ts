// Shard actors on real NATS and Redis: policy end to end (caps, collapse keys, quiet hours released on time, presence routing, re-check at send time, explain). Ownership hand-over and fencing: test/chaos/shard-kills.test.ts.
import t from "tap";

import { presenceKey } from "../../lib/core/keys.js";
import { shardOf } from "../../lib/core/shard-hash.js";
import type { UserRecord } from "../../lib/core/types.js";
import { updatePreferences, writeUsers } from "../../lib/directory/directory.js";
import { localMinute } from "../../lib/directory/quiet-hours.js";
import { notify, status } from "../../lib/intake/api-client.js";
import { nfxRunner } from "../helpers/cli.js";
import { clientsFor, eventually, startTestCluster } from "../helpers/cluster.js";
import { watchSendBatches } from "../helpers/shards.js";

const dev = (u: string, p: "ios" | "android" = "ios") => ({ id: `${u}-d`, platform: p, token: `tok-${u}-0123456789` });
const user = (id: string, o: Partial<UserRecord> = {}): UserRecord => ({ id, lastActive: Date.now(), devices: [dev(id)], ...o });
const push = (title: string) => ({ push: { title, body: "b" } });

/** Real ms from the cluster's start until the quiet hours below end. */
const QUIET_FOR_MS = 20_000;

t.test("policy end to end", async (t) => {
  // Quiet hours for two users: one policy minute, ending QUIET_FOR_MS after the cluster starts, on a policy clock
  // (NFX_TEST_CLOCK, lib/core/clock.ts) that runs at wall speed, `ahead` ms ahead of the wall (0–60 s), so the release
  // is seen without waiting for a wall-clock minute to pass.
  const t0 = Date.now();
  const windowEndPolicy = Math.ceil((t0 + QUIET_FOR_MS) / 60_000) * 60_000;
  const ahead = windowEndPolicy - QUIET_FOR_MS - t0;
  process.env.NFX_TEST_CLOCK = `${t0 + ahead},1,${t0}`;
  const windowEnd = t0 + QUIET_FOR_MS;
  const cluster = await startTestCluster(t, { own: ["gateway-apns"], overrides: { ingest: { channels: ["push", "inapp"] }, shard: { checkpointMs: 500 } } }).finally(() => delete process.env.NFX_TEST_CLOCK);
  const cfg = cluster.cfg;
  const { nats, redis } = await clientsFor(t, cfg);
  const rec = cluster.sandbox!.recorder;
  const nfx = nfxRunner({ NFX_CONFIG: cluster.configFile });
  const startMin = localMinute("UTC", windowEndPolicy - 60_000);
  const quiet = { start: startMin, end: (startMin + 1) % 1440 };
  await writeUsers(redis, cfg.cluster.shards, [
    user("cap"), user("ck"), user("quiet", { timezone: "UTC", quietHours: quiet }), user("online"), user("late"), user("quiet-bulk", { timezone: "UTC", quietHours: quiet }),
  ]);
  // A presence hash naming a gateway that is gone (crashed without removing its field).
  await redis.hset(presenceKey(shardOf("online", cfg.cluster.shards), "online"), "gone-gateway-1", 1);
  await redis.expire(presenceKey(shardOf("online", cfg.cluster.shards), "online"), 120);

  const watch = watchSendBatches(nats);
  t.teardown(watch.stop);
  const m: { id: string }[] = [];
  for (let i = 0; i < 4; i++) m.push(await notify(nats.nc, { recipients: ["cap"], category: "marketing", priority: "normal", content: push(`m${i}`) }));
  const c1 = await notify(nats.nc, { recipients: ["ck"], category: "transactional", collapseKey: "order-7", content: push("shipped") });
  const c2 = await notify(nats.nc, { recipients: ["ck"], category: "transactional", collapseKey: "order-7", content: push("shipped again") });
  const q = await notify(nats.nc, { recipients: ["quiet"], category: "social", content: push("good morning") });
  // Its expiry (wall clock) comes 5 s after the policy clock's now, well before the quiet hours end.
  const qb = await notify(nats.nc, { recipients: ["quiet-bulk"], category: "social", priority: "bulk", ttlSec: Math.ceil(ahead / 1000) + 5, content: push("expires first") });
  const on = await notify(nats.nc, { recipients: ["online"], category: "social", content: push("you are online") });
  t.ok(Date.now() < windowEnd - 5_000, `notified well inside the quiet hours (${Math.round((windowEnd - Date.now()) / 1000)} s to spare)`);

  const outcome = async (id: string, u: string) => {
    const s = await status(nats.nc, id);
    const l = s.lines.find((x) => x.user === u);
    return l ? `${l.outcome}${l.reason ? `:${l.reason}` : ""}` : "none";
  };
  t.ok(await eventually(async () => (await outcome(m[3].id, "cap")) !== "pending" && (await outcome(m[3].id, "cap")) !== "none"));
  const capOut = await Promise.all(m.map((x) => eventually(async () => (await status(nats.nc, x.id)).complete).then(() => outcome(x.id, "cap"))));
  t.same(capOut.filter((o) => o === "sent").length, 3, "marketing is capped at 3 a day");
  t.equal(capOut[3], "suppressed:frequency_cap", "the fourth is suppressed by the cap");
  t.equal(rec.accepted().filter((d) => d.token === dev("cap").token).length, 3, "the device got exactly 3");

  t.ok(await eventually(async () => (await status(nats.nc, c2.id)).complete));
  t.equal(await outcome(c1.id, "ck"), "sent");
  t.equal(await outcome(c2.id, "ck"), "suppressed:duplicate_collapse_key", "a second notification with the same collapse key is a duplicate");

  t.ok(await eventually(async () => (await outcome(q.id, "quiet")) === "deferred"), "a user in quiet hours is deferred");
  t.ok(await eventually(async () => (await outcome(qb.id, "quiet-bulk")) === "suppressed:expires_in_quiet_hours"), "bulk that would expire first is dropped and counted");

  // Presence: online → in-app instead of push. The key was written by hand (nobody is connected): a stale key, as after a gateway crash.
  t.ok(await eventually(async () => (await status(nats.nc, on.id)).complete), "the presence-routed notification completes");
  t.same(watch.seen.filter((b) => b.subject.startsWith("nfx.send.inapp.")).flatMap((b) => b.sends), [`${on.id}:online:inapp`], "the online user's send went to the in-app stream");
  const onLines = (await status(nats.nc, on.id)).lines;
  t.match(onLines.find((l) => l.channel === "inapp"), { outcome: "fallback", reason: "offline" }, "no gateway holds the user: the in-app dispatcher found no responders and fell back at once");
  t.match(onLines.find((l) => l.channel === "apns"), { outcome: "sent" }, "to push");
  t.equal(rec.accepted().filter((d) => d.token === dev("online").token).length, 1, "once");

  // Re-check at send time: the gateway holds the send while the user opts out.
  const gw = cluster.procs.get("gateway-apns")!;
  gw.kill("SIGSTOP");
  const late = await notify(nats.nc, { recipients: ["late"], category: "transactional", content: push("too late") });
  t.ok(await eventually(async () => (await outcome(late.id, "late")) === "queued"), "decided and queued while the gateway is stopped");
  await updatePreferences(redis, nats.nc, cfg.cluster.shards, "late", { optedOut: true });
  gw.kill("SIGCONT");
  t.ok(await eventually(async () => (await outcome(late.id, "late")) === "suppressed:opted_out", 30_000), "the gateway re-checked and suppressed it");
  t.equal(rec.accepted().filter((d) => d.token === dev("late").token).length, 0, "the user who opted out got nothing");

  // Explain.
  const ex = (await nfx("explain", m[3].id, "cap")).stdout;
  t.match(ex, /frequency_cap\s+suppress:frequency_cap\s+cap 3 per 86400 s reached/, "explain names the rule and the values it saw");
  t.match(ex, /opt_out\s+pass/);
  const exq = (await nfx("explain", q.id, "quiet")).stdout;
  t.match(exq, /quiet_hours\s+defer\s+zone UTC, local time/, "explain shows the deferral");
  const miss = await nfx("explain", q.id, "nobody").then(() => null, (e: { code: number; stderr: string }) => e);
  t.equal(miss?.code, 1, "explain for a non-recipient exits 1");

  // The deferred user is released when the quiet hours end, not before.
  const until = (await status(nats.nc, q.id)).lines.find((l) => l.user === "quiet");
  t.ok(until);
  t.ok(await eventually(async () => (await outcome(q.id, "quiet")) === "sent", 90_000), "released and sent after the quiet hours");
  const got = rec.accepted().filter((d) => d.token === dev("quiet").token);
  t.equal(got.length, 1, "once");
  t.ok(got[0].at >= windowEnd, `not before the window ended (${new Date(got[0].at).toISOString()} >= ${new Date(windowEnd).toISOString()})`);
  t.ok(got[0].at < windowEnd + 15_000, "and soon after it");
  const exr = (await nfx("explain", q.id, "quiet")).stdout;
  t.match(exr, /released after quiet hours/, "explain shows both decisions");
});
