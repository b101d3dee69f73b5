// NFX_FAN after nats-server faults: a shard owner resumes its fan lanes by the time of the last chunk it decided, not its sequence (chunks stored after the stream's sequence went back are decided, none twice), and chunks the stream lost are published again by their publishers and decided once.
import t from "tap";

import { fanDecidedKey } from "../../lib/core/keys.js";
import { STREAM } from "../../lib/core/subjects.js";
import type { UserRecord } from "../../lib/core/types.js";
import { writeUsers } from "../../lib/directory/directory.js";
import { ensureTopology } from "../../lib/infra/topology.js";
import { notify } from "../../lib/intake/api-client.js";
import { exited, sleep } from "../helpers/chaos.js";
import { clientsFor, eventually, startTestCluster } from "../helpers/cluster.js";

const USERS = 40;

t.test("chunks stored after NFX_FAN's sequence went back are decided once the shards are owned again", async (t) => {
  const cluster = await startTestCluster(t, { own: ["shard"], overrides: { shard: { checkpointMs: 200 } } });
  const cfg = cluster.cfg;
  const { nats, redis } = await clientsFor(t, cfg);
  const rec = cluster.sandbox!.recorder;
  const users: UserRecord[] = Array.from({ length: USERS }, (_, i) => ({ id: `fr${i}`, lastActive: Date.now(), devices: [{ id: `fr${i}-d`, platform: "ios", token: `tok-fr${i}-0123456789` }] }));
  await writeUsers(redis, cfg.cluster.shards, users);
  const got = (title: string): Set<string> => new Set(rec.accepted("apns").filter((d) => d.title === title).map((d) => d.token));
  const send = (title: string) => notify(nats.nc, { recipients: users.map((u) => u.id), category: "transactional", content: { push: { title, body: "b" } } });

  // Three notifications decided and checkpointed: every lane's position is past sequence 3 or so.
  for (const title of ["one", "two", "three"]) await send(title);
  t.ok(await eventually(() => got("three").size === USERS, 30_000), "the first notifications reached every device");
  t.ok(await eventually(async () => (await nats.jsm.streams.info(STREAM.fan)).state.messages === 0, 15_000), "decided chunks are dropped from the stream behind the checkpoints");
  await sleep(1000);
  const shard = cluster.procs.get("shard")!;
  shard.kill("SIGKILL");
  await exited(shard);

  // The stream made anew: its sequence starts again at 1, below the positions the shards checkpointed.
  await nats.jsm.streams.delete(STREAM.fan);
  await ensureTopology(nats, cfg);
  await send("after");
  const fanLast = async (): Promise<number> => (await nats.jsm.streams.info(STREAM.fan)).state.last_seq;
  t.ok(await eventually(async () => (await fanLast()) > 0, 30_000), "the router stored the new chunks");
  await sleep(500);
  t.ok((await fanLast()) <= 40, "the new chunks took sequence numbers the shards had passed");
  await cluster.startRole("shard");
  t.ok(await eventually(() => got("after").size === USERS, 30_000), `every device got the notification published after the sequence went back (${got("after").size} of ${USERS})`);
  await sleep(1500);
  const counts = rec.countsByDevice("apns");
  t.ok(await eventually(async () => (await nats.jsm.streams.info(STREAM.fan)).state.messages === 0, 15_000), "and the new chunks too, once decided");
  t.ok(users.every((u) => counts[u.devices[0].token] === 4), "each device got each of the four notifications once: nothing decided twice");
});

t.test("a fan chunk NFX_FAN lost before its shard decided it is published again by its publisher, and decided once", async (t) => {
  // As on replicated streams: the router and the campaign actor check their chunks until decided (lib/flow/fan-publisher.ts).
  const cluster = await startTestCluster(t, { own: ["shard"], overrides: { shard: { checkpointMs: 200, reconcileChunks: "on" } } });
  const cfg = cluster.cfg;
  const { nats, redis } = await clientsFor(t, cfg);
  const rec = cluster.sandbox!.recorder;
  const users: UserRecord[] = Array.from({ length: USERS }, (_, i) => ({ id: `lc${i}`, lastActive: Date.now(), devices: [{ id: `lc${i}-d`, platform: "ios", token: `tok-lc${i}-0123456789` }] }));
  await writeUsers(redis, cfg.cluster.shards, users);
  const got = (title: string): string[] => rec.accepted("apns").filter((d) => d.title === title).map((d) => d.token);
  const ids = async (): Promise<string[]> => {
    const out: string[] = [];
    const si = await nats.jsm.streams.info(STREAM.fan);
    for (let s = si.state.first_seq; si.state.messages > 0 && s <= si.state.last_seq; s++) {
      const m = await nats.jsm.streams.getMessage(STREAM.fan, { seq: s }).catch(() => null);
      if (m) out.push(m.header.get("Nats-Msg-Id"));
    }
    return out;
  };

  // No shard owner: the chunks of an explicit notification (router) and of a campaign (campaign actor) wait in NFX_FAN.
  const shard = cluster.procs.get("shard")!;
  shard.kill("SIGKILL");
  await exited(shard);
  await notify(nats.nc, { recipients: users.map((u) => u.id), category: "transactional", content: { push: { title: "explicit", body: "b" } } });
  await notify(nats.nc, { segment: "all", category: "transactional", content: { push: { title: "campaign", body: "b" } } });
  const stored = async (): Promise<string[]> => (await ids()).filter((id) => id.startsWith("fan:"));
  t.ok(await eventually(async () => new Set((await stored()).map((id) => id.split(":")[1])).size === 2, 30_000), "both notifications' chunks stored");
  await sleep(500);
  const first = await stored();
  // The stream loses them, as a replicated NFX_FAN can after its leader is killed (docs/operations.md, "nats-server version").
  await nats.jsm.streams.purge(STREAM.fan);
  t.ok(await eventually(async () => (await ids()).length === first.length, 30_000), "each lost chunk is published again by whoever published it");
  t.same((await ids()).sort(), first.map((id) => `${id}~r1`).sort(), "under its id with ~r1, once each");

  await cluster.startRole("shard");
  t.ok(await eventually(() => got("explicit").length === USERS && got("campaign").length === USERS, 30_000), `every device got both (${got("explicit").length}, ${got("campaign").length} of ${USERS})`);
  // Decided chunks are marked for their publishers, which let them go: nothing is published a third time.
  const marks = await Promise.all(first.map((id) => redis.exists(fanDecidedKey(Number(id.split(":")[2]), id))));
  t.ok(marks.every((x) => x === 1), "each chunk marked decided under its first id");
  await sleep(7000);
  t.notOk((await ids()).some((id) => id.endsWith("~r2")), "no chunk published again after its decision");
  const counts = rec.countsByDevice("apns");
  t.ok(users.every((u) => counts[u.devices[0].token] === 2), "each device got each notification once");
});

t.test("a send batch its stream lost before a gateway took it is published again by the shard actor, and delivered once", async (t) => {
  // As on replicated streams: the shard actor checks its send batches until a gateway took them (actors/user-shard.ts).
  const cluster = await startTestCluster(t, { own: ["gateway-apns"], overrides: { shard: { reconcileSends: "on" } } });
  const cfg = cluster.cfg;
  const { nats, redis } = await clientsFor(t, cfg);
  const rec = cluster.sandbox!.recorder;
  const users: UserRecord[] = Array.from({ length: USERS }, (_, i) => ({ id: `sb${i}`, lastActive: Date.now(), devices: [{ id: `sb${i}-d`, platform: "ios", token: `tok-sb${i}-0123456789` }] }));
  await writeUsers(redis, cfg.cluster.shards, users);
  const ids = async (): Promise<string[]> => {
    const out: string[] = [];
    const si = await nats.jsm.streams.info(STREAM.send("apns"));
    for (let s = si.state.first_seq; si.state.messages > 0 && s <= si.state.last_seq; s++) {
      const m = await nats.jsm.streams.getMessage(STREAM.send("apns"), { seq: s }).catch(() => null);
      if (m) out.push(m.header.get("Nats-Msg-Id"));
    }
    return out;
  };

  // No APNs gateway: the send batches wait in NFX_SEND_APNS; then the stream loses them.
  const gw = cluster.procs.get("gateway-apns")!;
  gw.kill("SIGKILL");
  await exited(gw);
  const n = await notify(nats.nc, { recipients: users.map((u) => u.id), category: "transactional", content: { push: { title: "checked", body: "b" } } });
  t.ok(await eventually(async () => (await ids()).some((id) => id.includes(n.id)), 30_000), "the shard actor stored the send batches");
  await sleep(500);
  const first = await ids();
  await nats.jsm.streams.purge(STREAM.send("apns"));
  t.ok(await eventually(async () => (await ids()).length === first.length, 30_000), "each lost send batch is published again");
  t.same((await ids()).sort(), first.map((id) => `${id}~r1`).sort(), "under its id with ~r1, once each");

  await cluster.startRole("gateway-apns");
  const got = (): string[] => rec.accepted("apns").filter((d) => d.nid === n.id).map((d) => d.token);
  t.ok(await eventually(() => got().length >= USERS, 30_000), `every device got it (${got().length} of ${USERS})`);
  await sleep(1000);
  t.equal(got().length, USERS, "once each");
  t.equal(new Set(got()).size, USERS, "no device twice");
});
