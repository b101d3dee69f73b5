// A shard owner resumes its fan lanes by the time of the last chunk it decided, not its sequence: chunks stored after NFX_FAN's sequence went back (the stream made anew, as nats-server 2.9 leaves it after a crash) are decided, none twice.
import t from "tap";

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
