// Local-time delivery on a time-scaled policy clock (one real second is two hours): a campaign to users in six zones east and west of UTC reaches each zone's users at 09:00 their time, in waves, each user once.
import t from "tap";

import type { UserRecord } from "../../lib/core/types.js";
import { writeUsers } from "../../lib/directory/directory.js";
import { notify, status } from "../../lib/intake/api-client.js";
import { nfxRunner } from "../helpers/cli.js";
import { clientsFor, eventually, startTestCluster } from "../helpers/cluster.js";

/** Six zones, east to west, with their UTC offset on 2026-12-04 (no DST change that day in any of them), hours. */
const ZONES: [string, number][] = [["Asia/Tokyo", 9], ["Asia/Dubai", 4], ["Europe/Berlin", 1], ["America/Sao_Paulo", -3], ["America/New_York", -5], ["Pacific/Honolulu", -10]];
const PER_ZONE = 5;
const SCALE = 7200;
const H = 3_600_000;

t.test("a local-time campaign across six zones: each zone's wave at its 09:00, nobody twice", async (t) => {
  // Policy time: frozen at 2026-12-03T23:30Z until `start`, then two hours per real second. Tokyo is at 08:30 then.
  const origin = Date.UTC(2026, 11, 3, 23, 30);
  const start = Date.now() + 8_000;
  process.env.NFX_TEST_CLOCK = `${origin},${SCALE},${start}`;
  const policyAt = (real: number): number => origin + Math.max(0, real - start) * SCALE;
  const cluster = await startTestCluster(t).finally(() => delete process.env.NFX_TEST_CLOCK);
  const { nats, redis } = await clientsFor(t, cluster.cfg);
  const rec = cluster.sandbox!.recorder;
  const nfx = nfxRunner({ NFX_CONFIG: cluster.configFile });
  const users: UserRecord[] = ZONES.flatMap(([tz], z) => Array.from({ length: PER_ZONE }, (_, i) => ({ id: `z${z}-${i}`, timezone: tz, devices: [{ id: "p", platform: "ios" as const, token: `tok-z${z}-${i}` }] })));
  await writeUsers(redis, cluster.cfg.cluster.shards, users);

  const n = await notify(nats.nc, { segment: "all", category: "social", deliverAt: { localTime: "09:00", window: "2h" }, content: { push: { title: "Good morning", body: "Your daily summary" } } });
  t.ok(await eventually(async () => (await status(nats.nc, n.id)).campaign?.counters.deferred === users.length, 10_000), "every user held for their local 09:00");
  t.ok(Date.now() < start, `decided while the policy clock still stood at 23:30Z (${Math.round((start - Date.now()) / 1000)} s to spare)`);
  t.match((await nfx("explain", n.id, "z0-0")).stdout, /local_time\s+defer\s+zone Asia\/Tokyo, local time 08:30: held until 09:00 local, 2026-12-04T00:00:00.000Z/, "explain: Tokyo is held half an hour");
  t.match((await nfx("explain", n.id, "z5-0")).stdout, /local_time\s+defer\s+zone Pacific\/Honolulu, local time 13:30: held until 09:00 local, 2026-12-04T19:00:00.000Z/, "Honolulu (13:30 the day before) until the next morning");

  const accepted = () => rec.accepted("apns").filter((d) => d.nid === n.id);
  t.ok(await eventually(() => accepted().length >= users.length, 60_000), "every user got it");
  await new Promise((r) => setTimeout(r, 1500));
  const got = accepted();
  t.equal(got.length, users.length, "each once");
  t.equal(new Set(got.map((d) => d.token)).size, users.length, "no device twice");
  ZONES.forEach(([tz, off], z) => {
    const nine = Date.UTC(2026, 11, 4, 9 - off, 0);
    const at = got.filter((d) => d.token.startsWith(`tok-z${z}-`)).map((d) => policyAt(d.at));
    // Within the window: two hours of policy time are one real second for the release and the trip to the provider.
    t.ok(at.length === PER_ZONE && at.every((a) => a >= nine && a < nine + 2 * H), `${tz}: all ${PER_ZONE} arrived at 09:00-11:00 local (${at.map((a) => new Date(a).toISOString().slice(11, 16)).join(", ")} UTC; 09:00 local is ${new Date(nine).toISOString().slice(11, 16)} UTC)`);
  });
  const order = ZONES.map((_, z) => Math.min(...got.filter((d) => d.token.startsWith(`tok-z${z}-`)).map((d) => d.at)));
  t.same([...order].sort((a, b) => a - b), order, "waves in order, east to west");

  // The counters are folded by the tracker from receipts, a moment after the last wave's sends arrive: read until they settle.
  let waves: [string, { held: number; released: number }][] = [];
  const settled = await eventually(async () => {
    waves = Object.entries((await status(nats.nc, n.id)).campaign!.counters.waves).sort();
    return waves.length === ZONES.length && waves.every(([, w]) => w.held === PER_ZONE && w.released === PER_ZONE);
  }, 10_000);
  t.equal(waves.length, ZONES.length, "campaign status: one wave per zone");
  t.ok(settled, `each wave held and released its zone's users (${waves.map(([at, w]) => `${at}: ${w.held}/${w.released}`).join(", ")})`);
  t.match((await nfx("campaign", "status", n.id)).stdout, /waves\s+6 release time\(s\), 30 held, 30 released[\s\S]*2026-12-04T00:00:00.000Z \(09:00 at UTC\+09:00\): held 5, released 5[\s\S]*2026-12-04T19:00:00.000Z \(09:00 at UTC-10:00\)/, "nfx campaign status lists the waves with their zones' offsets");
});
