// Bulkheads: APNs at 5 s latency and 50% 503 must not slow FCM — FCM's rate stays within 10% of its baseline from the same test, and no FCM send waits on APNs.
import t from "tap";

import type { UserRecord } from "../../lib/core/types.js";
import { writeUsers } from "../../lib/directory/directory.js";
import { notify } from "../../lib/intake/api-client.js";
import { clientsFor, eventually, startTestCluster } from "../helpers/cluster.js";

const USERS = 2500;
const ROUNDS = 3;

t.test("a sick APNs does not slow FCM", async (t) => {
  // APNs' breaker opens in the sick rounds (503s); it tries again after 1 s instead of the default 10 s, so each sick round's
  // APNs tail (which the round waits for, to keep it out of the next round's measurement) ends about 9 s sooner.
  const cluster = await startTestCluster(t, { overrides: { gateways: { apns: { apps: [{ breaker: { halfOpenAfterMs: 1000 } }] } } } });
  const { nats, redis } = await clientsFor(t, cluster.cfg);
  const rec = cluster.sandbox!.recorder;

  /**
   * One round: a notification to USERS fresh users with an iPhone and an
   * Android phone each; FCM's delivery rate and slowest send. `sick` makes
   * APNs answer 5 s late and 503 half the time while FCM's side runs; the
   * round ends only once APNs has taken every send of it (retried after the
   * fault is lifted), so no round's APNs tail lands in the next round's
   * measurement.
   */
  const round = async (tag: string, sick = false): Promise<{ rate: number; slowestMs: number }> => {
    const users: UserRecord[] = Array.from({ length: USERS }, (_, i) => ({
      id: `${tag}-${i}`,
      devices: [{ id: "iphone", platform: "ios", token: `${tag}-i-${i}` }, { id: "pixel", platform: "android", token: `${tag}-a-${i}` }],
    }));
    await writeUsers(redis, cluster.cfg.cluster.shards, users);
    const before = rec.acceptedCount.fcm;
    const apnsBefore = rec.acceptedCount.apns;
    const fault = sick ? rec.faults.add({ provider: "apns", latencyMs: 5000, errors: [{ code: "503", rate: 0.5 }] }) : undefined;
    const t0 = Date.now();
    const { id } = await notify(nats.nc, { recipients: users.map((u) => u.id), category: "transactional", priority: "high", content: { push: { title: "Sale", body: tag } } });
    // Polled on the recorder's O(1) counter: scanning every delivery each poll would slow the sandbox more in later rounds.
    await eventually(() => rec.acceptedCount.fcm - before >= USERS, 60_000);
    const got = rec.accepted("fcm").filter((d) => d.nid === id);
    t.equal(got.length, USERS, `${tag}: every FCM send delivered, once`);
    const last = Math.max(...got.map((d) => d.at));
    if (sick) {
      rec.faults.remove({ id: fault });
    }
    t.ok(await eventually(() => rec.acceptedCount.apns - apnsBefore >= USERS, 60_000), `${tag}: APNs took every send of the round in the end`);
    return { rate: USERS / ((last - t0) / 1000), slowestMs: last - t0 };
  };

  const healthy: number[] = [];
  const sick: number[] = [];
  let slowestSick = 0;
  await round("warm"); // JIT, connection pools and consumers warmed before anything is measured
  for (let r = 0; r < ROUNDS; r++) {
    healthy.push((await round(`h${r}`)).rate);
    const s = await round(`s${r}`, true);
    sick.push(s.rate);
    slowestSick = Math.max(slowestSick, s.slowestMs);
  }
  const median = (l: number[]): number => [...l].sort((a, b) => a - b)[Math.floor(l.length / 2)];
  const base = median(healthy);
  const during = median(sick);
  t.comment(`FCM sends/s with APNs healthy ${healthy.map(Math.round).join(", ")}; with APNs at 5 s and 50% 503 ${sick.map(Math.round).join(", ")}`);
  t.ok(during >= base * 0.9, `FCM's median rate with APNs sick (${Math.round(during)}/s) is within 10% of its baseline (${Math.round(base)}/s) or better`);
  t.ok(slowestSick < 5000, `no FCM send waited on APNs: the whole FCM side of each sick round took at most ${slowestSick} ms, less than APNs' 5 s latency`);
  t.ok(rec.deliveries.some((d) => d.provider === "apns" && d.status === 503), "APNs really was failing in the sick rounds");
});
