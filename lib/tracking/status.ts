// Status of one notification, folded from its stored request and its receipts: per-recipient, per-device outcome.
import { Campaigns, type CampaignStatus, type DeliveryPath } from "../campaign/campaigns.js";
import { emptyCounters, isExpiry, outstanding, shedByReason, total } from "../campaign/counters.js";
import { decode } from "../core/codec.js";
import { NotFound, RequestInvalid } from "../core/errors.js";
import { BUCKET, ID_PATTERN, intakeSubject, PRIORITIES, receiptSubject, scheduledSubject, STREAM } from "../core/subjects.js";
import type { Notification, Outcome, ReceiptBatch, ReceiptEntry } from "../core/types.js";
import { readStored } from "../flow/stream-read.js";
import type { Nats } from "../infra/nats.js";

/** One line of the status report: a recipient (no device) or one of its devices. */
export interface DeliveryLine {
  user: string;
  outcome: Outcome | "pending";
  channel?: string;
  device?: string;
  reason?: string;
  providerId?: string;
  at?: number;
}

/**
 * Counts of a notification. Device sends: sent (the provider accepted it; includes delivered), delivered (confirmed),
 * failed, expired, queued (not finished), cancelled, fallback. Recipients: accepted, suppressed, deferred, pending
 * (not yet decided), opened and clicked (each recipient once). `shed`: recipients shed by the shard actor plus sends
 * shed at a gateway (one per `shed` delivery line), with `shedReasons` by reason.
 */
export interface StatusCounts {
  accepted: number;
  sent: number;
  delivered: number;
  failed: number;
  expired: number;
  queued: number;
  suppressed: number;
  deferred: number;
  /** Recipients whose notification was held for a digest (the line's reason is the digest's id). */
  digested: number;
  cancelled: number;
  fallback: number;
  shed: number;
  shedReasons: Record<string, number>;
  opened: number;
  clicked: number;
  pending: number;
}

export interface NotificationStatus {
  id: string;
  priority: string;
  category: string;
  createdAt: number;
  /** Set when the notification waits for its send-at time. */
  sendAt?: number;
  expiresAt: number;
  recipients: number;
  /** Counts of device sends by outcome, plus users suppressed and users not yet decided. */
  counts: StatusCounts;
  /** True when every recipient is decided and every device send has a final outcome. */
  complete: boolean;
  /** Per recipient or device (explicit recipients only; a campaign's are in its counters). */
  lines: DeliveryLine[];
  /** For a segment notification: its campaign's progress and counters. */
  campaign?: CampaignStatus;
  /** Fan-out on write (a send per recipient) or on read (a broadcast merged into inboxes when read: lib/inapp/broadcasts.ts). */
  path: DeliveryPath;
}

const FINAL: ReadonlySet<string> = new Set(["sent", "delivered", "failed", "suppressed", "cancelled", "fallback", "shed", "digested"]);

/**
 * How settled a line's outcome is: waiting (queued, deferred) 0; decided by nfx (sent, or failed, suppressed, cancelled,
 * fell back, shed before the provider took it) 1; delivered, as the provider reported, 2; failed after the provider took
 * it (a late failure) 3. An entry never replaces a line it ranks below: a provider's report can reach the stream before
 * the gateway's "sent" (a status callback posted while the gateway was still writing its batch's outcomes), and must
 * still win.
 */
const rankOf = (e: { outcome: string; late?: boolean }): number => (e.outcome === "failed" && e.late ? 3 : e.outcome === "delivered" ? 2 : FINAL.has(e.outcome) ? 1 : 0);
/** Engagement and inbox states: counted, not delivery lines. */
const ENGAGEMENT: ReadonlySet<string> = new Set(["seen", "read", "opened", "clicked"]);

/** Reads the stored request of `id` from NFX_INTAKE (its priority lane, else the scheduler's subject), or null. */
export async function readNotification(n: Nats, id: string): Promise<Notification | null> {
  for (const subj of [...PRIORITIES.map((p) => intakeSubject(p, id)), scheduledSubject(id)]) {
    const m = await n.jsm.streams.getMessage(STREAM.intake, { last_by_subj: subj }).catch(() => null);
    if (m) return decode<Notification>(m.data);
  }
  return null;
}

/** Reads every receipt entry of `id` from NFX_RECEIPTS, in stream order. */
export async function readReceipts(n: Nats, id: string): Promise<ReceiptEntry[]> {
  const out: ReceiptEntry[] = [];
  await readStored(n, STREAM.receipts, (m) => void out.push(...decode<ReceiptBatch>(m.data).entries), receiptSubject(id));
  return out;
}

/**
 * Folds a notification's receipt entries, in stream order, into one delivery line per device (per user while
 * undecided) and the recipients who opened and clicked. A device's latest outcome wins unless it ranks below the
 * line's ({@link rankOf}); receipts replayed by a recovering stage fold to the same line.
 */
export function foldLines(entries: readonly ReceiptEntry[]): { byKey: Map<string, DeliveryLine>; engaged: { opened: Set<string>; clicked: Set<string> } } {
  const byKey = new Map<string, DeliveryLine>();
  const rank = new Map<string, number>();
  const engaged = { opened: new Set<string>(), clicked: new Set<string>() };
  for (const e of entries) {
    // Engagement is counted per recipient; a line shows the delivery outcome.
    if (ENGAGEMENT.has(e.outcome)) {
      if (e.outcome === "opened" || e.outcome === "clicked") engaged[e.outcome].add(e.user);
      continue;
    }
    // Whatever the order in the stream: a provider's delivery report does not undo its failure report, a late failure
    // replaces "delivered", and neither is replaced by the gateway's "sent".
    const key = e.device ? `${e.user}|${e.channel}|${e.device}` : e.user;
    if ((rank.get(key) ?? 0) > rankOf(e)) continue;
    // A user deferred by quiet hours and decided again later: the later outcome replaces the wait.
    if (e.device && byKey.get(e.user)?.outcome === "deferred") {
      byKey.delete(e.user);
      rank.delete(e.user);
    }
    byKey.set(key, { user: e.user, outcome: e.outcome, channel: e.channel, device: e.device, reason: e.reason, providerId: e.providerId, at: e.at });
    rank.set(key, rankOf(e));
  }
  return { byKey, engaged };
}

/**
 * Folds a notification's receipts into its status. A device's latest final
 * outcome wins over "queued"; receipts replayed by a recovering stage fold to
 * the same line. A segment notification's counts come from `campaigns` (the
 * caller's store; opened here if absent). Throws {@link RequestInvalid} for a malformed id and
 * {@link NotFound} when no such notification was accepted.
 */
export async function readStatus(n: Nats, id: string, campaigns?: Campaigns): Promise<NotificationStatus> {
  if (!ID_PATTERN.test(id)) throw new RequestInvalid("id: must be a notification id", { field: "id" });
  let note = await readNotification(n, id);
  // A digest (`<first item's id>-dg<hash>`, lib/shard/digests.ts) is a notification nfx made itself, for one user: its status is its receipts.
  const digestOf = /^(.+)-dg[0-9a-z]+$/.exec(id)?.[1];
  const parent = !note && digestOf ? await readNotification(n, digestOf) : null;
  if (parent) {
    const { segment: _s, topic: _t, ...rest } = parent;
    note = { ...rest, id, recipients: [...new Set((await readReceipts(n, id)).map((e) => e.user))] };
  }
  if (!note) throw new NotFound(`notification ${id} not found`, { field: "id" });
  if (note.segment) return campaignNotificationStatus(campaigns ?? new Campaigns(await n.kvm.open(BUCKET.campaigns), await n.kvm.open(BUCKET.counters)), note);
  const { byKey, engaged } = foldLines(await readReceipts(n, id));
  const decided = new Set<string>();
  for (const l of byKey.values()) decided.add(l.user);
  const lines = [...byKey.values()];
  for (const u of note.recipients) if (!decided.has(u)) lines.push({ user: u, outcome: "pending" });
  lines.sort((a, b) => (a.user === b.user ? (a.device ?? "").localeCompare(b.device ?? "") : a.user.localeCompare(b.user)));
  const counts: StatusCounts = { accepted: note.recipients.length, sent: 0, delivered: 0, failed: 0, expired: 0, queued: 0, suppressed: 0, deferred: 0, digested: 0, cancelled: 0, fallback: 0, shed: 0, shedReasons: {}, opened: engaged.opened.size, clicked: engaged.clicked.size, pending: 0 };
  for (const l of lines) {
    if (l.outcome === "delivered") counts.sent++;
    if (l.outcome === "shed") counts.shedReasons[l.reason ?? "unknown"] = (counts.shedReasons[l.reason ?? "unknown"] ?? 0) + 1;
    if (l.outcome === "failed" && isExpiry(l.reason)) counts.expired++;
    else counts[l.outcome as "sent" | "delivered" | "failed" | "queued" | "suppressed" | "deferred" | "digested" | "cancelled" | "fallback" | "shed" | "pending"]++;
  }
  return {
    id,
    priority: note.priority,
    category: note.category,
    createdAt: note.createdAt,
    ...(note.sendAt !== undefined ? { sendAt: note.sendAt } : {}),
    expiresAt: note.expiresAt,
    recipients: note.recipients.length,
    counts,
    complete: counts.pending === 0 && counts.queued === 0 && counts.deferred === 0,
    lines,
    path: "write",
  };
}

/** Status of a segment notification: counts from the tracker, progress from the campaign (a campaign has no per-recipient lines). */
async function campaignNotificationStatus(campaigns: Campaigns, note: Notification): Promise<NotificationStatus> {
  const camp = await campaigns.status(note.id).catch(() => undefined);
  const c = camp?.counters ?? emptyCounters();
  return {
    id: note.id,
    priority: note.priority,
    category: note.category,
    createdAt: note.createdAt,
    ...(note.sendAt !== undefined ? { sendAt: note.sendAt } : {}),
    expiresAt: note.expiresAt,
    recipients: camp?.path === "read" ? camp.total : c.decided,
    counts: {
      accepted: c.accepted, sent: c.sent, delivered: c.delivered, failed: total(c.failed), expired: c.expired, queued: outstanding(c), suppressed: total(c.suppressed),
      deferred: c.deferred, digested: c.digested, cancelled: c.cancelled + c.cancelledSends, fallback: c.fallback, shed: total(c.shed) + total(c.shedSends), shedReasons: shedByReason(c), opened: c.opened, clicked: c.clicked, pending: 0,
    },
    complete: camp?.complete ?? false,
    lines: [],
    ...(camp ? { campaign: camp } : {}),
    path: camp?.path ?? "write",
  };
}
