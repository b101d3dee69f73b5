// The whole path on real nats-server and redis-server, every role its own process: request -> ingest -> router -> shard -> gateways -> sandboxes -> status.
import t from "tap";

import { STREAM } from "../../lib/core/subjects.js";
import { writeUsers } from "../../lib/directory/directory.js";
import { ApiError, notify, status } from "../../lib/intake/api-client.js";
import type { NotificationStatus } from "../../lib/tracking/status.js";
import { nfxRunner } from "../helpers/cli.js";
import { clientsFor, eventually, startTestCluster } from "../helpers/cluster.js";


t.test("3 users, 5 devices, one opted out: exactly the 4 expected sends arrive, once each", async (t) => {
  const cluster = await startTestCluster(t);
  const cfg = cluster.cfg;
  const { nats, redis } = await clientsFor(t, cfg);
  await writeUsers(redis, cfg.cluster.shards, [
    { id: "alice", devices: [{ id: "alice-iphone", platform: "ios", token: "a11ce0" }, { id: "alice-pixel", platform: "android", token: "fa11ce" }] },
    { id: "bob", devices: [{ id: "bob-ipad", platform: "ios", token: "b0b0" }, { id: "bob-galaxy", platform: "android", token: "fb0b" }] },
    { id: "carol", optedOut: true, devices: [{ id: "carol-iphone", platform: "ios", token: "ca401" }] },
  ]);

  const { id } = await notify(nats.nc, {
    recipients: ["alice", "bob", "carol"],
    priority: "high",
    category: "transactional", content: { push: { title: "Sale starts", body: "Everything 20% off until midnight", data: { sale: "s1" } } },
  });
  t.match(id, /^n_[0-9a-z]{26}$/, "the caller gets an id back");

  let s: NotificationStatus | undefined;
  t.ok(await eventually(async () => (s = await status(nats.nc, id)).complete), "every send reaches a final outcome");

  const rec = cluster.sandbox!.recorder;
  // Give a stray duplicate time to show up before counting.
  await new Promise((r) => setTimeout(r, 500));
  t.same(rec.countsByDevice("apns"), { a11ce0: 1, b0b0: 1 }, "APNs got alice's and bob's iPhone/iPad once each, nothing for carol");
  t.same(rec.countsByDevice("fcm"), { fa11ce: 1, fb0b: 1 }, "FCM got alice's and bob's Android devices once each");
  for (const d of rec.accepted()) {
    t.equal(d.title, "Sale starts", `${d.provider} ${d.token}: title`);
    t.equal(d.body, "Everything 20% off until midnight", `${d.provider} ${d.token}: body`);
    t.equal(d.nid, id, `${d.provider} ${d.token}: carries the notification id`);
  }
  const apnsReq = rec.accepted("apns")[0];
  t.equal(apnsReq.headers["apns-topic"], cfg.gateways.apns.apps[0].topic, "APNs request names the topic");
  t.equal(apnsReq.headers["apns-priority"], "10", "high priority maps to apns-priority 10");
  t.equal((rec.accepted("fcm")[0].data as { data: Record<string, string> }).data.sale, "s1", "FCM data carries the custom keys");

  t.same(s!.counts, { accepted: 3, sent: 4, delivered: 0, failed: 0, expired: 0, queued: 0, suppressed: 1, deferred: 0, digested: 0, cancelled: 0, fallback: 0, shed: 0, shedReasons: {}, opened: 0, clicked: 0, pending: 0 }, "status counts");
  t.same(
    s!.lines.map((l) => [l.user, l.channel ?? "-", l.device ?? "-", l.outcome, l.reason ?? ""]),
    [
      ["alice", "apns", "alice-iphone", "sent", ""],
      ["alice", "fcm", "alice-pixel", "sent", ""],
      ["bob", "fcm", "bob-galaxy", "sent", ""],
      ["bob", "apns", "bob-ipad", "sent", ""],
      ["carol", "-", "-", "suppressed", "opted_out"],
    ],
    "status has one line per device and the opted-out user",
  );

  const cli = await nfxRunner({ NFX_CONFIG: cluster.configFile })("status", id);
  t.match(cli.stdout, /accepted=3 sent=4 delivered=0 failed=0 expired=0 queued=0 suppressed=1 deferred=0 cancelled=0 fallback=0 shed=0 pending=0\s+complete/, "`nfx status` prints the same counts");
  for (const dev of ["alice-iphone", "alice-pixel", "bob-ipad", "bob-galaxy"]) t.match(cli.stdout, new RegExp(`${dev}\\s+sent`), `\`nfx status\` shows ${dev} sent`);
  t.match(cli.stdout, /carol\s+-\s+-\s+suppressed\s+opted_out/, "`nfx status` shows carol suppressed as opted out");
});

t.test("bad requests get a coded error naming the field and store nothing; `nfx send` works", async (t) => {
  const cluster = await startTestCluster(t);
  const cfg = cluster.cfg;
  const { nats, redis } = await clientsFor(t, cfg);
  const stored = async (): Promise<number> => (await nats.jsm.streams.info(STREAM.intake)).state.messages;
  const before = await stored();
  const cases: [unknown, string, string][] = [
    [{ recipients: [], category: "transactional", content: { push: { title: "t", body: "b" } } }, "NFX_ERR_REQUEST_INVALID", "recipients"],
    [{ recipients: ["u 1"], category: "transactional", content: { push: { title: "t", body: "b" } } }, "NFX_ERR_REQUEST_INVALID", "recipients.0"],
    [{ recipients: ["u1"], category: "transactional", content: { push: { title: "", body: "b" } } }, "NFX_ERR_REQUEST_INVALID", "content.push.title"],
    [{ recipients: ["u1"], category: "transactional", content: { push: { title: "t", body: "b" } }, priority: "urgent" }, "NFX_ERR_REQUEST_INVALID", "priority"],
    [{ recipients: ["u1"], category: "transactional", content: { push: { title: "t", body: "b" } }, colour: "red" }, "NFX_ERR_REQUEST_INVALID", "colour"],
  ];
  for (const [body, code, field] of cases) {
    const err = await notify(nats.nc, body as Record<string, unknown>).then(() => null, (e: unknown) => e);
    t.type(err, ApiError, `${field}: rejected`);
    t.equal((err as ApiError).code, code, `${field}: code`);
    t.equal((err as ApiError).field, field, `${field}: names the field`);
    t.match((err as ApiError).message, field, `${field}: message names the field`);
  }
  const raw = await nats.nc.request("nfx.api.notify", new TextEncoder().encode("{not json"), { timeout: 5000 });
  t.equal(raw.headers?.get("Nfx-Error"), "NFX_ERR_REQUEST_UNDECODABLE", "a body that is not JSON is refused with its own code");
  t.equal(await stored(), before, "nothing was stored for any rejected request");

  await writeUsers(redis, cfg.cluster.shards, [{ id: "dave", devices: [{ id: "dave-pixel", platform: "android", token: "fdave" }] }]);
  const nfx = nfxRunner({ NFX_CONFIG: cluster.configFile });
  const sent = await nfx("send", "--to", "dave", "--title", "Hi", "--body", "From the CLI", "--priority", "critical");
  const id = sent.stdout.trim();
  t.match(id, /^n_/, "`nfx send` prints the id");
  t.ok(await eventually(async () => (await status(nats.nc, id)).complete), "the CLI's notification completes");
  t.same(cluster.sandbox!.recorder.countsByDevice("fcm"), { fdave: 1 }, "and reached dave's device once");
  const missing = await nfx("status", "n_00000000000000000000000000").then(() => null, (e: { stderr: string; code: number }) => e);
  t.equal(missing?.code, 1, "`nfx status` of an unknown id exits 1");
  t.match(missing?.stderr ?? "", /NFX_ERR_NOT_FOUND/, "and says it was not found");
});
