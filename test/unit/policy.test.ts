// Per-recipient policy with a fake clock: quiet hours across zones and DST, bucket refill, dedup expiry, fallback order, rule order and trails.
import t from "tap";

import { loadConfig } from "../../lib/core/config.js";
import type { NotificationBrief, UserRecord } from "../../lib/core/types.js";
import { localMinute, localTimeRelease, parseHhmm, quietUntil, utcOffsetMin } from "../../lib/directory/quiet-hours.js";
import { ReleasePacer } from "../../lib/flow/hold-until-due.js";
import { balancedOwners, preferredOwner } from "../../lib/flow/shard-ownership.js";
import { isBroadcast, readTimePolicy } from "../../lib/inapp/broadcasts.js";
import { renderPush, variablesOf } from "../../lib/intake/templates.js";
import { DedupWindow } from "../../lib/shard/dedup-window.js";
import { DigestBook, digestIdOf, digestNotification } from "../../lib/shard/digests.js";
import { decideUser, planFor, type PolicyConfig, policyFrom, type PolicyState } from "../../lib/shard/policy.js";
import { RateBuckets } from "../../lib/shard/rate-buckets.js";
import { parseTrail, Trail } from "../../lib/shard/trails.js";

const H = 3_600_000;
const at = (iso: string): number => Date.parse(iso);

t.test("quiet hours: local time in the user's zone, window across midnight, end instant", async (t) => {
  const w = { start: parseHhmm("22:00"), end: parseHhmm("07:00") };
  // 21:30 UTC is 22:30 in Berlin (winter, UTC+1), 16:30 in New York (UTC-5), 06:30 next day in Tokyo (UTC+9).
  const now = at("2026-01-15T21:30:00Z");
  t.equal(localMinute("Europe/Berlin", now), 22 * 60 + 30);
  const berlin = quietUntil("Europe/Berlin", w, now);
  t.equal(berlin.until, at("2026-01-16T06:00:00Z"), "Berlin: quiet until 07:00 local = 06:00 UTC");
  t.equal(quietUntil("America/New_York", w, now).until, null, "New York: 16:30, not quiet");
  t.equal(quietUntil("Asia/Tokyo", w, now).until, at("2026-01-15T22:00:00Z"), "Tokyo: 06:30, quiet for 30 more minutes");
  t.equal(quietUntil("Asia/Kolkata", w, now).until, at("2026-01-16T01:30:00Z"), "Kolkata (UTC+5:30): 03:00 local, quiet until 07:00 IST");
});

t.test("quiet hours: the window end moves with a DST change", async (t) => {
  const w = { start: parseHhmm("22:00"), end: parseHhmm("07:00") };
  // Berlin springs forward on 2026-03-29 02:00 → 03:00: the night is an hour shorter.
  const spring = quietUntil("Europe/Berlin", w, at("2026-03-28T22:00:00Z")); // 23:00 CET
  t.equal(spring.local, 23 * 60);
  t.equal(spring.until, at("2026-03-29T05:00:00Z"), "07:00 CEST is 05:00 UTC (not 06:00)");
  // New York falls back on 2026-11-01 02:00 → 01:00: the night is an hour longer.
  const fall = quietUntil("America/New_York", w, at("2026-11-01T03:00:00Z")); // 23:00 EDT
  t.equal(fall.until, at("2026-11-01T12:00:00Z"), "07:00 EST is 12:00 UTC (not 11:00)");
  t.equal(utcOffsetMin("America/New_York", at("2026-11-01T03:00:00Z")), -240);
  t.equal(utcOffsetMin("America/New_York", at("2026-11-01T12:00:00Z")), -300);
  // A window ending inside the spring-forward gap (02:30 does not exist that night) ends when the gap does.
  const gap = quietUntil("Europe/Berlin", { start: parseHhmm("22:00"), end: parseHhmm("02:30") }, at("2026-03-28T23:00:00Z"));
  t.equal(gap.until, at("2026-03-29T01:30:00Z"));
});

t.test("token buckets: cap, refill on the monotonic clock, snapshot and restore", async (t) => {
  let mono = 1000;
  const b = new RateBuckets(() => mono);
  const cap = { count: 3, periodSec: 86_400 };
  t.same([b.take("u", "marketing", cap).left, b.take("u", "marketing", cap).left, b.take("u", "marketing", cap).left], [2, 1, 0], "three sends a day");
  const no = b.take("u", "marketing", cap);
  t.equal(no.ok, false, "the fourth is refused");
  t.equal(no.retryInMs, 8 * H, "one token every 8 hours");
  t.equal(b.take("u", "social", cap).ok, true, "another category has its own bucket");
  t.equal(b.take("v", "marketing", cap).ok, true, "another user has their own bucket");
  t.equal(b.take("u", "marketing", cap, false).ok, false, "a dry check refuses too");
  mono += 8 * H;
  t.equal(b.take("u", "marketing", cap, false).ok, true, "8 h later a token is back (dry check)");
  t.equal(b.take("u", "marketing", cap).ok, true);
  t.equal(b.take("u", "marketing", cap).ok, false, "and only one");
  // A new owner restores the snapshot; wall time that passed meanwhile refills.
  const snap = b.pack();
  const mono2 = 50;
  const b2 = new RateBuckets(() => mono2);
  b2.restore(snap, 0);
  t.equal(b2.take("u", "marketing", cap).ok, false, "restored: still empty");
  const b3 = new RateBuckets(() => mono2);
  b3.restore(snap, 8 * H);
  t.equal(b3.take("u", "marketing", cap).ok, true, "restored 8 h later: a token is back");
  mono += 30 * 86_400_000;
  t.equal(b.pack().readUInt32LE(0), 0, "full buckets are not checkpointed");
});

t.test("rate buckets over months: values count from a base that moves on every 15 days; refills and restores stay exact", async (t) => {
  const D = 86_400_000;
  let mono = 0;
  const b = new RateBuckets(() => mono);
  const cap = { count: 3, periodSec: 30 * 86_400 }; // one token back every 10 days
  t.ok([1, 2, 3].every(() => b.take("u", "c", cap).ok), "three tokens at once");
  t.notOk(b.take("u", "c", cap).ok, "the fourth refused");
  mono = 16 * D; // past the base's 15 days
  t.ok(b.take("u", "c", cap).ok, "one token back after 10 days");
  t.same(b.take("u", "c", cap), { ok: false, left: 0, retryInMs: 4 * D }, "the next in exactly 4 days");
  const snap = b.pack();
  mono = 40 * D;
  t.ok([1, 2, 3].every(() => b.take("u", "c", cap).ok) && !b.take("u", "c", cap).ok, "at 40 days (past a second move of the base) the bucket is full again: three, not four");
  const b2 = new RateBuckets(() => mono);
  b2.restore(snap, 2 * D);
  t.same(b2.take("u", "c", cap), { ok: false, left: 0, retryInMs: 2 * D }, "restored 2 days later: 2 days to go");
});

t.test("dedup window: expiry on the clock (the window, at most a quarter more), snapshot and restore", async (t) => {
  let now = 1000;
  const w = new DedupWindow(24 * H, () => now);
  w.add("n|n1|u1");
  t.ok(w.has("n|n1|u1"));
  t.notOk(w.has("n|n1|u2"));
  now = 1000 + 24 * H;
  t.ok(w.has("n|n1|u1"), "kept the whole window");
  const snap = w.pack();
  now = 1000 + 30 * H;
  t.notOk(w.has("n|n1|u1"), "expired a quarter window later at most");
  t.equal(w.pack().readUInt32LE(0), 0, "expired entries are dropped");
  now = 0;
  const w2 = new DedupWindow(24 * H, () => now);
  w2.restore(snap);
  t.ok(w2.has("n|n1|u1"), "a new owner restores the window");
  // Keys added an hour apart over a day and a half, the clock moving on: each kept at least the window, none a quarter more.
  let clock = 0;
  const w3 = new DedupWindow(24 * H, () => clock);
  const added = Array.from({ length: 36 }, (_, i) => [`k${i}`, 5 * H + i * H] as const);
  let wrong = 0;
  for (const [k, at] of added) {
    clock = at;
    w3.add(k);
    for (const [k2, at2] of added) {
      if (at2 > at) break;
      if (at - at2 < 24 * H && !w3.has(k2)) wrong++;
      if (at - at2 >= 30 * H && w3.has(k2)) wrong++;
    }
  }
  t.equal(wrong, 0, "every key kept [window, window × 1.25)");
  clock = added[35][1];
  const packed = w3.pack();
  const live = added.filter(([k]) => w3.has(k)).map(([k]) => k);
  t.ok(added.slice(12).every(([k]) => live.includes(k)) && added.slice(0, 6).every(([k]) => !live.includes(k)), "at the last add, the keys of the last day are live, none added 30 h or more before");
  t.equal(packed.readUInt32LE(0), live.length, "a pack holds the live ones, and expired sets are dropped");
  t.equal(w3.size, live.length);
  const w4 = new DedupWindow(24 * H, () => clock);
  w4.restore(packed);
  t.ok(live.every((k) => w4.has(k)) && !w4.has("k0"), "restored");
});

const base = (o: Partial<NotificationBrief> = {}): NotificationBrief => ({
  id: "n_1", createdAt: 0, expiresAt: at("2026-01-20T00:00:00Z"), priority: "normal", category: "social", channels: ["push"], content: { push: { title: "T", body: "B" } }, ...o,
});
const policy = (o: Partial<PolicyConfig> = {}): PolicyConfig => ({
  categories: {
    social: { presenceRouting: true, quietHours: true },
    marketing: { cap: { count: 3, periodSec: 86_400 }, presenceRouting: false, quietHours: true },
  },
  defaultQuietHours: null,
  fallback: { critical: ["sms", "email"], high: ["email"], normal: [], bulk: [] },
  available: new Set(["push", "email", "sms", "inapp"]),
  ...o,
});
const state = (now: () => number): PolicyState => ({ buckets: new RateBuckets(now), dedup: new DedupWindow(24 * H, now) });
const ios = { id: "i1", platform: "ios" as const, token: "tok-i1" };
const user = (o: Partial<UserRecord> = {}): UserRecord => ({ id: "u1", devices: [ios], ...o });

t.test("rules in order: opt-out, preferences, quiet hours, cap, dedup, presence, route", async (t) => {
  let now = at("2026-01-15T12:00:00Z");
  const st = state(() => now);
  const cfg = policy();
  const decide = (n: NotificationBrief, u: UserRecord, online = false, collapsed = false) => decideUser(cfg, st, { n, now, released: false }, { user: u, online, collapsed });

  t.same(decide(base({ expiresAt: now }), user()), { kind: "suppress", reason: "expired" });
  t.same(decide(base(), user({ optedOut: true })), { kind: "suppress", reason: "opted_out" });
  t.same(decide(base(), user({ preferences: { categories: { social: { push: false, inapp: false } } } })), { kind: "suppress", reason: "preference_off" });
  t.same(decide(base({ priority: "critical" }), user({ preferences: { categories: { social: { push: false } } } })), { kind: "suppress", reason: "no_devices" }, "critical never uses a channel the user turned off (push off, offline, no sms/email)");
  // Quiet hours: 12:00 UTC is 21:00 in Tokyo; quiet 20:00-08:00 → defer until 08:00 JST = 23:00 UTC.
  const tokyo = user({ id: "u2", timezone: "Asia/Tokyo", quietHours: { start: parseHhmm("20:00"), end: parseHhmm("08:00") } });
  t.same(decide(base(), tokyo), { kind: "defer", until: at("2026-01-15T23:00:00Z") });
  t.same(decide(base({ expiresAt: at("2026-01-15T22:00:00Z") }), tokyo), { kind: "suppress", reason: "expires_in_quiet_hours" }, "expires before the window ends: dropped");
  t.equal(decide(base({ priority: "critical" }), tokyo).kind, "send", "critical skips quiet hours");
  t.equal(decideUser(cfg, st, { n: base({ id: "n_rel" }), now, released: true }, { user: tokyo, online: false }).kind, "send", "a released chunk is not deferred again");
  const paris = policy({ defaultQuietHours: { start: parseHhmm("11:00"), end: parseHhmm("14:00") } });
  t.equal(decideUser(paris, st, { n: base({ id: "n_d" }), now, released: false }, { user: user({ id: "u9" }), online: false }).kind, "defer", "the configured default applies to users without their own (UTC if no zone)");

  // Caps: marketing 3/day, critical exempt.
  const m = (i: number, o: Partial<NotificationBrief> = {}) => base({ id: `m${i}`, category: "marketing", ...o });
  t.same([1, 2, 3].map((i) => decide(m(i), user({ id: "cap" })).kind), ["send", "send", "send"]);
  t.same(decide(m(4), user({ id: "cap" })), { kind: "suppress", reason: "frequency_cap" });
  t.equal(decide(m(5, { priority: "critical" }), user({ id: "cap" })).kind, "send", "critical skips caps");
  t.equal(decide(m(51, { priority: "high" }), user({ id: "cap" })).kind, "send", "high skips caps (the urgent lane class holds no caps)");
  t.equal(decide(m(52, { priority: "bulk" }), user({ id: "cap" })).kind, "suppress", "bulk is capped");
  now += 8 * H;
  t.equal(decide(m(6), user({ id: "cap" })).kind, "send", "a token refills after 8 h");

  // Dedup: the same notification again, and another one whose collapse key another notification holds (claimed in Redis).
  t.equal(decide(base({ id: "d1", collapseKey: "order-7" }), user({ id: "dd" })).kind, "send");
  t.same(decide(base({ id: "d1", collapseKey: "order-7" }), user({ id: "dd" })), { kind: "suppress", reason: "duplicate" });
  t.same(decide(base({ id: "d2", collapseKey: "order-7" }), user({ id: "dd" }), false, true), { kind: "suppress", reason: "duplicate_collapse_key" });
  t.equal(decide(base({ id: "d3", collapseKey: "order-7" }), user({ id: "dd" })).kind, "send", "a collapse key nobody else holds passes");
  // An entry lives at least the window and at most a quarter longer (lib/shard/dedup-window.ts).
  now += 24 * H;
  t.same(decide(base({ id: "d1", collapseKey: "order-7" }), user({ id: "dd" })), { kind: "suppress", reason: "duplicate" }, "at the window's end it is still a duplicate");
  now += 6 * H;
  t.equal(decide(base({ id: "d1", collapseKey: "order-7" }), user({ id: "dd" })).kind, "send", "a quarter window later it is no longer one");

  // A refused send takes no token and records no dedup key.
  const st2 = state(() => now);
  const quietAll = policy({ defaultQuietHours: { start: 0, end: 1439 } });
  decideUser(quietAll, st2, { n: m(7), now, released: false }, { user: user({ id: "z" }), online: false });
  t.equal(st2.buckets.size + st2.dedup.size, 0, "a deferral changes no state");

  // Presence routing: online → in-app instead of push (social), not for marketing.
  t.same(decide(base({ id: "p1" }), user({ id: "on" }), true), { kind: "send", targets: [{ channel: "inapp", device: "inapp", token: "" }], fallback: [{ channel: "apns", device: "i1", token: "tok-i1" }] }, "online: in-app, with push planned as the fallback if no client acks");
  t.same(decide(base({ id: "p3", channels: ["inapp"], content: { inapp: { payload: {} }, push: { title: "t", body: "b" } } }), user({ id: "off2" }), false), { kind: "send", targets: [{ channel: "inapp", device: "inapp", token: "" }], fallback: [{ channel: "apns", device: "i1", token: "tok-i1" }] }, "an in-app notification goes to the inbox even offline, with push (it has push content) as the fallback");
  t.same(decide(base({ id: "p4", channels: ["inapp"], content: { inapp: { payload: {} } } }), user({ id: "off3" }), false), { kind: "send", targets: [{ channel: "inapp", device: "inapp", token: "" }] }, "without push content there is no fallback: the inbox only");
  t.same(decide(base({ id: "p2" }), user({ id: "off" }), false), { kind: "send", targets: [{ channel: "apns", device: "i1", token: "tok-i1" }] });
  t.same(decide(m(8), user({ id: "on2" }), true), { kind: "send", targets: [{ channel: "apns", device: "i1", token: "tok-i1" }] }, "marketing ignores presence");
});

t.test("fallback: the notification's own channels first, then the priority's plan in order, skipping channels without a gateway or turned off", async (t) => {
  const now = at("2026-01-15T12:00:00Z");
  const noPush = user({ id: "f", devices: [], phone: "+15550000001", email: "f@example.com" });
  const route = (cfg: PolicyConfig, n: NotificationBrief, u: UserRecord) => {
    const v = decideUser(cfg, state(() => now), { n, now, released: false }, { user: u, online: false });
    return v.kind === "send" ? v.targets.map((x) => x.channel) : v.kind === "suppress" ? v.reason : "defer";
  };
  t.same(route(policy(), base({ priority: "critical" }), noPush), ["sms"], "critical, no push token → SMS");
  t.same(route(policy(), base({ priority: "critical" }), { ...noPush, phone: undefined }), ["email"], "then email");
  t.same(route(policy(), base({ priority: "critical" }), { ...noPush, preferences: { categories: { social: { sms: false } } } }), ["email"], "SMS turned off → email");
  t.same(route(policy({ available: new Set(["push", "email"]) }), base({ priority: "critical" }), noPush), ["email"], "no SMS gateway → email");
  t.same(route(policy(), base({ priority: "high" }), noPush), ["email"], "high falls back to email only");
  t.same(route(policy(), base({ priority: "normal" }), noPush), "no_devices", "normal has no fallback");
  t.same(route(policy(), base({ priority: "critical" }), user({ id: "g" })), ["apns"], "with a push token no fallback is used");
  t.same(route(policy(), base({ priority: "critical", channels: ["push", "email"] }), user({ id: "h", email: "h@example.com" })), ["apns", "email"], "the notification's own channels go together");
});

t.test("decision trail: every rule's step with what it saw", async (t) => {
  const now = at("2026-01-15T12:00:00Z");
  const trail = new Trail();
  const tokyo = user({ timezone: "Asia/Tokyo", quietHours: { start: parseHhmm("20:00"), end: parseHhmm("08:00") } });
  decideUser(policy(), state(() => now), { n: base(), now, released: false }, { user: tokyo, online: false }, trail);
  const steps = parseTrail(trail.s);
  t.same(steps.map((s) => `${s.rule}:${s.verdict}`), ["expiry:pass", "opt_out:pass", "preferences:pass", "quiet_hours:defer"]);
  t.match(steps[3].saw, /zone Asia\/Tokyo, local time 21:00, quiet 20:00-08:00, quiet until 2026-01-15T23:00:00.000Z/);
  const sent = new Trail();
  decideUser(policy(), state(() => now), { n: base({ category: "marketing" }), now, released: false }, { user: user(), online: false }, sent);
  t.same(parseTrail(sent.s).map((s) => `${s.rule}:${s.verdict}`), ["expiry:pass", "opt_out:pass", "preferences:pass", "quiet_hours:pass", "frequency_cap:pass", "dedup:pass", "presence:pass", "route:send"]);
  t.match(parseTrail(sent.s)[4].saw, "cap 3 per 86400 s, 2 left after this send");
});

t.test("a plan shared by a chunk's recipients gives each the trail a plan of their own gives", async (t) => {
  const now = at("2026-01-15T12:00:00Z");
  const cfg = policy({ categories: { marketing: { cap: { count: 3, periodSec: 86_400 }, presenceRouting: false, quietHours: true, commercial: true } }, defaultQuietHours: { start: parseHhmm("22:00"), end: parseHhmm("07:00") } });
  const zones = ["Europe/Berlin", "America/New_York", "Pacific/Auckland", "UTC"];
  const n = base({ category: "marketing", channels: ["push", "email"] });
  // Varied users: zones (one in its quiet hours), one, two or no devices, an email, a bucket already taken from once or twice.
  const users = Array.from({ length: 48 }, (_, i) =>
    user({ id: `u${i}`, timezone: zones[i % 4], devices: i % 5 === 0 ? [] : i % 3 === 0 ? [ios, { id: "a1", platform: "android", token: "tok-a1" }] : [ios], ...(i % 2 ? { email: `u${i}@example.com` } : {}) }),
  );
  const run = (shared: boolean): string[] => {
    const st = state(() => now);
    for (const u of users.slice(0, 20)) st.buckets.take(u.id, "marketing", { count: 3, periodSec: 86_400 });
    for (const u of users.slice(0, 8)) st.buckets.take(u.id, "marketing", { count: 3, periodSec: 86_400 });
    const plan = shared ? planFor(cfg, n) : undefined;
    return users.map((u) => {
      const tr = new Trail();
      decideUser(cfg, st, { n, now, released: false }, { user: u, online: false }, tr, plan);
      return tr.s;
    });
  };
  const own = run(false);
  t.same(run(true), own);
  t.ok(own.some((s) => s.includes("quiet_hours|defer|Pacific/Auckland")) && own.some((s) => s.includes("quiet_hours|pass|Europe/Berlin")), "some deferred by quiet hours, some passed");
  t.ok(["|0\n", "|1\n", "|2\n"].every((x) => own.some((s) => s.includes(`frequency_cap|pass|3|86400${x}`))), "tokens left 0, 1 and 2 all seen");
  t.ok(own.some((s) => s.includes("route|send|push+email|3")) && own.some((s) => s.includes("route|send|push+email|1")), "routes with different target counts");
});

t.test("policy settings come from config: marketing capped 3/day by default", async (t) => {
  const p = policyFrom(loadConfig({ env: {} }));
  t.same(p.categories.marketing.cap, { count: 3, periodSec: 86_400 });
  t.equal(p.categories.security.quietHours, false);
  t.same(p.fallback.critical, ["sms", "email"]);
  t.same([...p.available], ["push"], "only channels with gateways");
});

t.test("shard ownership: rendezvous hashing spreads shards fairly and moves few when a member joins", async (t) => {
  const two = ["a", "b"];
  const three = ["a", "b", "c"];
  const own = (ms: string[]) => Array.from({ length: 64 }, (_, s) => preferredOwner(s, ms)!);
  const o2 = own(two);
  const o3 = own(three);
  for (const m of three) t.ok(o3.filter((x) => x === m).length >= 10, `member ${m} gets a fair share of 64 (${o3.filter((x) => x === m).length})`);
  const moved = o2.filter((x, s) => x !== o3[s]).length;
  t.equal(moved, o3.filter((x) => x === "c").length, "only shards that go to the new member move");

  // Balanced: a few partitions over a few members, each member at most its even share, whatever the ids.
  for (let seed = 0; seed < 200; seed++) {
    for (const n of [1, 2, 3, 5]) {
      const ms = Array.from({ length: n }, (_, k) => `p${seed}-${k}`);
      for (const parts of [1, 4, 7, 16]) {
        const owners = balancedOwners(parts, ms);
        const most = Math.max(...ms.map((m) => owners.filter((o) => o === m).length));
        if (owners.length !== parts || most > Math.ceil(parts / n) || owners.some((o) => !ms.includes(o))) t.fail(`seed ${seed}, ${n} members, ${parts} partitions: ${owners.join()}`);
        if (owners.join() !== balancedOwners(parts, [...ms].reverse()).join()) t.fail(`seed ${seed}: the owners depend on the members' order`);
      }
    }
  }
  t.pass("balanced owners: every partition owned, none over its even share, the same from any member's list");
});

t.test("broadcasts: which notifications take the read path, and the read-time policy rule by rule", async (t) => {
  const n = { channels: ["inapp" as const], content: { inapp: { payload: {} } } };
  t.ok(isBroadcast(n, 10_000, 10_000), "in-app only, inline, audience at the threshold");
  t.notOk(isBroadcast(n, 9_999, 10_000), "a smaller audience fans out on write");
  t.notOk(isBroadcast(n, 1e6, 0), "0 turns broadcasts off");
  t.notOk(isBroadcast({ ...n, channels: ["inapp", "push"] }, 1e6, 10), "another channel needs a send per recipient");
  t.notOk(isBroadcast({ ...n, collapseKey: "k" }, 1e6, 10), "a collapse key is a per-user claim");
  t.notOk(isBroadcast({ channels: ["inapp"], template: { template: {} as never, variables: {} } }, 1e6, 10), "a template renders per recipient");
  const now = at("2026-03-01T12:00:00Z");
  const b = { id: "n_1", at: now - H, expiresAt: now + H, category: "social", segment: "active_30d", item: { id: "n_1", at: now - H, category: "social", priority: "normal" as const, payload: {} } };
  const u: UserRecord = { id: "ana", devices: [] };
  const verdicts = (s: { rule: string; verdict: string }[]): string => s.map((x) => `${x.rule}:${x.verdict}`).join(" ");
  t.equal(verdicts(readTimePolicy(b, u, true, now)), "audience:pass expiry:pass opt_out:pass preferences:pass", "a member who has not opted out sees it");
  t.match(readTimePolicy(b, u, true, now)[0].saw, /active_30d: last active since 2026-01-30T11:00:00.000Z/, "the audience names the cutoff of a built-in segment, from the broadcast's time");
  t.equal(verdicts(readTimePolicy(b, u, false, now)), "audience:hide", "a non-member does not, and nothing else is checked");
  t.equal(verdicts(readTimePolicy(b, null, true, now)), "audience:hide", "nor a user with no record");
  t.equal(verdicts(readTimePolicy(b, u, true, now + H)), "audience:pass expiry:hide", "an expired broadcast is hidden");
  t.equal(verdicts(readTimePolicy(b, { ...u, optedOut: true }, true, now)), "audience:pass expiry:pass opt_out:hide", "an opt-out hides it");
  t.equal(verdicts(readTimePolicy(b, { ...u, preferences: { categories: { social: { inapp: false } } } }, true, now)), "audience:pass expiry:pass opt_out:pass preferences:hide", "so does in-app off for its category");
  t.equal(verdicts(readTimePolicy(b, { ...u, preferences: { categories: { social: { push: false } } } }, true, now)), "audience:pass expiry:pass opt_out:pass preferences:pass", "push off does not");
  // Without the explanation (the inbox read): the same verdicts for every case above, each `saw` empty.
  for (const [uu, member, at] of [[u, true, now], [u, false, now], [null, true, now], [u, true, now + H], [{ ...u, optedOut: true }, true, now], [{ ...u, preferences: { categories: { social: { inapp: false } } } }, true, now]] as const) {
    const quick = readTimePolicy(b, uu, member, at, false);
    t.equal(verdicts(quick), verdicts(readTimePolicy(b, uu, member, at)), `same verdicts without the explanation (${verdicts(quick)})`);
    t.ok(quick.every((st) => st.saw === ""), "and nothing formatted");
  }
});

t.test("local-time delivery: the next local time per zone, east and west of UTC, the window, DST days", async (t) => {
  const nine = parseHhmm("09:00");
  const at = (iso: string): number => Date.parse(iso);
  const until = (tz: string, now: string, windowMin = 60): string | null => {
    const r = localTimeRelease(tz, nine, windowMin, at(now));
    return r.until === null ? null : new Date(r.until).toISOString();
  };
  // 2026-01-15T06:00Z: Tokyo 15:00, Kolkata 11:30, Berlin 07:00, New York 01:00, Honolulu 20:00 the day before.
  t.equal(until("Europe/Berlin", "2026-01-15T06:00:00Z"), "2026-01-15T08:00:00.000Z", "Berlin at 07:00: today at 09:00 (UTC+1)");
  t.equal(until("America/New_York", "2026-01-15T06:00:00Z"), "2026-01-15T14:00:00.000Z", "New York at 01:00: today (UTC-5)");
  t.equal(until("Asia/Tokyo", "2026-01-15T06:00:00Z"), "2026-01-16T00:00:00.000Z", "Tokyo at 15:00: passed by more than the window, tomorrow");
  t.equal(until("Asia/Kolkata", "2026-01-15T06:00:00Z", 180), null, "Kolkata at 11:30 with a 3 h window: now");
  t.equal(until("Asia/Kolkata", "2026-01-15T06:00:00Z", 150), "2026-01-16T03:30:00.000Z", "with 2 h 30: just past it, tomorrow at 09:00 IST");
  t.equal(until("Pacific/Honolulu", "2026-01-15T06:00:00Z"), "2026-01-15T19:00:00.000Z", "Honolulu at 20:00 the day before: its next morning (UTC-10)");
  t.equal(until("UTC", "2026-01-15T09:00:00Z"), null, "exactly at 09:00: now");
  t.equal(until("UTC", "2026-01-15T09:59:00Z"), null, "59 min past, 60 min window: now");
  t.equal(until("UTC", "2026-01-15T10:00:00Z"), "2026-01-16T09:00:00.000Z", "60 min past: tomorrow");
  t.equal(until("UTC", "2026-01-15T08:59:30Z"), "2026-01-15T09:00:00.000Z", "30 s before: at 09:00 sharp");
  // DST: Berlin springs forward on 2026-03-29 (02:00 → 03:00), falls back on 2026-10-25; New York springs forward on 2026-03-08.
  t.equal(until("Europe/Berlin", "2026-03-28T12:00:00Z"), "2026-03-29T07:00:00.000Z", "Berlin, the night the clocks go forward: 09:00 CEST is 07:00Z");
  t.equal(until("Europe/Berlin", "2026-10-24T12:00:00Z"), "2026-10-25T08:00:00.000Z", "the night they go back: 09:00 CET is 08:00Z");
  t.equal(until("America/New_York", "2026-03-07T20:00:00Z"), "2026-03-08T13:00:00.000Z", "New York over its spring change: 09:00 EDT is 13:00Z");
  const r = localTimeRelease("Europe/Berlin", parseHhmm("02:30"), 60, at("2026-03-28T12:00:00Z"));
  t.equal(new Date(r.until!).toISOString(), "2026-03-29T01:30:00.000Z", "a local time that does not exist (02:30, in the gap): an hour later, 03:30 CEST, as Temporal's \"compatible\" reading");
  // Release order of a campaign's waves: east before west.
  const zones = ["Asia/Tokyo", "Asia/Dubai", "Europe/Berlin", "America/Sao_Paulo", "America/New_York", "Pacific/Honolulu"];
  const waves = zones.map((tz) => localTimeRelease(tz, nine, 60, at("2026-12-03T23:30:00Z")).until!);
  t.same([...waves].sort((a, b) => a - b), waves, "east to west");
  t.same(waves.map((w) => new Date(w).toISOString().slice(11, 16)), ["00:00", "05:00", "08:00", "12:00", "14:00", "19:00"], "each zone's 09:00");
});

t.test("local-time delivery in the policy: held until the local time with the trail; released chunks go; expiry first suppresses", async (t) => {
  const cfg = policyFrom(loadConfig({ overrides: { policy: { defaultTimezone: "Europe/Berlin" } } }));
  const now = Date.parse("2026-01-15T06:00:00Z");
  const n: NotificationBrief = { id: "n_lt", createdAt: now, expiresAt: now + 48 * H, priority: "normal", category: "social", channels: ["push"], content: { push: { title: "a", body: "b" } }, deliverAt: { localTime: parseHhmm("09:00"), windowMin: 60 } };
  const st = (): PolicyState => ({ buckets: new RateBuckets(), dedup: new DedupWindow(3_600_000, () => now) });
  const u: UserRecord = { id: "u", timezone: "America/New_York", devices: [{ id: "d", platform: "ios", token: "t" }] };
  const trail = new Trail();
  t.same(decideUser(cfg, st(), { n, now, released: false }, { user: u, online: false }, trail), { kind: "defer", until: Date.parse("2026-01-15T14:00:00Z") }, "held until 09:00 in the user's zone");
  t.match(parseTrail(trail.s).find((x) => x.rule === "local_time"), { verdict: "defer", saw: "zone America/New_York, local time 01:00: held until 09:00 local, 2026-01-15T14:00:00.000Z" });
  t.same(decideUser(cfg, st(), { n, now, released: false }, { user: { ...u, timezone: undefined }, online: false }), { kind: "defer", until: Date.parse("2026-01-15T08:00:00Z") }, "a user without a zone: the configured default (Berlin)");
  t.equal(decideUser(cfg, st(), { n, now, released: true }, { user: u, online: false }).kind, "send", "a released chunk is sent");
  t.same(decideUser(cfg, st(), { n: { ...n, expiresAt: now + H }, now, released: false }, { user: u, online: false }), { kind: "suppress", reason: "expires_before_local_time" }, "expiring before the local time: suppressed, counted");
});

t.test("digests: fixed and quiet-period windows, the item cap, deterministic ids, checkpoint round trip, the digest's content", async (t) => {
  const n = (id: string, at: number, extra: Partial<NotificationBrief> = {}): NotificationBrief => ({ id, createdAt: at, expiresAt: at + H, priority: "normal", category: "comments", channels: ["push"], content: { push: { title: "New comment", body: id } }, ...extra });
  const fixed = { key: "comments", windowSec: 600, maxSec: 3600, maxItems: 3 };
  const book = new DigestBook();
  const T = Date.parse("2026-03-01T10:00:00Z");
  const a = book.hold("ana", n("n_1", T), fixed, { nid: "n_1", at: T, title: "New comment", body: "first" });
  t.same(a, { id: `n_1-dg${a.id.split("-dg")[1]}`, until: T + 600_000, count: 1 }, "a fixed window closes windowSec after the first item");
  for (let i = 2; i <= 5; i++) book.hold("ana", n(`n_${i}`, T + i * 60_000), fixed, { nid: `n_${i}`, at: T + i * 60_000, body: `item ${i}` });
  t.equal(book.hold("bo", n("n_b", T), fixed, { nid: "n_b", at: T }).count, 1, "another user: a digest of their own");
  t.equal(book.hold("ana", n("n_k", T), { ...fixed, key: "post-7" }, { nid: "n_k", at: T }).count, 1, "another key: a digest of its own");
  t.same(book.due(T + 599_999), [], "nothing due before the window ends");
  const due = book.due(T + 600_000).find((d) => d.user === "ana" && d.key === "comments")!;
  t.equal(due.count, 5, "five held");
  t.same(due.items.map((i) => i.nid), ["n_1", "n_2", "n_3"], "the first maxItems listed");
  t.equal(book.hold("ana", n("n_6", T + 601_000), fixed, { nid: "n_6", at: T + 601_000 }).id.startsWith("n_6-dg"), true, "an item after the window starts the next digest");
  t.equal(digestIdOf("n_1", "ana", "comments"), due.id, "the id is the first item's and a hash of user and key: the same after a replay");

  const restored = new DigestBook();
  restored.restore(book.pack());
  t.same(restored.due(T + 600_000).map((d) => [d.id, d.count]).sort(), book.due(T + 600_000).map((d) => [d.id, d.count]).sort(), "a checkpoint round trip holds the same digests");
  book.remove(due.id);
  t.notOk(book.due(T + 10 * H).some((d) => d.id === due.id), "sent digests are forgotten");

  const quiet = { key: "chat", windowSec: 600, quietSec: 120, maxSec: 900, maxItems: 50 };
  const q = new DigestBook();
  t.equal(q.hold("cy", n("q_1", T), quiet, { nid: "q_1", at: T }).until, T + 120_000, "quiet period: closes 2 min after the first");
  t.equal(q.hold("cy", n("q_2", T + 100_000), quiet, { nid: "q_2", at: T + 100_000 }).until, T + 220_000, "each item pushes it on");
  let last = 0;
  for (let i = 3; i < 10; i++) last = q.hold("cy", n(`q_${i}`, T + (i - 1) * 100_000), quiet, { nid: `q_${i}`, at: T + (i - 1) * 100_000 }).until;
  t.equal(last, T + 900_000, "but never past maxSec after the first");
  t.equal(q.hold("cy", n("q_late", T + 900_000), quiet, { nid: "q_late", at: T + 900_000 }).id.startsWith("q_late-dg"), true, "an item at the close starts the next one");

  const five = digestNotification(due);
  t.match(five, { id: due.id, content: { push: { title: "New comment and 4 more", body: "5 updates. Latest: item 3" } } }, "inline push: the first title, the count, the latest listed");
  t.notOk("digest" in five, "the digest is not held again");
  const tpl = digestNotification({ ...due, brief: n("n_1", T, { content: undefined, template: { template: { id: "c", defaultLocale: "en", channels: { push: { en: { title: "{{digest.count}} comments", body: "{{digest.last.body}}" } } }, variables: [], updatedAt: 0 }, variables: {} } }) });
  t.match(tpl.template?.digest, { count: 5, first: { id: "n_1" }, last: { id: "n_3", body: "item 3" } }, "a template gets digest.count, events, first and last");
  t.same(renderPush(tpl.template!, null), { title: "5 comments", body: "item 3" }, "and renders them");
  t.same(variablesOf("{{digest.count}} {{unsubscribe_url}}"), [], "digest and the consent placeholders are no request variables");
});

t.test("waves are paced at the campaign's rate: a token bucket per campaign", async (t) => {
  const p = new ReleasePacer();
  const T = 1_000_000;
  t.equal(p.wait("c", 400, 0, T), 0, "no rate: at once");
  t.equal(p.wait("c", 400, 1000, T), 0, "a first wave within a second's burst goes");
  t.equal(p.wait("c", 400, 1000, T), 0, "so does a second (800 of 1000)");
  t.equal(p.wait("c", 400, 1000, T), 200, "a third waits until the bucket holds 400 again");
  t.equal(p.wait("c", 400, 1000, T + 200), 0, "and then goes");
  t.equal(p.wait("other", 400, 1000, T + 200), 0, "each campaign has its own bucket");
  t.equal(p.wait("big", 5000, 1000, T), 0, "a wave larger than the burst goes with a full bucket");
  t.equal(p.wait("big", 10, 1000, T + 1000), 3010, "and the next waits until its debt is paid");
});
