// Dead letters: a send that fails through every retry lands in NFX_DLQ with its context; replay sends it once; purge drops it.
import t from "tap";

import { readCounters } from "../../lib/campaign/counters.js";
import { BUCKET } from "../../lib/core/subjects.js";
import { writeUsers } from "../../lib/directory/directory.js";
import { notify, status } from "../../lib/intake/api-client.js";
import { nfxRunner } from "../helpers/cli.js";
import { clientsFor, eventually, startTestCluster } from "../helpers/cluster.js";

t.test("dead letters: list, show, replay once, purge", async (t) => {
  const cluster = await startTestCluster(t);
  const cfg = cluster.cfg;
  const { nats, redis } = await clientsFor(t, cfg);
  const nfx = nfxRunner({ NFX_CONFIG: cluster.configFile });
  const rec = cluster.sandbox!.recorder;
  await writeUsers(redis, cfg.cluster.shards, [{ id: "dora", devices: [{ id: "dora-iphone", platform: "ios", token: "down-a1a1a1" }, { id: "dora-pixel", platform: "android", token: "fine-f1f1f1" }] }]);
  rec.faults.add({ provider: "apns", prefix: "down-", errors: [{ code: "503", rate: 1 }] }); // APNs answers 503 ServiceUnavailable for this token

  const { id } = await notify(nats.nc, { recipients: ["dora"], category: "transactional", content: { push: { title: "Receipt", body: "Paid" } } });
  t.ok(await eventually(async () => (await status(nats.nc, id)).complete, 30_000), "the notification finishes");
  const line = (await status(nats.nc, id)).lines.find((l) => l.device === "dora-iphone")!;
  t.same([line.outcome, line.reason], ["failed", "dead_letter:ServiceUnavailable"], "the iPhone send failed into the dead-letter stream");
  const tries = rec.deliveries.filter((d) => d.token === "down-a1a1a1").length;
  t.equal(tries, cfg.gateways.retry.maxAttempts, `APNs was tried ${tries} times (gateways.retry.maxAttempts) before giving up`);

  const list = (await nfx("dlq", "list")).stdout;
  t.match(list, /apns\s+n_\S+\s+dora\/dora-iphone\s+ServiceUnavailable after 5 attempts/, "`nfx dlq list` shows it");
  const seq = /^\s*(\d+)\s/m.exec(list)![1];
  const shown = JSON.parse((await nfx("dlq", "show", seq)).stdout) as { notification: { id: string; content: { push: { title: string } } }; send: { token: string; user: string } };
  t.same([shown.notification.id, shown.send.token, shown.send.user, shown.notification.content.push.title], [id, "down-a1a1a1", "dora", "Receipt"], "`show` has the full context");

  rec.faults.remove({ provider: "apns" }); // APNs is back
  t.match((await nfx("dlq", "replay", seq)).stdout, `replayed ${seq}`);
  t.ok(await eventually(async () => (await status(nats.nc, id)).lines.find((l) => l.device === "dora-iphone")?.outcome === "sent", 20_000), "the replay delivered it");
  t.equal(rec.accepted("apns").filter((d) => d.token === "down-a1a1a1").length, 1, "once");
  t.match((await nfx("dlq", "list")).stdout, "0 dead letter(s)", "and it left the stream");
  const again = await nfx("dlq", "replay", seq).then(() => null, (e: { stderr: string }) => e);
  t.match(again?.stderr ?? "", "NFX_ERR_NOT_FOUND", "a second replay of the same letter finds nothing");
  t.ok(await eventually(async () => (await readCounters(await nats.kvm.open(BUCKET.counters), id)).sent === 2), "counters: both sends delivered");
  t.equal((await readCounters(await nats.kvm.open(BUCKET.counters), id)).failed["dead_letter:ServiceUnavailable"] ?? 0, 0, "counters: the replay moved the send from failed");

  // Purge: a dead letter dropped without sending.
  rec.faults.add({ provider: "apns", prefix: "down-", errors: [{ code: "503", rate: 1 }] });
  const second = await notify(nats.nc, { recipients: ["dora"], category: "transactional", content: { push: { title: "Again", body: "x" } } });
  t.ok(await eventually(async () => (await status(nats.nc, second.id)).complete, 30_000));
  t.match((await nfx("dlq", "list")).stdout, "1 dead letter(s)");
  rec.faults.remove({ provider: "apns" });
  t.match((await nfx("dlq", "purge", "--all")).stdout, "purged 1 dead letter(s)");
  t.match((await nfx("dlq", "list")).stdout, "0 dead letter(s)");
  t.equal(rec.accepted("apns").filter((d) => d.nid === second.id).length, 0, "the purged letter was never sent");
});
