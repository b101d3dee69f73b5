// A 10,000-recipient campaign with mixed outcomes injected at the sandboxes (success, 410/404, 429, an outage): every counter `nfx status` prints equals what the sandboxes and the dead-letter stream recorded.
import t from "tap";

import { total } from "../../lib/campaign/counters.js";
import { decode } from "../../lib/core/codec.js";
import { STREAM } from "../../lib/core/subjects.js";
import type { DeadLetter, UserRecord } from "../../lib/core/types.js";
import { writeUsers } from "../../lib/directory/directory.js";
import { readStored } from "../../lib/flow/stream-read.js";
import { listProcesses } from "../../lib/infra/processes.js";
import { notify } from "../../lib/intake/api-client.js";
import type { NotificationStatus } from "../../lib/tracking/status.js";
import { nfxRunner } from "../helpers/cli.js";
import { clientsFor, eventually, startTestCluster } from "../helpers/cluster.js";

const N = 10_000;

t.test("10,000-recipient campaign, mixed provider outcomes: counters equal the sandboxes and the DLQ exactly", async (t) => {
  // Breakers open after 1,000 consecutive failed requests (not 50): the 5% of devices in a permanent outage come back in retry
  // batches of their own, and with the default they would hold the breaker open for everyone, the run taking minutes.
  const breaker = { failures: 1000, halfOpenAfterMs: 1000 };
  const cluster = await startTestCluster(t, {
    overrides: {
      campaign: { chunkSize: 1000 },
      gateways: { retry: { maxAttempts: 4, baseMs: 50, maxMs: 400, quotaMs: 0 }, apns: { apps: [{ breaker }] }, fcm: { apps: [{ breaker }] } },
    },
  });
  const cfg = cluster.cfg;
  const { nats, redis } = await clientsFor(t, cfg);
  const rec = cluster.sandbox!.recorder;
  // Per user one device: iOS or Android; by token prefix 5% gone (APNs 410 / FCM 404 UNREGISTERED), 10% rate limited half the time, 5% in an outage; 2% opted out.
  const kind = (i: number): string => (i % 20 === 0 ? "gone" : i % 20 === 1 || i % 20 === 2 ? "rl" : i % 20 === 3 ? "down" : "ok");
  const users: UserRecord[] = Array.from({ length: N }, (_, i) => ({
    id: `u${i}`,
    lastActive: Date.now(),
    optedOut: i % 50 === 7,
    devices: [{ id: `d${i}`, platform: i % 2 ? "android" : "ios", token: `${kind(i)}-${i % 2 ? "fcm" : "apns"}-${String(i).padStart(6, "0")}` }],
  }));
  await writeUsers(redis, cfg.cluster.shards, users);
  // The outage answers APNs 503 and FCM 500: firebase-admin retries a 503 inside the SDK (0/1/2/4 s), unseen by nfx, so the
  // sandbox would count answers nfx never got; a 500 reaches nfx at once. (FCM's 429 waits quotaMs, here 0, before a retry.)
  for (const provider of ["apns", "fcm"] as const) {
    rec.faults.add({ provider, prefix: "rl-", errors: [{ code: "429", rate: 0.5, retryAfterSec: 0 }] });
    rec.faults.add({ provider, prefix: "down-", outage: { forMs: 600_000 }, outageCode: provider === "fcm" ? "500" : "503" });
  }
  // And all of FCM goes down for two seconds, early in the run.
  rec.faults.add({ provider: "fcm", outage: { startsInMs: 1500, forMs: 2000 }, outageCode: "500" });

  const { id } = await notify(nats.nc, { segment: "all", category: "transactional", content: { push: { title: "Order update", body: "Your parcel is on its way" } } });
  const nfx = nfxRunner({ NFX_CONFIG: cluster.configFile });
  const status = async () => JSON.parse((await nfx("status", id, "--json")).stdout) as NotificationStatus;
  t.ok(await eventually(async () => (await status()).complete, 180_000), "the campaign completes");
  await new Promise((r) => setTimeout(r, 1000)); // a straggler or duplicate would land now
  const s = await status();
  const c = s.campaign!.counters;

  // What the sandboxes recorded for this notification, per device token.
  const mine = rec.deliveries.filter((d) => d.nid === id);
  const accepted = mine.filter((d) => d.status >= 200 && d.status < 300);
  const acceptedTokens = new Set(accepted.map((d) => d.token));
  const gone = new Set(mine.filter((d) => d.status === 410 || d.status === 404).map((d) => d.token));
  const retryable = mine.filter((d) => d.status === 429 || d.status >= 500).length;
  // What the dead-letter stream recorded for it.
  const dead: DeadLetter[] = [];
  await readStored(nats, STREAM.dlq, (m) => {
    const dl = decode<DeadLetter>(m.data);
    if (dl.notification.id === id) dead.push(dl);
  });
  const optedOut = users.filter((u) => u.optedOut).length;
  const eligible = users.filter((u) => !u.optedOut);

  t.equal(accepted.length, acceptedTokens.size, "no device was accepted twice by a sandbox");
  t.equal(c.accepted, N, "accepted: every segment member");
  t.equal(c.decided, N, "decided: every member once");
  t.same(c.suppressed, { opted_out: optedOut }, "suppressed: the opted-out users, by reason");
  t.equal(c.sent, acceptedTokens.size, `sent equals the sandboxes' accepted devices (${acceptedTokens.size})`);
  t.equal(s.counts.sent, c.sent, "nfx status prints the same sent");
  const goneReasons = Object.entries(c.failed).filter(([r]) => !r.startsWith("dead_letter:")).reduce((a, [, v]) => a + v, 0);
  t.equal(goneReasons, gone.size, `failed for gone tokens equals the sandboxes' 410/404 answers (${gone.size})`);
  const deadReasons = Object.entries(c.failed).filter(([r]) => r.startsWith("dead_letter:")).reduce((a, [, v]) => a + v, 0);
  t.equal(deadReasons, dead.length, `failed as dead letters equals the dead-letter stream (${dead.length})`);
  t.ok(dead.length >= eligible.filter((_, i) => kind(Number(eligible[i].id.slice(1))) === "down").length, "every device in the outage ended in the dead-letter stream");
  t.equal(s.counts.failed, total(c.failed), "nfx status prints the same failed");
  t.equal(c.sent + total(c.failed), eligible.length, "every eligible device has exactly one final outcome");
  t.equal(s.counts.queued, 0, "nothing outstanding");
  t.equal(c.expired, 0, "nothing expired");
  t.equal(c.cancelled + c.cancelledSends, 0, "nothing cancelled");
  // Every retryable answer either scheduled a retry or, on the last attempt, dead-lettered the send.
  const procs = (await listProcesses(nats)).filter((p) => p.roles.some((r) => r === "gateway-apns" || r === "gateway-fcm"));
  let retries = 0;
  for (const p of procs) {
    const text = await (await fetch(p.metricsUrl!)).text();
    for (const m of text.matchAll(/^nfx_gateway_retries_total\{[^}]*\} (\d+)$/gm)) retries += Number(m[1]);
  }
  t.equal(retries + dead.length, retryable, `retries (${retries}) plus dead letters equal the sandboxes' 429/5xx answers (${retryable})`);
  const printed = (await nfx("status", id)).stdout;
  t.match(printed, new RegExp(`sent ${c.sent}, delivered 0, failed ${total(c.failed)}`), "the text report prints the same numbers");
});
