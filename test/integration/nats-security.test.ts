// NATS isolation as a hostile producer and as each role's user would try it: denied subscriptions and publishes, forged reply subjects that change nothing.
import { connect, headers, type NatsConnection } from "@nats-io/transport-node";
import t from "tap";

import { BUCKET, CONSUMER, STREAM } from "../../lib/core/subjects.js";
import { writeUsers } from "../../lib/directory/directory.js";
import { inboxPrefixOf, NATS_ROLE_USERS, natsPassword, type NatsRoleUser, natsUserName, rolePermissions } from "../../lib/infra/nats-auth.js";
import { API_KEY_HEADER } from "../../lib/intake/api-client.js";
import { clientsFor, eventually, startTestCluster } from "../helpers/cluster.js";
import { subjectMatches } from "../helpers/subjects.js";

const KEY = "security-test-key-0123456789";

/** A connection as `user` that records every permission violation the server reports. */
async function connectAs(url: string, user: string, pass: string, inboxPrefix: string): Promise<{ nc: NatsConnection; denied: string[] }> {
  const nc = await connect({ servers: url, user, pass, inboxPrefix, maxReconnectAttempts: 0 });
  const denied: string[] = [];
  void (async () => {
    for await (const s of nc.status()) if (s.type === "error") denied.push(String((s as { error?: Error }).error?.message ?? ""));
  })();
  return { nc, denied };
}

/** True if the server refused publishing to `subject` on this connection. */
async function publishDenied(c: { nc: NatsConnection; denied: string[] }, subject: string): Promise<boolean> {
  const before = c.denied.length;
  c.nc.publish(subject, new Uint8Array(0));
  await c.nc.flush();
  // The server's -ERR precedes its PONG; the status notification reaches the iterator a moment later.
  await new Promise((r) => setTimeout(r, 50));
  return c.denied.slice(before).some((m) => m.includes(`Publish to "${subject}"`));
}

/** True if the server refused subscribing to `subject` on this connection. */
async function subscribeDenied(c: { nc: NatsConnection; denied: string[] }, subject: string): Promise<boolean> {
  const before = c.denied.length;
  const sub = c.nc.subscribe(subject);
  await c.nc.flush();
  await new Promise((r) => setTimeout(r, 50));
  sub.unsubscribe();
  return c.denied.slice(before).some((m) => m.includes(`Subscription to "${subject}"`));
}

t.test("producers are isolated and role users are held to their tables", async (t) => {
  const cluster = await startTestCluster(t, {
    roles: ["ingest", "router", "shard", "gateway-apns", "tracker"],
    overrides: { apiKeys: [{ name: "producer-app", key: KEY, scopes: ["send", "read"] }] },
  });
  const cfg = cluster.cfg;
  const { nats, redis } = await clientsFor(t, cfg);
  await writeUsers(redis, cfg.cluster.shards, [{ id: "ann", devices: [{ id: "ann-phone", platform: "ios", token: "a0a0a0a0" }] }]);
  const prod = await connectAs(cluster.nats.url, "producer", natsPassword(cfg.nats.secret, "producer"), inboxPrefixOf({ producer: "producer" }));
  t.teardown(() => prod.nc.close());

  // A producer's ordinary request works through the import, and is answered on its own inbox.
  const h = headers();
  h.set(API_KEY_HEADER, KEY);
  const reply = await prod.nc.request("nfx.api.notify", JSON.stringify({ recipients: ["ann"], category: "transactional", content: { push: { title: "Hi", body: "there" } } }), { timeout: 5000, headers: h });
  const { id } = JSON.parse(reply.string()) as { id: string };
  t.match(id, /^n_/, "a producer's notify through the service import is answered with an id");
  t.ok(await eventually(() => cluster.sandbox!.recorder.accepted().some((d) => d.nid === id)), "and delivered");

  for (const s of ["_INBOX.>", "_INBOX_ingest.>", "_INBOX_admin.>", "_R_.>", ">", "nfx.>", "nfx.send.apns.high", "nfx.rcpt.>", "$JS.>", "$KV.>", "_INBOX_other.>"]) {
    t.ok(await subscribeDenied(prod, s), `a producer may not subscribe to ${s}`);
  }
  t.notOk(await subscribeDenied(prod, "_INBOX_producer.x"), "but may subscribe to its own inbox prefix");
  for (const s of ["nfx.ext.api.notify", "nfx.intake.high.x", "$JS.API.STREAM.PURGE.NFX_RECEIPTS", "$KV.nfx-campaigns.x", "nfx.live.ann"]) {
    t.ok(await publishDenied(prod, s), `a producer may not publish to ${s}`);
  }

  // Forged reply subjects: from the producer account (mapped by the import) and from inside nfx's account (refused by ingest).
  const snapshot = async (): Promise<string> => {
    const parts: string[] = [];
    for (const s of [STREAM.receipts, STREAM.intake, STREAM.trails]) {
      const i = await nats.jsm.streams.info(s);
      parts.push(`${s}:${i.state.messages}:${i.state.first_seq}:${i.state.last_seq}`);
    }
    const kv = await nats.kvm.open(BUCKET.campaigns);
    const e = await kv.get("forged");
    parts.push(`kv:${e?.revision ?? 0}`);
    return parts.join(" ");
  };
  await t.resolves(nats.kvm.open(BUCKET.campaigns).then((kv) => kv.put("forged", "original")));
  t.ok(await eventually(async () => (await nats.jsm.streams.info(STREAM.receipts)).state.messages > 0), "receipts exist before the attack");
  const before = await snapshot();
  const forged = ["$JS.API.STREAM.PURGE.NFX_RECEIPTS", "$JS.API.STREAM.PURGE.NFX_INTAKE", "$JS.API.STREAM.PURGE.NFX_TRAILS", "$KV.nfx-campaigns.forged"];
  for (const r of forged) {
    prod.nc.publish("nfx.api.status", JSON.stringify({ id }), { reply: r, headers: h });
    nats.nc.publish("nfx.api.status", JSON.stringify({ id }), { reply: r });
  }
  await prod.nc.flush();
  await nats.nc.flush();
  await new Promise((r) => setTimeout(r, 1000));
  t.equal(await snapshot(), before, "requests naming $JS.API.… or $KV.… as reply subject change no stream and no KV entry");

  // Each role's user: denied everything destructive outside its table; allowed its own outputs.
  const destructive = [
    `$JS.API.STREAM.PURGE.${STREAM.receipts}`, `$JS.API.STREAM.PURGE.${STREAM.intake}`, `$JS.API.STREAM.DELETE.${STREAM.intake}`,
    `$JS.API.STREAM.CREATE.EVIL`, `$JS.API.STREAM.UPDATE.${STREAM.receipts}`, `$JS.API.CONSUMER.DELETE.${STREAM.receipts}.tracker`,
    `$JS.API.CONSUMER.DELETE.${STREAM.intake}.${CONSUMER.router("critical")}`, `$JS.API.CONSUMER.DELETE.${STREAM.send("apns")}.${CONSUMER.gateway("apns", "critical")}`,
    `$JS.API.STREAM.MSG.DELETE.${STREAM.intake}`, "nfx.api.notify", "$KV.nfx-idempotency.x",
  ];
  // An output of each role's own that disturbs nothing (a core subject, or a stream subject no stage reads).
  const own: Record<NatsRoleUser, string> = {
    ingest: "nfx.dir.changed.0", scheduler: "nfx.fan.high.9999", router: "nfx.fan.high.9999", campaign: "nfx.fan.bulk.9999", shard: "nfx.trail.probe.0",
    "gateway-apns": "nfx.dir.changed.0", "gateway-fcm": "nfx.dir.changed.0", "gateway-email": "nfx.dir.changed.0", "gateway-sms": "nfx.dir.changed.0",
    "gateway-webhook": "nfx.dlq.webhook", "ws-gateway": "nfx.live.probe", tracker: "$KV.nfx-counters.probe",
  };
  for (const role of NATS_ROLE_USERS) {
    const user = natsUserName(role);
    const c = await connectAs(cluster.nats.url, user, natsPassword(cfg.nats.secret, user), inboxPrefixOf(role));
    const table = rolePermissions(role);
    const refused: string[] = [];
    // Exceptions in the table: ingest writes idempotency keys; the tracker rewinds its own consumer; a gateway recreates its own lane consumers.
    const mayDo = (s: string): boolean =>
      (role === "ingest" && s.startsWith("$KV.nfx-idempotency")) || (role === "tracker" && s.endsWith(".tracker")) || (role === "gateway-apns" && s.endsWith(`.${CONSUMER.gateway("apns", "critical")}`));
    for (const s of destructive) if (!mayDo(s) && !(await publishDenied(c, s))) refused.push(s);
    t.same(refused, [], `${user}: every publish outside its table is denied`);
    // Outputs of other stages: a gateway may not publish fan chunks, the router may not publish sends, nobody but the tracker writes counters.
    const foreign = ["nfx.fan.high.0", "nfx.send.fcm.high", "$KV.nfx-counters.x", "nfx.intake.high.x"].filter((s) => !table.pub.some((p) => subjectMatches(p, s)));
    for (const s of foreign) t.ok(await publishDenied(c, s), `${user} may not publish to ${s}`);
    t.notOk(await publishDenied(c, own[role]), `${user} may publish its own output ${own[role]}`);
    t.ok(await subscribeDenied(c, "_INBOX.>"), `${user} may not read other identities' inboxes`);
    await c.nc.close();
  }
});
