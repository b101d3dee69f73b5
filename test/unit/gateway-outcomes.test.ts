// What a provider answer or a refusal means for one send (sent, failed, retry at, expired, dead letter, push-back), and the receipt collector, without servers.
import t from "tap";

import { loadConfig } from "../../lib/core/config.js";
import { ProviderError } from "../../lib/core/errors.js";
import type { NotificationBrief, Send, SendBatch, UserRecord } from "../../lib/core/types.js";
import type { SendResult } from "../../lib/flow/bulkhead.js";
import { answerOutcome, beforeSend, pushBackOutcome, releaseOf, tokenGone } from "../../lib/gateway/outcomes.js";
import { ReceiptCollector } from "../../lib/gateway/receipts.js";
import { recheck } from "../../lib/gateway/send-recheck.js";

const retry = loadConfig({ env: {} }).gateways.retry;
const NOW = 1_700_000_000_000;
const HOUR = 3_600_000;
const s: Send = { nid: "n1", user: "u1", device: "d1", token: "tok" };
const top = (): number => 1;
const bottom = (): number => 0;
const ctx = (o: { expiresAt?: number; random?: () => number } = {}) => ({ retry, now: NOW, expiresAt: o.expiresAt ?? NOW + HOUR, random: o.random ?? top });
const fail = (o: { reason?: string; retryable?: boolean; tokenInvalid?: boolean; retryAfterMs?: number; quota?: boolean } = {}): SendResult => ({
  ok: false,
  error: new ProviderError("x", { reason: o.reason ?? "ServiceUnavailable", retryable: o.retryable ?? true, ...(o.tokenInvalid ? { tokenInvalid: true } : {}), ...(o.retryAfterMs !== undefined ? { retryAfterMs: o.retryAfterMs } : {}), ...(o.quota ? { quota: true } : {}) }),
});

t.test("accepted: recorded as sent with the provider's id, at now", async (t) => {
  t.same(answerOutcome(s, { ok: true, providerId: "p-1" }, ctx()), { kind: "sent", record: { outcome: "sent", providerId: "p-1", at: NOW } });
  const o = answerOutcome(s, { ok: true }, ctx());
  t.equal(o.kind, "sent");
  t.equal(JSON.stringify(o.kind === "sent" && o.record), JSON.stringify({ outcome: "sent", at: NOW }), "no provider id: none in the record");
});

t.test("permanent failure: recorded as failed with the provider's reason, no attempt counted", async (t) => {
  t.same(answerOutcome(s, fail({ reason: "BadDeviceToken", retryable: false }), ctx()), { kind: "failed", record: { outcome: "failed", reason: "BadDeviceToken", at: NOW } });
  t.same(answerOutcome({ ...s, attempt: retry.maxAttempts }, fail({ reason: "PayloadTooLarge", retryable: false }), ctx()), { kind: "failed", record: { outcome: "failed", reason: "PayloadTooLarge", at: NOW } }, "even on the last attempt it fails, not dead-letters");
});

t.test("token invalid: reported gone, then fails like any permanent failure", async (t) => {
  const r = fail({ reason: "Unregistered", retryable: false, tokenInvalid: true });
  t.ok(tokenGone(r), "the runner lets the directory drop the token first");
  t.notOk(tokenGone(fail({ retryable: false })), "another permanent failure is not a gone token");
  t.notOk(tokenGone({ ok: true }), "an accepted send is not a gone token");
  t.same(answerOutcome(s, r, ctx()), { kind: "failed", record: { outcome: "failed", reason: "Unregistered", at: NOW } });
});

t.test("retryable: back on NFX_RETRY with backoff, the attempt counted", async (t) => {
  t.same(answerOutcome(s, fail(), ctx({ random: top })), { kind: "retry", send: { ...s, attempt: 1 }, at: NOW + retry.baseMs }, "first retry after baseMs at the top of the jitter");
  t.same(answerOutcome(s, fail(), ctx({ random: bottom })), { kind: "retry", send: { ...s, attempt: 1 }, at: NOW + retry.baseMs / 2 }, "half of it at the bottom");
  t.same(answerOutcome({ ...s, attempt: 2 }, fail(), ctx({ random: top })), { kind: "retry", send: { ...s, attempt: 3 }, at: NOW + retry.baseMs * 4 }, "doubles per attempt");
  t.equal(s.attempt, undefined, "the send passed in is not changed");
});

t.test("Retry-After: never sooner than the provider asked; a shorter one does not shorten the backoff", async (t) => {
  t.same(answerOutcome(s, fail({ retryAfterMs: 7000 }), ctx()), { kind: "retry", send: { ...s, attempt: 1 }, at: NOW + 7000 });
  t.same(answerOutcome(s, fail({ retryAfterMs: 10 }), ctx()), { kind: "retry", send: { ...s, attempt: 1 }, at: NOW + retry.baseMs });
});

t.test("quota error: at least quotaMs (a minute)", async (t) => {
  t.same(answerOutcome(s, fail({ reason: "QUOTA_EXCEEDED", quota: true }), ctx({ random: bottom })), { kind: "retry", send: { ...s, attempt: 1 }, at: NOW + retry.quotaMs });
});

t.test("expiry: a retry at or after expiresAt fails now as expired:<reason>", async (t) => {
  t.same(answerOutcome(s, fail({ reason: "QUOTA_EXCEEDED", quota: true }), ctx({ expiresAt: NOW + 30_000 })), { kind: "expired", record: { outcome: "failed", reason: "expired:QUOTA_EXCEEDED", at: NOW } });
  t.same(answerOutcome(s, fail({ retryAfterMs: 5000 }), ctx({ expiresAt: NOW + 5000 })), { kind: "expired", record: { outcome: "failed", reason: "expired:ServiceUnavailable", at: NOW } }, "exactly at expiry is too late");
  t.equal(answerOutcome(s, fail({ retryAfterMs: 5000 }), ctx({ expiresAt: NOW + 5001 })).kind, "retry", "just before expiry still retries");
});

t.test("attempts exhausted: to the dead letter stream, receipt dead_letter:<reason>", async (t) => {
  const o = answerOutcome({ ...s, attempt: retry.maxAttempts - 1 }, fail({ reason: "InternalServerError" }), ctx());
  t.same(o, {
    kind: "dead", send: { ...s, attempt: retry.maxAttempts }, attempts: retry.maxAttempts, reason: "InternalServerError",
    receipt: { outcome: "failed", reason: "dead_letter:InternalServerError", at: NOW },
  });
  t.equal(answerOutcome({ ...s, attempt: retry.maxAttempts - 2 }, fail(), ctx()).kind, "retry", "one attempt earlier still retries");
  t.equal(answerOutcome({ ...s, attempt: retry.maxAttempts - 1 }, fail(), ctx({ expiresAt: NOW + 1 })).kind, "dead", "attempts running out wins over expiry");
});

t.test("bulkhead refusal: pushed back without using an attempt, growing per wait; expired when past expiry", async (t) => {
  t.same(pushBackOutcome(s, 1000, "breaker_open", { now: NOW, expiresAt: NOW + HOUR, random: bottom }), { kind: "wait", send: { ...s, waits: 1 }, at: NOW + 1000 });
  t.same(pushBackOutcome({ ...s, attempt: 2, waits: 3 }, 1000, "queue_full", { now: NOW, expiresAt: NOW + HOUR, random: bottom }), { kind: "wait", send: { ...s, attempt: 2, waits: 4 }, at: NOW + 3375 }, "grows by half per earlier wait; attempt untouched");
  t.same(pushBackOutcome(s, 1000, "breaker_open", { now: NOW, expiresAt: NOW + HOUR, random: top }), { kind: "wait", send: { ...s, waits: 1 }, at: NOW + 1200 }, "20% jitter at the top");
  t.same(pushBackOutcome(s, 2000, "claimed", { now: NOW, expiresAt: NOW + 1500, random: bottom }), { kind: "expired", record: { outcome: "failed", reason: "expired:claimed", at: NOW } });
  t.same(pushBackOutcome(s, 1000, "breaker_open", { now: NOW, expiresAt: NOW + 1000, random: bottom }), { kind: "expired", record: { outcome: "failed", reason: "expired:breaker_open", at: NOW } }, "exactly at expiry is too late");
});

t.test("send-time re-check: opted out, channel turned off, or still allowed", async (t) => {
  const n = { id: "n1", category: "social", priority: "normal", createdAt: NOW, expiresAt: NOW + HOUR } as Parameters<typeof recheck>[1];
  t.equal(recheck({ id: "u1", optedOut: true, devices: [] }, n, "apns"), "opted_out");
  t.equal(recheck({ id: "u1", optedOut: false, devices: [], preferences: { categories: { social: { push: false } } } }, n, "apns"), "preference_off");
  t.equal(recheck({ id: "u1", optedOut: false, devices: [], preferences: { categories: { social: { push: false } } } }, n, "email"), null, "another channel's preference does not matter");
  t.equal(recheck({ id: "u1", optedOut: false, devices: [] }, n, "apns"), null);
});

t.test("receipt collector: entries per notification, in the order added", async (t) => {
  const c = new ReceiptCollector();
  c.add("n2", { user: "a", outcome: "sent", at: 1 });
  c.add("n1", { user: "b", outcome: "failed", at: 2 });
  c.add("n2", { user: "c", outcome: "queued", at: 3 });
  t.same([...c.entries()], [["n2", [{ user: "a", outcome: "sent", at: 1 }, { user: "c", outcome: "queued", at: 3 }]], ["n1", [{ user: "b", outcome: "failed", at: 2 }]]]);
});

t.test("before the call: suppressed by a changed user, then cancelled, then expired, else it goes", async (t) => {
  const n = { id: "n1", category: "social", priority: "normal", createdAt: NOW, expiresAt: NOW + HOUR } as NotificationBrief;
  const out: UserRecord = { id: "u1", optedOut: true, devices: [] };
  t.equal(beforeSend(n, undefined, false, "apns", NOW), null, "unchanged, not cancelled, not expired: sent");
  t.equal(beforeSend(n, { id: "u1", optedOut: false, devices: [] }, false, "apns", NOW), null, "changed but still allowed: sent");
  t.same(beforeSend(n, out, true, "apns", NOW), { outcome: "suppressed", reason: "opted_out", at: NOW }, "the re-check comes first");
  t.same(beforeSend(n, undefined, true, "apns", NOW + 2 * HOUR), { outcome: "cancelled", at: NOW + 2 * HOUR }, "then cancellation");
  t.same(beforeSend(n, undefined, false, "apns", NOW + HOUR), { outcome: "failed", reason: "expired", at: NOW + HOUR }, "expired at expiresAt");
});

t.test("release of pushed-back sends: due with the last, id from batch id, kind and highest attempt + waits, only their notifications", async (t) => {
  const batch: SendBatch = {
    type: "send_batch", channel: "apns", shard: 3, decidedAt: NOW,
    notifications: { n1: { id: "n1", expiresAt: NOW + HOUR } as NotificationBrief, n2: { id: "n2", expiresAt: NOW + HOUR } as NotificationBrief },
    sends: [s, { ...s, nid: "n2" }],
  };
  const later = [{ send: { ...s, attempt: 2 }, at: NOW + 5000 }, { send: { ...s, user: "u2", attempt: 1, waits: 3 }, at: NOW + 9000 }];
  const rb = releaseOf(batch, "snd:x:apns:0", "high", "retry", later);
  t.equal(rb.type, "retry_batch");
  t.equal(rb.due, NOW + 9000, "due when the last one is");
  t.equal(rb.priority, "high");
  t.match(rb.releaseId, /^rty:[A-Za-z0-9_-]{16}:retry:4$/, "rty:<16 chars of the batch id's hash>:<kind>:<highest attempt + waits>");
  t.equal(releaseOf(batch, "snd:x:apns:0", "high", "retry", later).releaseId, rb.releaseId, "a redelivered batch plans the same release");
  t.not(releaseOf(batch, "snd:y:apns:0", "high", "retry", later).releaseId, rb.releaseId, "another batch, another release");
  t.same(rb.batch.sends, later.map((l) => l.send), "carries the pushed-back sends");
  t.same(Object.keys(rb.batch.notifications), ["n1"], "only the notifications its sends need");
  t.equal(rb.batch.shard, 3);
  t.equal(rb.batch.decidedAt, NOW, "the rest of the batch is kept");
});
