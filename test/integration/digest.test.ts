// Digests on real NATS and Redis: five notifications in one window become one push listing them; the shard owner SIGKILLed while items are held, its successor sends exactly one digest with all of them.
import t from "tap";

import { writeUsers } from "../../lib/directory/directory.js";
import { notify, status } from "../../lib/intake/api-client.js";
import { nfxRunner } from "../helpers/cli.js";
import { clientsFor, eventually, startTestCluster } from "../helpers/cluster.js";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

t.test("digests: one per window with every item, exactly once across a SIGKILL of the shard owner", async (t) => {
  const cluster = await startTestCluster(t, {
    own: ["shard"],
    overrides: {
      shard: { checkpointMs: 200 },
      categories: {
        transactional: { defaultPriority: "high" },
        comments: { defaultPriority: "normal", cap: { count: 2, periodSec: 86400 }, digest: { windowSec: 4 } },
        alerts: { defaultPriority: "critical", digest: { windowSec: 3 } },
      },
    },
  });
  const cfg = cluster.cfg;
  const { nats, redis } = await clientsFor(t, cfg);
  const rec = cluster.sandbox!.recorder;
  const nfx = nfxRunner({ NFX_CONFIG: cluster.configFile });
  await writeUsers(redis, cfg.cluster.shards, ["ana", "bo"].map((id) => ({ id, devices: [{ id: "p", platform: "ios" as const, token: `tok-${id}` }] })));
  const pushes = (token: string) => rec.accepted("apns").filter((d) => d.token === token);
  const comment = (user: string, i: number, key?: string) =>
    notify(nats.nc, { recipients: [user], category: "comments", ...(key ? { digest: { key } } : {}), content: { push: { title: "New comment on your post", body: `comment ${i}` } } });

  // Five comments within the window: one digest with five events at the window's end.
  const t0 = Date.now();
  const five: { id: string }[] = [];
  for (let i = 1; i <= 5; i++) five.push(await comment("ana", i));
  const lineOf = async (id: string) => (await status(nats.nc, id)).lines.find((l) => l.user === "ana");
  t.ok(await eventually(async () => (await Promise.all(five.map((n) => lineOf(n.id)))).every((l) => l?.outcome === "digested"), 10_000), "each is held for the digest (status: digested)");
  t.equal(pushes("tok-ana").length, 0, "nothing sent while the window is open");
  const digestId = (await lineOf(five[0].id))!.reason!;
  t.match(digestId, new RegExp(`^${five[0].id}-dg[0-9a-z]+$`), "under one digest id, from the first item");
  t.same(new Set(await Promise.all(five.map(async (n) => (await lineOf(n.id))!.reason))), new Set([digestId]), "the same digest for all five");
  t.match((await nfx("explain", five[2].id, "ana")).stdout, new RegExp(`digest\\s+hold\\s+held for digest comments until \\S+, to be sent as ${digestId} \\(3 items so far\\)`), "explain: held for the digest until its window ends, and its id");
  t.ok(await eventually(() => pushes("tok-ana").length > 0, 15_000), "the digest is sent");
  await sleep(1500);
  const got = pushes("tok-ana");
  t.equal(got.length, 1, "once");
  t.match(got[0], { nid: digestId, title: "New comment on your post and 4 more", body: "5 updates. Latest: comment 5" }, "listing all five");
  t.ok(got[0].at - t0 >= 4000, `at the window's end (${got[0].at - t0} ms after the first)`);
  t.match((await status(nats.nc, digestId)).lines, [{ user: "ana", channel: "apns", outcome: "sent" }], "the digest has its own status");
  t.match((await nfx("explain", digestId, "ana")).stdout, /route\s+send/, "and its own decision trail");
  t.match((await nfx("status", five[0].id)).stdout, /digested=1/, "nfx status counts digested");

  // Caps: a digest counts as one send (comments are capped at 2 a day): a second digest goes, a third is capped.
  await comment("ana", 6, "second");
  t.ok(await eventually(() => pushes("tok-ana").length === 2, 15_000), "the second digest (another key) is sent: 2 of the cap of 2");
  const third = await comment("ana", 7, "third");
  t.ok(await eventually(async () => (await lineOf(third.id))?.outcome === "digested", 10_000), "the third is held");
  const thirdId = (await lineOf(third.id))!.reason!;
  t.ok(await eventually(async () => (await status(nats.nc, thirdId)).lines[0]?.reason === "frequency_cap", 15_000), "the third digest is suppressed by the cap: seven notifications counted as three sends");

  // Critical never waits for a digest.
  const alarm = await notify(nats.nc, { recipients: ["bo"], category: "alerts", content: { push: { title: "Login", body: "new device" } } });
  t.ok(await eventually(async () => (await status(nats.nc, alarm.id)).complete, 10_000));
  t.match((await status(nats.nc, alarm.id)).lines, [{ user: "bo", outcome: "sent" }], "a critical notification of a digest category is sent at once");

  // SIGKILL of the shard owner while three items are held and checkpointed; a new owner sends one digest with all three and
  // the one sent meanwhile. The window (12 s) outlasts the takeover: the lease (3 s), a tick and a process start.
  await writeUsers(redis, cfg.cluster.shards, [{ id: "cy", devices: [{ id: "p", platform: "ios" as const, token: "tok-cy" }] }]);
  const held: { id: string }[] = [];
  for (let i = 1; i <= 3; i++) held.push(await notify(nats.nc, { recipients: ["cy"], category: "comments", digest: { windowSec: 12 }, content: { push: { title: "Reply", body: `reply ${i}` } } }));
  const cyLine = async (id: string) => (await status(nats.nc, id)).lines.find((l) => l.user === "cy");
  t.ok(await eventually(async () => (await Promise.all(held.map((n) => cyLine(n.id)))).every((l) => l?.outcome === "digested"), 10_000), "three held");
  await sleep(800); // a checkpoint (every 200 ms) holds them
  const shard = cluster.procs.get("shard")!;
  await new Promise<void>((r) => (shard.once("exit", () => r()), shard.kill("SIGKILL")));
  const fourth = await notify(nats.nc, { recipients: ["cy"], category: "comments", digest: { windowSec: 12 }, content: { push: { title: "Reply", body: "reply 4" } } });
  await cluster.startExtra("shard");
  t.ok(await eventually(() => pushes("tok-cy").length > 0, 60_000), "after the takeover the digest is sent");
  await sleep(2000);
  const cy = pushes("tok-cy");
  t.equal(cy.length, 1, "exactly one digest");
  t.match(cy[0], { title: "Reply and 3 more", body: "4 updates. Latest: reply 4" }, "with every item: the three held before the kill and the one sent during it");
  t.equal((await cyLine(fourth.id))?.reason, (await cyLine(held[0].id))?.reason, "all four in the same digest");
});
