// Shedding under overload with a fake clock: the deadline rule, the policy step and its trail, chunk receipts and counters (each shed counted once), the gateway's check before a call, config validation.
import t from "tap";

import { formatStatus } from "../../cmd/format.js";
import { emptyCounters, emptyTotals, fold, foldTotal, outstanding, shedByReason } from "../../lib/campaign/counters.js";
import { loadConfig } from "../../lib/core/config.js";
import { ConfigInvalid } from "../../lib/core/errors.js";
import type { FanChunk, NotificationBrief, UserRecord } from "../../lib/core/types.js";
import { shedDeadline, shedReason, sheds } from "../../lib/flow/shedding.js";
import { beforeSend, pushBackOutcome } from "../../lib/gateway/outcomes.js";
import { decideChunk } from "../../lib/shard/chunk-decision.js";
import { DedupWindow } from "../../lib/shard/dedup-window.js";
import { decideUser, type PolicyConfig, policyFrom } from "../../lib/shard/policy.js";
import { RateBuckets } from "../../lib/shard/rate-buckets.js";
import { parseTrail, Trail } from "../../lib/shard/trails.js";

const T0 = Date.parse("2026-01-15T12:00:00Z");
const S = 1000;
const H = 3_600_000;
const brief = (o: Partial<NotificationBrief> = {}): NotificationBrief => ({
  id: "n_1", createdAt: T0, expiresAt: T0 + 24 * H, priority: "bulk", category: "promo", channels: ["push"], content: { push: { title: "T", body: "B" } }, ...o,
});
const policy = (): PolicyConfig => ({
  categories: {
    promo: { presenceRouting: false, quietHours: false, overload: { overload: "shed", maxDelaySec: 60 } },
    lazy: { presenceRouting: false, quietHours: false, overload: { overload: "shed" } },
    slow: { presenceRouting: false, quietHours: false },
  },
  defaultQuietHours: null,
  fallback: { critical: [], high: [], normal: [], bulk: [] },
  available: new Set(["push"]),
});
const state = (now: number) => ({ buckets: new RateBuckets(() => now), dedup: new DedupWindow(24 * H, () => now) });
const user = (id = "u1"): UserRecord => ({ id, devices: [{ id: "i1", platform: "ios", token: "tok" }] });
const decide = (n: NotificationBrief, now: number, trail?: Trail, releasedAt?: number) =>
  decideUser(policy(), state(now), { n, now, released: releasedAt !== undefined, ...(releasedAt !== undefined ? { releasedAt } : {}) }, { user: user(), online: false }, trail);

t.test("the deadline: max delay or expiry, whichever is first; only normal and bulk of a shedding category", async (t) => {
  const rule = { overload: "shed" as const, maxDelaySec: 60 };
  t.equal(shedDeadline(rule, brief()), T0 + 60 * S);
  t.equal(shedDeadline(rule, brief({ expiresAt: T0 + 30 * S })), T0 + 30 * S, "expiry first");
  t.equal(shedDeadline({ overload: "shed" }, brief()), T0 + 24 * H, "no max delay: the expiry");
  t.equal(shedDeadline(rule, brief(), T0 + H), T0 + H + 60 * S, "counted from the end of quiet hours for a released recipient");
  for (const p of ["critical", "high"] as const) t.equal(shedDeadline(rule, brief({ priority: p })), null, `${p} is never shed`);
  t.equal(shedDeadline({ overload: "delay" }, brief()), null, "a delaying category is never shed");
  t.equal(shedDeadline(undefined, brief()), null);
  t.ok(sheds(rule, "normal") && sheds(rule, "bulk"));
  t.equal(shedReason(T0 + 60 * S, T0 + H, T0 + 60 * S), null, "at the deadline: still goes");
  t.equal(shedReason(T0 + 60 * S, T0 + H, T0 + 60 * S + 1), "max_delay", "past it: shed");
  t.equal(shedReason(T0 + H, T0 + H, T0 + H), "expired", "at expiry: expired");
  t.equal(shedReason(T0 + 60 * S, T0 + H, T0 + 2 * H), "max_delay", "both passed: the earlier deadline names the reason");
});

t.test("policy: normal and bulk past their deadline are shed, first rule, with a trail step", async (t) => {
  t.equal(decide(brief(), T0 + 60 * S).kind, "send", "within the max delay: sent");
  for (const priority of ["normal", "bulk"] as const) {
    t.same(decide(brief({ priority }), T0 + 61 * S), { kind: "shed", reason: "max_delay", deadline: T0 + 60 * S }, `${priority} past max delay`);
  }
  t.same(decide(brief({ category: "lazy" }), T0 + 24 * H), { kind: "shed", reason: "expired", deadline: T0 + 24 * H }, "expired, in a shedding category: shed, not suppressed");
  t.equal(decide(brief({ category: "lazy" }), T0 + 2 * H).kind, "send", "no max delay: only expiry sheds");
  for (const priority of ["critical", "high"] as const) {
    t.equal(decide(brief({ priority }), T0 + H).kind, "send", `${priority} is never shed for delay`);
    t.same(decide(brief({ priority }), T0 + 24 * H), { kind: "suppress", reason: "expired" }, `${priority} expired: suppressed as before`);
  }
  t.equal(decide(brief({ category: "slow" }), T0 + 12 * H).kind, "send", "a delaying category sends late");
  t.same(decide(brief({ category: "slow" }), T0 + 24 * H), { kind: "suppress", reason: "expired" }, "and suppresses at expiry, as before");
  t.equal(decide(brief(), T0 + 2 * H, undefined, T0 + 2 * H - 10 * S).kind, "send", "released after quiet hours: the delay counts from the release");

  const shed = new Trail();
  decide(brief(), T0 + 61 * S, shed);
  const steps = parseTrail(shed.s);
  t.same(steps.map((s) => `${s.rule}:${s.verdict}`), ["overload:shed"], "the shed step decides, before expiry");
  t.equal(shed.s, `overload|shed|max_delay|${T0 + 60 * S}\n`);
  t.match(steps[0].saw, "shed (max_delay): not sent by its deadline 2026-01-15T12:01:00.000Z");
  const pass = new Trail();
  decide(brief(), T0 + S, pass);
  t.same(parseTrail(pass.s).slice(0, 2).map((s) => `${s.rule}:${s.verdict}`), ["overload:pass", "expiry:pass"]);
  const none = new Trail();
  decide(brief({ category: "slow" }), T0 + S, none);
  t.equal(parseTrail(none.s)[0].rule, "expiry", "a delaying category has no overload step");
});

t.test("chunks: one shed entry per recipient, explicit or campaign; sends carry the deadline; counters count each once", async (t) => {
  const users = ["a", "b", "c"];
  const recs = users.map((u) => user(u));
  const inputs = (now: number) => ({ users: recs, online: null, now, cancelled: false, policy: policy(), state: state(now), trails: true });
  for (const segment of [undefined, "all"]) {
    const chunk: FanChunk = { type: "fan_chunk", shard: 0, chunk: 0, notification: brief(segment ? { segment } : {}), users };
    const d = decideChunk(chunk, inputs(T0 + 61 * S));
    t.same(d.receipts.map((r) => `${r.user}:${r.outcome}:${r.reason}`), ["a:shed:max_delay", "b:shed:max_delay", "c:shed:max_delay"], segment ? "campaign" : "explicit");
    t.equal(d.sends.apns.length, 0, "nothing sent");
    t.equal(d.queued, 0);
    t.equal(d.decided, 3);
    const c = emptyCounters();
    fold(c, { type: "receipts", nid: "n_1", stage: "shard", entries: d.receipts, decided: d.decided, queued: d.queued });
    t.same(c.shed, { max_delay: 3 }, "each shed recipient counted once");
    t.same(c.suppressed, {});
    t.equal(outstanding(c), 0);
    t.same(d.trails!.trails, [`overload|shed|max_delay|${T0 + 60 * S}\n`], "one trail, stored once");
  }
  const ok = decideChunk({ type: "fan_chunk", shard: 0, chunk: 0, notification: brief(), users }, inputs(T0 + S));
  t.same(ok.sends.apns.map((s) => s.shedAfter), [T0 + 60 * S, T0 + 60 * S, T0 + 60 * S], "sends carry their shed deadline");
  const rel = decideChunk({ type: "fan_chunk", shard: 0, chunk: 0, notification: brief(), users, release: T0 + 5 * H }, inputs(T0 + 5 * H + S));
  t.equal(rel.sends.apns[0].shedAfter, T0 + 5 * H + 60 * S, "a released chunk's deadline counts from the release");
  const hi = decideChunk({ type: "fan_chunk", shard: 0, chunk: 0, notification: brief({ priority: "high" }), users }, inputs(T0 + S));
  t.equal(hi.sends.apns[0].shedAfter, undefined, "high sends carry none");
});

t.test("counters: a send shed at the gateway leaves the queue once; per-channel totals; echoes not counted", async (t) => {
  const c = emptyCounters();
  fold(c, { type: "receipts", nid: "n_1", stage: "shard", entries: [], decided: 2, queued: 2 });
  const e = { user: "a", outcome: "shed" as const, reason: "max_delay", channel: "apns" as const, device: "i1", at: T0 };
  fold(c, { type: "receipts", nid: "n_1", stage: "gateway", entries: [e, { ...e, user: "b", reason: "expired" }, { ...e, echo: true }] });
  t.same(c.shedSends, { max_delay: 1, expired: 1 });
  t.same(c.shed, {});
  t.equal(outstanding(c), 0, "shed sends are finished");
  t.same(shedByReason({ ...c, shed: { max_delay: 2 } }), { max_delay: 3, expired: 1 });
  const tot = emptyTotals();
  foldTotal(tot, e);
  t.equal(tot.channels.push.shed, 1);
  t.equal(tot.channels.push.failed, 0);
});

t.test("gateway: past the deadline a send is shed before any call; without a deadline expiry fails as before", async (t) => {
  const n = brief();
  t.equal(beforeSend(n, undefined, false, "apns", T0 + 60 * S, T0 + 60 * S), null, "in time: it goes");
  t.same(beforeSend(n, undefined, false, "apns", T0 + 61 * S, T0 + 60 * S), { outcome: "shed", reason: "max_delay", at: T0 + 61 * S });
  t.same(beforeSend(n, undefined, false, "apns", T0 + 24 * H, T0 + 24 * H), { outcome: "shed", reason: "expired", at: T0 + 24 * H });
  t.same(beforeSend(n, undefined, true, "apns", T0 + 61 * S, T0 + 60 * S), { outcome: "cancelled", at: T0 + 61 * S }, "cancellation first");
  t.same(beforeSend(n, { id: "u1", optedOut: true, devices: [] }, false, "apns", T0 + 61 * S, T0 + 60 * S), { outcome: "suppressed", reason: "opted_out", at: T0 + 61 * S }, "the re-check first");
  t.same(beforeSend(n, undefined, false, "apns", T0 + 24 * H), { outcome: "failed", reason: "expired", at: T0 + 24 * H }, "no deadline (delaying category, critical, high): failed/expired as before");
});

t.test("push-back: a wait past the shed deadline sheds at once; within it the send waits", async (t) => {
  const s = { nid: "n_1", user: "u1", device: "d1", token: "tok", shedAfter: T0 + 60 * S };
  const ctx = { now: T0, expiresAt: T0 + H, random: () => 0 };
  t.equal(pushBackOutcome(s, 2000, "queue_full", ctx).kind, "wait", "a 2 s wait fits before the deadline");
  t.same(pushBackOutcome(s, 120_000, "breaker_open", ctx), { kind: "shed", record: { outcome: "shed", reason: "max_delay", at: T0 } }, "a wait past it: shed now");
  t.same(pushBackOutcome({ ...s, shedAfter: T0 + H }, 2 * H, "breaker_open", ctx), { kind: "shed", record: { outcome: "shed", reason: "expired", at: T0 } }, "past expiry in a shedding category: shed, expired");
  t.same(pushBackOutcome({ ...s, shedAfter: undefined }, 2 * H, "breaker_open", ctx).kind, "expired", "no deadline: failed as expired, as before");
  t.equal(pushBackOutcome(s, 120_000, "claimed", ctx).kind, "wait", "a key another attempt holds is not recorded here: the send waits and is checked when it comes back");
});

t.test("status: shed lines are final and counted with their reasons", async (t) => {
  const counts = { accepted: 1, sent: 0, delivered: 0, failed: 0, expired: 0, queued: 0, suppressed: 0, deferred: 0, digested: 0, cancelled: 0, fallback: 0, shed: 1, shedReasons: { max_delay: 1 }, opened: 0, clicked: 0, pending: 0 };
  const out = formatStatus({ id: "n_1", priority: "bulk", category: "promo", createdAt: T0, expiresAt: T0 + H, recipients: 1, counts, complete: true, lines: [{ user: "a", outcome: "shed", reason: "max_delay", at: T0 }], path: "write" });
  t.match(out, "shed=1");
  t.match(out, "shed under overload: max_delay 1");
});

t.test("config: overload defaults to delay; maxDelaySec only with shed, within bounds", async (t) => {
  const cfg = loadConfig({ env: {} });
  t.equal(cfg.categories.marketing.overload, "delay", "the defaults keep today's behaviour");
  t.equal(policyFrom(cfg).categories.marketing.overload, undefined, "a delaying category carries no overload rule");
  const promo = { defaultPriority: "bulk", overload: "shed", maxDelaySec: 120 };
  const p = policyFrom(loadConfig({ env: {}, overrides: { categories: { promo } } }));
  t.same(p.categories.promo.overload, { overload: "shed", maxDelaySec: 120 });
  t.throws(() => loadConfig({ env: {}, overrides: { categories: { promo: { maxDelaySec: 120 } } } }), ConfigInvalid);
  t.throws(() => loadConfig({ env: {}, overrides: { categories: { promo: { defaultPriority: "bulk", maxDelaySec: 120 } } } }), /categories\.promo\.maxDelaySec/, "names the path");
  t.throws(() => loadConfig({ env: {}, overrides: { categories: { promo: { ...promo, maxDelaySec: 0 } } } }), /maxDelaySec/);
  t.throws(() => loadConfig({ env: {}, overrides: { categories: { promo: { ...promo, maxDelaySec: 31 * 86400 } } } }), /maxDelaySec/);
  t.throws(() => loadConfig({ env: {}, overrides: { categories: { promo: { ...promo, overload: "drop" } } } }), /overload/);
});
