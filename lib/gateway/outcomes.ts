// What happens to a send, decided without I/O: before the call (suppressed, cancelled, shed, expired), from the provider's answer (sent, failed, retry at, expired, dead letter), on a refusal (push-back), and the held batch that carries pushed-back sends.
import { createHash } from "node:crypto";

import type { RetryConfig } from "../../config/schema.js";
import { type Channel, MSGID, type Priority } from "../core/subjects.js";
import type { NotificationBrief, ReceiptEntry, RetryBatch, Send, SendBatch, UserRecord } from "../core/types.js";
import type { SendResult } from "../flow/bulkhead.js";
import { shedReason } from "../flow/shedding.js";
import { planRetry, planWait } from "./retry-policy.js";
import { recheck } from "./send-recheck.js";

/** What is recorded per delivered key: enough to re-emit the same receipt on a replay. */
export type Recorded = Pick<ReceiptEntry, "outcome" | "reason" | "providerId" | "at">;

/**
 * What settles send `s` of notification `n` on `channel` before any provider
 * call, or null when it may go (`commercial`: `n`'s category is): `suppressed` (with the {@link recheck} reason)
 * when `changed` — the user's current record, given only if it changed after
 * the decision — forbids it; `cancelled` when its campaign was cancelled;
 * `shed` (reason `max_delay` or `expired`) when the send carries a shed
 * deadline (`shedAfter`: a normal or bulk send of a category with
 * `overload: "shed"`) that has passed; `failed` / `expired` when `n` expired
 * at or before `now`. Checked in that order. Pure.
 */
export function beforeSend(n: NotificationBrief, changed: UserRecord | undefined, cancelled: boolean, channel: Channel, now: number, shedAfter?: number, commercial = false): Recorded | null {
  const why = changed && recheck(changed, n, channel, commercial);
  if (why) return { outcome: "suppressed", reason: why, at: now };
  if (cancelled) return { outcome: "cancelled", at: now };
  const shed = shedAfter !== undefined ? shedReason(shedAfter, n.expiresAt, now) : null;
  if (shed) return { outcome: "shed", reason: shed, at: now };
  if (n.expiresAt <= now) return { outcome: "failed", reason: "expired", at: now };
  return null;
}

/** The outcome of one send's provider answer. */
export type AnswerOutcome =
  /** Accepted by the provider: recorded as sent. */
  | { kind: "sent"; record: Recorded }
  /** Failed for good (permanent error, or a token the provider reports gone): recorded as failed. */
  | { kind: "failed"; record: Recorded }
  /** Retryable, but the next attempt would come after the notification expires: recorded as failed (`expired:<reason>`). */
  | { kind: "expired"; record: Recorded }
  /** Retryable: `send` (its `attempt` counted) goes back on NFX_RETRY, due at `at`. */
  | { kind: "retry"; send: Send; at: number }
  /**
   * Attempts ran out: `send` (its `attempt` counted) goes to the dead-letter
   * stream after `attempts` attempts with `reason`; `receipt` is what the
   * receipt says (it is not recorded on the key: the claim is dropped so a
   * replay can send it).
   */
  | { kind: "dead"; send: Send; attempts: number; reason: string; receipt: Recorded };

/** What is known when an answer is settled: the retry settings, the time, the notification's expiry, and optionally the jitter source. */
export interface OutcomeContext {
  retry: RetryConfig;
  now: number;
  expiresAt: number;
  random?: () => number;
}

/** True when the provider reported the send's token gone: the runner lets the directory drop the token before settling it. */
export const tokenGone = (r: SendResult): boolean => !r.ok && r.error.tokenInvalid;

/**
 * Turns provider result `r` for send `s` into its outcome. `s.attempt` is the
 * number of provider attempts already made before this one; a retryable
 * failure counts this one (`attempt + 1`) and is planned by
 * {@link planRetry}: retried with backoff (never before Retry-After, at least
 * `retry.quotaMs` after a quota error), expired when that would be at or past
 * `expiresAt`, dead-lettered once `retry.maxAttempts` attempts were made. A
 * non-retryable failure (including a gone token) fails at once. Pure: no
 * I/O, `ctx.now` is the only clock; never throws.
 */
export function answerOutcome(s: Send, r: SendResult, ctx: OutcomeContext): AnswerOutcome {
  if (r.ok) return { kind: "sent", record: { outcome: "sent", providerId: r.providerId, at: ctx.now } };
  if (!r.error.retryable) return { kind: "failed", record: { outcome: "failed", reason: r.error.reason, at: ctx.now } };
  const attempt = (s.attempt ?? 0) + 1;
  const plan = planRetry(ctx.retry, attempt, r.error, ctx.now, ctx.expiresAt, ctx.random);
  if (plan.kind === "retry") return { kind: "retry", send: Object.assign({}, s, { attempt }), at: plan.at };
  if (plan.kind === "expired") return { kind: "expired", record: { outcome: "failed", reason: `expired:${r.error.reason}`, at: ctx.now } };
  return { kind: "dead", send: Object.assign({}, s, { attempt }), attempts: attempt, reason: r.error.reason, receipt: { outcome: "failed", reason: `dead_letter:${r.error.reason}`, at: ctx.now } };
}

/** The outcome of pushing back a send that was not attempted. */
export type PushBackOutcome =
  /** `send` (its `waits` counted) goes back on NFX_RETRY, due at `at`; no attempt is used. */
  | { kind: "wait"; send: Send; at: number }
  /** The wait would outlast the notification: recorded as failed (`expired:<why>`). */
  | { kind: "expired"; record: Recorded }
  /** The send carries a shed deadline (`shedAfter`) the wait would outlast: recorded as shed now (`max_delay` or `expired`). */
  | { kind: "shed"; record: Recorded };

/**
 * Plans a push-back of send `s`, not attempted because of `why` (a bulkhead
 * refusal such as `breaker_open` or `queue_full`, or `claimed` when another
 * attempt holds its key), to be looked at again after about `retryInMs`,
 * growing with the send's earlier waits ({@link planWait}). A send with a
 * shed deadline (`s.shedAfter`) that the wait would outlast is shed at once
 * (it could not go in time), except when `why` is `claimed`: that key is
 * another attempt's to record, and the send is shed, if at all, when it comes
 * back. Pure: no I/O, `ctx.now` is the only clock; `ctx.retry` is not used.
 */
export function pushBackOutcome(s: Send, retryInMs: number, why: string, ctx: Pick<OutcomeContext, "now" | "expiresAt" | "random">): PushBackOutcome {
  const waits = s.waits ?? 0;
  const at = planWait(retryInMs, waits, ctx.now, ctx.expiresAt, ctx.random);
  if (s.shedAfter !== undefined && why !== "claimed" && (at === null || at > s.shedAfter)) {
    return { kind: "shed", record: { outcome: "shed", reason: shedReason(s.shedAfter, ctx.expiresAt, at ?? ctx.expiresAt) ?? "max_delay", at: ctx.now } };
  }
  if (at === null) return { kind: "expired", record: { outcome: "failed", reason: `expired:${why}`, at: ctx.now } };
  return { kind: "wait", send: Object.assign({}, s, { waits: waits + 1 }), at };
}

/** A pushed-back send and when it is due again. */
export interface Later {
  send: Send;
  at: number;
}

/**
 * The held batch that carries the pushed-back sends `later` (non-empty) of
 * send batch `batch` (delivered under `batchId` on lane `prio`) through
 * NFX_RETRY: due when the last of them is; released under a message id from
 * the batch id, `kind` ("retry": attempts failed; "wait": not attempted) and
 * the highest attempt + waits among them, so a redelivered batch plans the
 * same release. Keeps only the notifications its sends need. Pure.
 */
export function releaseOf(batch: SendBatch, batchId: string, prio: Priority, kind: "retry" | "wait", later: readonly Later[]): RetryBatch {
  const due = Math.max(...later.map((l) => l.at));
  const attempt = Math.max(...later.map((l) => (l.send.attempt ?? 0) + (l.send.waits ?? 0)));
  const releaseId = MSGID.retry(createHash("sha1").update(batchId).digest("base64url").slice(0, 16), kind, attempt);
  const sends = later.map((l) => l.send);
  const nids = new Set(sends.map((s) => s.nid));
  return {
    type: "retry_batch", due, priority: prio, releaseId,
    batch: { ...batch, sends, notifications: Object.fromEntries(Object.entries(batch.notifications).filter(([k]) => nids.has(k))) },
  };
}
