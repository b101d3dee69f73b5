// The directory and segments from the CLI and both APIs: import with bad lines, seed, get, preferences (announced), segment define/count/list.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import t from "tap";

import { decodeJson } from "../../lib/core/codec.js";
import { shardOf } from "../../lib/core/shard-hash.js";
import { API, dirChangedAll } from "../../lib/core/subjects.js";
import { getUser, readStoredUsers, readUsers, writeUsers } from "../../lib/directory/directory.js";
import { callApi, notify, status } from "../../lib/intake/api-client.js";
import { nfxRunner } from "../helpers/cli.js";
import { clientsFor, eventually, startTestCluster } from "../helpers/cluster.js";

t.test("directory and segments", async (t) => {
  const cluster = await startTestCluster(t);
  const cfg = cluster.cfg;
  const { nats, redis } = await clientsFor(t, cfg);
  const nfx = nfxRunner({ NFX_CONFIG: cluster.configFile });

  await t.test("import: good lines written, bad lines reported with their number and skipped", async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "nfx-import-"));
    const file = join(dir, "users.ndjson");
    const good = (id: string, extra = {}) => JSON.stringify({ id, locale: "de-DE", timezone: "Europe/Berlin", lastActive: Date.now(), devices: [{ id: "p", platform: "ios", token: `tok-${id}-0123456789` }], ...extra });
    writeFileSync(file, [good("imp1"), "{broken", good("imp2"), JSON.stringify({ id: "imp 3", devices: [] }), good("imp4", { timezone: "Mars/Olympus" }), "", good("imp5", { attributes: { vip: true } })].join("\n"));
    const r = await nfx("users", "import", file);
    t.match(r.stdout, "imported 3 users, skipped 3 bad lines");
    t.match(r.stderr, "line 2: not valid JSON");
    t.match(r.stderr, "line 4: id: must be 1-128 characters");
    t.match(r.stderr, "line 5: timezone: must be an IANA time zone");
    t.equal((await getUser(redis, cfg.cluster.shards, "imp5"))?.attributes?.vip, true, "imported records are readable");
    t.equal(await getUser(redis, cfg.cluster.shards, "imp4"), null, "a bad line writes nothing");
    const got = JSON.parse((await nfx("users", "get", "imp1")).stdout) as { locale?: string };
    t.equal(got.locale, "de-DE", "`nfx users get` prints the record");
  });

  await t.test("seed, then segments: built-in and named, counted and listed", async (t) => {
    const r = await nfx("users", "seed", "--count", "3000");
    t.match(r.stdout, "seeded 3000 users");
    const all = Number((await nfx("segments", "count", "all")).stdout.trim());
    t.equal(all, 3000 + 3, "all = seeded + imported");
    const active = Number((await nfx("segments", "count", "active_30d")).stdout.trim());
    t.ok(active > 1200 && active < 2400, `about 60% of seeded users active within 30 days (${active})`);
    const def = await nfx("segments", "define", "pro_ios", "--attr", "plan=pro", "--platform", "ios");
    const members = Number(/: (\d+) members/.exec(def.stdout)?.[1]);
    t.ok(members > 100 && members < 600, `pro iOS users materialized (${members})`);
    t.equal(Number((await nfx("segments", "count", "pro_ios")).stdout.trim()), members, "count agrees with define");
    t.match((await nfx("segments", "list")).stdout, /pro_ios\s+\d+ members\s+\{"platforms":\["ios"\],"attributes":\{"plan":"pro"\}\}/);
    const bad = await nfx("segments", "count", "nope").then(() => null, (e: { stderr: string }) => e);
    t.match(bad?.stderr ?? "", "NFX_ERR_SEGMENT_UNKNOWN");
    // A campaign to the named segment reaches exactly its members' iOS-and-other devices.
    const { id } = await notify(nats.nc, { segment: "pro_ios", category: "social", content: { push: { title: "Pro", body: "tip" } } });
    t.ok(await eventually(async () => (await status(nats.nc, id)).complete, 60_000), "campaign to a named segment completes");
    const s = await status(nats.nc, id);
    t.equal(s.campaign?.counters.decided, members, "every member decided once");
  });

  await t.test("campaign from the CLI, watched to the end", async (t) => {
    const id = (await nfx("campaign", "create", "--segment", "active_30d", "--title", "Hi", "--body", "there", "--rate", "5000")).stdout.trim();
    t.match(id, /^n_/, "`nfx campaign create` prints the id");
    const watch = await nfx("campaign", "status", id, "--watch");
    for (const stage of ["listed", "decided", "queued", "finished"]) t.match(watch.stdout + watch.stderr, new RegExp(`${stage}\\s+.*\\d+/\\d+ \\| \\d+/s \\| ETA`), `a ${stage} bar with rate and ETA`);
    t.match(watch.stdout + watch.stderr, /state expanded \| chunks \d+, shards done 64\/64/, "it ends when the campaign is complete");
    const st = JSON.parse((await nfx("campaign", "status", id, "--json")).stdout) as { complete: boolean; members: number; counters: { decided: number } };
    t.equal(st.complete, true);
    t.equal(st.counters.decided, st.members, "every member decided");
  });

  await t.test("preferences over CLI, NATS and HTTP: stored, announced, enforced", async (t) => {
    const seen: { user: string; fields: string[]; subject: string }[] = [];
    const sub = nats.nc.subscribe(dirChangedAll, { callback: (_e, m) => void seen.push({ ...decodeJson<{ user: string; fields: string[] }>(m.data), subject: m.subject }) });
    t.teardown(() => sub.unsubscribe());
    await nats.nc.flush();
    await nfx("users", "prefs", "imp1", "--set", "marketing.push=off");
    const viaNats = await callApi<{ preferences: unknown }>(nats.nc, API.preferences, { user: "imp2", optedOut: true });
    t.equal((viaNats as { optedOut?: boolean }).optedOut, true, "NATS: opt-out stored");
    const viaHttp = await fetch(`${cluster.httpUrl}/v1/users/imp5/preferences`, {
      method: "PATCH", headers: { authorization: `Bearer ${cluster.apiKey}`, "content-type": "application/json" }, body: JSON.stringify({ categories: { social: { push: false } } }),
    });
    t.same(await viaHttp.json(), { preferences: { categories: { social: { push: false } } } }, "HTTP: preference stored");
    const badCat = await callApi(nats.nc, API.preferences, { user: "imp1", categories: { gossip: { push: false } } }).then(() => null, (e: { code: string; field: string }) => e);
    t.same([badCat?.code, badCat?.field], ["NFX_ERR_CATEGORY_UNKNOWN", "categories.gossip"], "unknown categories are refused");
    const noUser = await callApi(nats.nc, API.preferences, { user: "ghost", optedOut: true }).then(() => null, (e: { code: string }) => e);
    t.equal(noUser?.code, "NFX_ERR_NOT_FOUND");
    t.ok(await eventually(() => seen.length === 3), "each change announced once on nfx.dir.changed.<shard>");
    t.same(seen.map((x) => x.user).sort(), ["imp1", "imp2", "imp5"]);
    for (const x of seen) t.equal(x.subject, `nfx.dir.changed.${shardOf(x.user, cfg.cluster.shards)}`, `${x.user}'s change is on its shard's subject`);
    t.equal((await getUser(redis, cfg.cluster.shards, "imp1"))?.devices.length, 1, "devices survive a preference update");
    const m = await notify(nats.nc, { recipients: ["imp1", "imp2", "imp5"], category: "marketing", content: { push: { title: "M", body: "m" } } });
    const so = await notify(nats.nc, { recipients: ["imp1", "imp2", "imp5"], category: "social", content: { push: { title: "S", body: "s" } } });
    t.ok(await eventually(async () => (await status(nats.nc, m.id)).complete && (await status(nats.nc, so.id)).complete));
    const outcome = async (nid: string, user: string) => {
      const l = (await status(nats.nc, nid)).lines.find((x) => x.user === user)!;
      return l.reason ? `${l.outcome}:${l.reason}` : l.outcome;
    };
    t.equal(await outcome(m.id, "imp1"), "suppressed:preference_off", "imp1 turned marketing push off");
    t.equal(await outcome(so.id, "imp1"), "sent", "but still gets social");
    t.equal(await outcome(m.id, "imp2"), "suppressed:opted_out", "imp2 opted out of everything");
    t.equal(await outcome(so.id, "imp2"), "suppressed:opted_out");
    t.equal(await outcome(m.id, "imp5"), "sent", "imp5 still gets marketing");
    t.equal(await outcome(so.id, "imp5"), "suppressed:preference_off", "but turned social push off");
  });

  await t.test("records read undecoded (what the shard actor decides from) decode to the same records, one at a time", async (t) => {
    const shard = shardOf("lazy-a", cfg.cluster.shards);
    // Three ids of one shard: two with records (one with a phone), one without.
    const ids = ["lazy-a"];
    for (let i = 0; ids.length < 3; i++) if (shardOf(`lazy-${i}`, cfg.cluster.shards) === shard) ids.push(`lazy-${i}`);
    await writeUsers(redis, cfg.cluster.shards, [
      { id: ids[0], locale: "fr-FR", timezone: "Europe/Paris", quietHours: { start: 1320, end: 420 }, phone: "+15550000101", devices: [{ id: "p1", platform: "ios", token: "tok-lazy-a-0123456789", app: "com.example.b" }] },
      { id: ids[1], devices: [{ id: "a1", platform: "android", token: "tok-lazy-1-0123456789" }] },
    ]);
    const list = [ids[0], ids[2], ids[1]];
    const stored = await readStoredUsers(redis, shard, list, { profile: true });
    const decoded = await readUsers(redis, shard, list, { profile: true });
    t.equal(stored.length, 3);
    t.same([stored.at(0), stored.at(1), stored.at(2)], decoded, "each record as readUsers decodes it");
    t.equal(stored.at(1), null, "a user without a record is null");
    t.not(stored.at(0), stored.at(0), "decoded anew on each call: nothing kept");
    t.same([stored.phoneAt(0), stored.phoneAt(1), stored.phoneAt(2)], ["+15550000101", undefined, undefined], "phones from the profiles alone");
    t.same((await readStoredUsers(redis, shard, list)).phoneAt(0), undefined, "no phone without profiles read");
  });
});
