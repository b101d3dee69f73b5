// Retry planning, Retry-After parsing, the bulkhead (breaker, queue limit, rate limit) and sandbox fault rules, each on its own.
import t from "tap";

import { loadConfig } from "../../lib/core/config.js";
import { ProviderError } from "../../lib/core/errors.js";
import { createLogger } from "../../lib/core/log.js";
import { Bulkhead, RateLimit, type SendResult } from "../../lib/flow/bulkhead.js";
import { backoffMs, parseRetryAfter, planRetry, planWait } from "../../lib/gateway/retry-policy.js";
import { Faults } from "../../sandbox/faults.js";

const cfg = loadConfig({ env: {} });
const r = cfg.gateways.retry;
const log = createLogger({ ...cfg.log, level: "silent" });
const fail = (o: { retryable?: boolean } = {}): SendResult => ({ ok: false, error: new ProviderError("x", { reason: "ServiceUnavailable", retryable: o.retryable ?? true }) });

t.test("backoff doubles per attempt, jittered within [half, all], capped", async (t) => {
  t.same([1, 2, 3].map((a) => backoffMs(r, a, { quota: false }, () => 1)), [1000, 2000, 4000], "1 s, 2 s, 4 s at the top of the jitter");
  t.same([1, 2, 3].map((a) => backoffMs(r, a, { quota: false }, () => 0)), [500, 1000, 2000], "half of it at the bottom");
  t.equal(backoffMs(r, 30, { quota: false }, () => 1), r.maxMs, "never above maxMs");
});

t.test("never before Retry-After; at least a minute after a quota error", async (t) => {
  t.equal(backoffMs(r, 1, { retryAfterMs: 7000, quota: false }, () => 1), 7000, "Retry-After longer than the backoff wins");
  t.equal(backoffMs(r, 1, { retryAfterMs: 10, quota: false }, () => 1), 1000, "a shorter Retry-After does not shorten the backoff");
  t.equal(backoffMs(r, 1, { quota: true }, () => 0), 60_000, "FCM QUOTA_EXCEEDED waits gateways.retry.quotaMs (60 s)");
});

t.test("retry plans: retry, dead letter after maxAttempts, expired when the wait outlasts the notification", async (t) => {
  const now = 1_000_000;
  t.same(planRetry(r, 1, { quota: false }, now, now + 3_600_000, () => 1), { kind: "retry", at: now + 1000 });
  t.same(planRetry(r, r.maxAttempts, { quota: false }, now, now + 3_600_000), { kind: "dead" }, `dead after ${r.maxAttempts} attempts`);
  t.same(planRetry(r, 1, { quota: true }, now, now + 30_000), { kind: "expired" }, "a quota wait past expiry fails the send now");
  t.equal(planWait(1000, 0, now, now + 500), null, "a push-back past expiry is refused");
  const w = planWait(1000, 3, now, now + 3_600_000, () => 0)!;
  t.equal(w - now, 3375, "push-backs grow by half per earlier wait");
});

t.test("Retry-After: seconds or an HTTP date", async (t) => {
  t.equal(parseRetryAfter("7"), 7000);
  t.equal(parseRetryAfter(["2"]), 2000);
  t.equal(parseRetryAfter(new Date(10_000).toUTCString(), 4000), 6000);
  t.equal(parseRetryAfter(undefined), undefined);
  t.equal(parseRetryAfter("soon"), undefined, "unreadable: ignored");
});

t.test("breaker: opens after consecutive failed requests, refuses without calling, half-opens, closes on success", async (t) => {
  const b = new Bulkhead("a", { concurrency: 4, queueLimit: 10, ratePerSec: 0, breaker: { failures: 3, halfOpenAfterMs: 200 } }, log);
  let calls = 0;
  const failing = (): Promise<SendResult[]> => (calls++, Promise.resolve([fail()]));
  for (let i = 0; i < 3; i++) t.ok(Array.isArray(await b.run(1, failing)), `failure ${i + 1} reaches the provider`);
  t.equal(b.state().breaker, "open", "open after 3 consecutive failures");
  t.same(await b.run(1, failing), { refused: "breaker_open", retryInMs: 200 }, "refused while open");
  t.equal(calls, 3, "the provider was not called while open");
  await new Promise((res) => setTimeout(res, 250));
  t.equal(b.state().breaker, "half-open", "half-open after halfOpenAfterMs");
  t.ok(Array.isArray(await b.run(1, () => (calls++, Promise.resolve([{ ok: true }])))), "one trial request goes through");
  t.equal(b.state().breaker, "closed", "and its success closes the breaker");

  const c = new Bulkhead("c", { concurrency: 1, queueLimit: 10, ratePerSec: 0, breaker: { failures: 2, halfOpenAfterMs: 60_000 } }, log);
  await c.run(1, failing);
  await c.run(1, () => Promise.resolve([fail({ retryable: false })]));
  await c.run(1, failing);
  t.equal(c.state().breaker, "closed", "a permanent error (bad token) is not a provider failure and breaks the run");
});

t.test("breaker of an app whose sends are calls of their own: failed sends counted, not requests", async (t) => {
  const b = new Bulkhead("p", { concurrency: 64, queueLimit: 10, ratePerSec: 0, breaker: { failures: 5, halfOpenAfterMs: 60_000 } }, log, true);
  const failing = (n: number) => (): Promise<SendResult[]> => Promise.resolve(Array.from({ length: n }, () => fail()));
  await b.run(1, failing(1), 1);
  await b.run(3, failing(3), 3);
  t.equal(b.state().breaker, "closed", "4 failed sends: still closed");
  await b.run(1, () => Promise.resolve([{ ok: true }]), 1);
  await b.run(4, failing(4), 4);
  t.equal(b.state().breaker, "closed", "a success started the count again: 4");
  await b.run(1, failing(1), 1);
  t.equal(b.state().breaker, "open", "the fifth failed send in a row opens it");
  const one = new Bulkhead("e", { concurrency: 4, queueLimit: 10, ratePerSec: 0, breaker: { failures: 2, halfOpenAfterMs: 60_000 } }, log);
  await one.run(500, failing(500));
  t.equal(one.state().breaker, "closed", "a request that is one provider call (an email request) counts once, whatever its sends");
});

t.test("bulkhead full: beyond queueLimit waiting requests, refused at once", async (t) => {
  const b = new Bulkhead("q", { concurrency: 1, queueLimit: 1, ratePerSec: 0, breaker: { failures: 100, halfOpenAfterMs: 1000 } }, log);
  let release!: () => void;
  const gate = new Promise<void>((res) => (release = res));
  const slow = async (): Promise<SendResult[]> => (await gate, [{ ok: true }]);
  const a = b.run(1, slow);
  const q = b.run(1, slow);
  t.same(await b.run(1, slow), { refused: "bulkhead_full", retryInMs: 1000 }, "third request refused: one in flight, one queued");
  release();
  t.ok(Array.isArray(await a) && Array.isArray(await q), "the admitted two complete");
});

t.test("grouped calls: a group takes one slot per send; a waiting group is not overtaken; one too big runs alone", async (t) => {
  const b = new Bulkhead("g", { concurrency: 4, queueLimit: 100, ratePerSec: 0, breaker: { failures: 100, halfOpenAfterMs: 1000 } }, log);
  const gates: (() => void)[] = [];
  const order: string[] = [];
  const call = (name: string, n: number) => (): Promise<SendResult[]> => (order.push(name), new Promise((res) => gates.push(() => res(Array.from({ length: n }, () => ({ ok: true }))))));
  const a = b.run(3, call("a3", 3), 3);
  const c = b.run(2, call("c2", 2), 2);
  const d = b.run(1, call("d1", 1), 1);
  await new Promise((res) => setImmediate(res));
  t.same(order, ["a3"], "3 of 4 slots taken: the group of 2 waits, and the single send behind it waits too");
  t.same([b.state().inFlight, b.state().queued], [3, 3], "in flight and queued count sends");
  gates.shift()!();
  await a;
  await new Promise((res) => setImmediate(res));
  t.same(order, ["a3", "c2", "d1"], "both start once the group of 3 is done");
  gates.splice(0).forEach((g) => g());
  await Promise.all([c, d]);
  const big = b.run(6, call("big6", 6), 6);
  await new Promise((res) => setImmediate(res));
  t.same(order.at(-1), "big6", "a group larger than the limit runs when nothing else does");
  gates.splice(0).forEach((g) => g());
  t.equal((await big as SendResult[]).length, 6);
  t.equal(b.state().inFlight, 0, "every slot released");
});

t.test("rate limit: sends are spaced at the quota after a one-second burst", async (t) => {
  const clock = 0;
  const rl = new RateLimit(100, () => clock);
  const t0 = performance.now();
  await rl.take(100); // the burst
  await rl.take(10); // 100 ms past the burst → waits about 100 ms
  t.ok(performance.now() - t0 >= 90, "the 101st send waited for the quota");
});

t.test("sandbox faults: error rates per code, outage windows, latency, matching", async (t) => {
  let roll = 0;
  const f = new Faults(() => roll);
  f.add({ provider: "apns", prefix: "x-", errors: [{ code: "429", rate: 0.3, retryAfterSec: 5 }, { code: "503", rate: 0.2 }], latencyMs: 40 });
  roll = 0.1;
  t.same(f.decide("apns", { token: "x-1" }), { delayMs: 40, error: { code: "429", retryAfterSec: 5 } });
  roll = 0.4;
  t.same(f.decide("apns", { token: "x-1" }), { delayMs: 40, error: { code: "503" } });
  roll = 0.6;
  t.same(f.decide("apns", { token: "x-1" }), { delayMs: 40 }, "past the error rates: success, still delayed");
  t.same(f.decide("apns", { token: "y-1" }), { delayMs: 0 }, "other tokens are untouched");
  t.same(f.decide("fcm", { token: "x-1" }), { delayMs: 0 }, "other providers are untouched");
  const id = f.add({ provider: "twilio", account: "AC1", outage: { startsInMs: 0, forMs: 1000 } }, 5000);
  t.same(f.decide("twilio", { token: "+1", account: "AC1" }, 5500).error, { code: "503" }, "inside the outage window");
  t.equal(f.decide("twilio", { token: "+1", account: "AC1" }, 6500).error, undefined, "after it");
  t.equal(f.decide("twilio", { token: "+1", account: "AC2" }, 5500).error, undefined, "another account");
  t.equal(f.remove({ id }), 1);
  t.throws(() => f.add({ provider: "apns", errors: [{ code: "503", rate: 0.8 }, { code: "429", rate: 0.5 }] }), /rates must sum to at most 1/);
  t.throws(() => f.add({ provider: "pigeon" }), /provider/);
});
