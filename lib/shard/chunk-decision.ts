// Decides one fan chunk: runs the per-recipient policy over the chunk's users and shapes the results into send batches, receipts, deferrals and trails.
import { type SmsStop, smsStops } from "../consent/sms-keywords.js";
import { type Channel, CHANNELS } from "../core/subjects.js";
import type { FanChunk, NotificationBrief, PushContent, ReceiptEntry, Send, UserRecord } from "../core/types.js";
import type { UserSource } from "../directory/directory.js";
import { shedDeadline } from "../flow/shedding.js";
import type { Redis } from "../infra/redis.js";
import { renderEmail, renderInApp, renderPush, renderSms } from "../intake/templates.js";
import { decideUser, planFor, type PolicyConfig, type PolicyState } from "./policy.js";
import { Trail, TrailBook } from "./trails.js";

/**
 * Returns the per-recipient push renderer of a notification: null content
 * for inline content (the gateway uses the notification's), the template
 * rendered with the recipient's locale and attributes otherwise. Templates
 * that never mention `user.` render once per locale.
 */
export function pushRenderer(n: NotificationBrief): (u: UserRecord) => PushContent | undefined {
  const use = n.template;
  if (!use) return () => undefined;
  const perUser = JSON.stringify(use.template.channels.push ?? {}).includes("user.");
  const byLocale = new Map<string, PushContent | undefined>();
  return (u) => {
    if (perUser) return renderPush(use, u) ?? undefined;
    const k = use.locale ?? u.locale ?? "";
    if (!byLocale.has(k)) byLocale.set(k, renderPush(use, { id: "", locale: u.locale }) ?? undefined);
    return byLocale.get(k);
  };
}

/** Whether rendering this notification reads recipients' profile attributes. */
export const usesUserFields = (n: NotificationBrief): boolean => n.template !== undefined && JSON.stringify(n.template.template.channels).includes("user.");

/** What deciding a chunk needs besides the chunk. */
export interface ChunkInputs {
  /** Directory records in the order of `chunk.users` (null for unknown users): an array, or records decoded as each user is decided. */
  users: UserSource;
  /** Presence per user (same order), or null when not read (counts as offline). */
  online: readonly boolean[] | null;
  /** Per user (same order), whether another notification holds this one's collapse key (lib/shard/collapse-claims.ts); null without a collapse key. */
  collapsed?: readonly boolean[] | null;
  /** Per user, whether (when, with which keyword) the user's phone number replied STOP; null when SMS is not in play. */
  smsStopped?: readonly ({ at: number; keyword: string } | null)[] | null;
  now: number;
  cancelled: boolean;
  policy: PolicyConfig;
  state: PolicyState;
  /** Write decision trails. */
  trails: boolean;
}

/** The decision for one chunk. */
export interface ChunkDecision {
  sends: Record<Channel, Send[]>;
  /** One entry per suppressed or shed user, and per queued device / deferred user of explicit notifications. */
  receipts: ReceiptEntry[];
  /** Recipients decided (members of the target); 0 for a released chunk (they were counted when deferred). */
  decided: number;
  /** Sends queued but not listed in `receipts` (campaign chunks). */
  queued: number;
  /** Users deferred by quiet hours, by release time. */
  deferred: Map<number, string[]>;
  /** Deferred users not listed in `receipts` (campaign chunks). */
  deferredCount: number;
  /** Trails of every user of the chunk (null when trails are off). */
  trails: TrailBook | null;
}

/**
 * Decides a chunk, given the users' directory records. A user outside the
 * chunk's segment rule is skipped (not a recipient). Then a cancelled
 * campaign cancels everyone, an unknown user is suppressed, and everyone
 * else goes through {@link decideUser}; a shed user gets one `shed` entry
 * (explicit or campaign alike), and the sends of a shedding category carry
 * their shed deadline (`shedAfter`). Pure apart from the policy state
 * (cap tokens taken and dedup keys recorded for users who are sent to).
 */
export function decideChunk(chunk: FanChunk, inp: ChunkInputs): ChunkDecision {
  // A campaign's queued sends are counted, not listed: status shows counters for campaigns, lines only for explicit recipients.
  const listed = chunk.filter === undefined && chunk.notification.segment === undefined;
  const sends = Object.fromEntries(CHANNELS.map((c) => [c, [] as Send[]])) as Record<Channel, Send[]>;
  const receipts: ReceiptEntry[] = [];
  const deferred = new Map<number, string[]>();
  const n = chunk.notification;
  const nid = n.id;
  const now = inp.now;
  const render = pushRenderer(n);
  const use = n.template;
  const activeSince = chunk.filter?.activeSince;
  const book = inp.trails ? new TrailBook() : null;
  // One trail reused for every user of the chunk (the book reads it as it is added).
  const trail = book ? new Trail() : undefined;
  /** Adds a one-line trail. */
  const note = (line: string): void => {
    if (!book || !trail) return;
    trail.clear();
    trail.add(line);
    book.add(trail);
  };
  const ctx = { n, now, released: chunk.release !== undefined, ...(chunk.release !== undefined ? { releasedAt: chunk.release } : {}) };
  const plan = planFor(inp.policy, n);
  // Sends of a shedding category carry their deadline, so a gateway that takes them late sheds them (lib/flow/shedding.ts).
  const shedBy = shedDeadline(plan.cat.overload, n, chunk.release ?? n.createdAt);
  let decided = 0;
  let queued = 0;
  let deferredCount = 0;
  chunk.users.forEach((userId, i) => {
    const u = inp.users.at(i) ?? null;
    // Segment rule: a user who is not a member is not a recipient (no receipt).
    if (activeSince !== undefined && (!u || (u.lastActive ?? 0) < activeSince)) {
      note(`segment|skip:not a member|${u?.lastActive ?? 0}|${activeSince}\n`);
      return;
    }
    decided++;
    if (inp.cancelled) {
      note("campaign|cancelled\n");
      return void receipts.push({ user: userId, outcome: "cancelled", at: now });
    }
    if (!u) {
      note("directory|suppress:unknown_user|no record\n");
      return void receipts.push({ user: userId, outcome: "suppressed", reason: "unknown_user", at: now });
    }
    trail?.clear();
    const v = decideUser(inp.policy, inp.state, ctx, { user: u, online: inp.online?.[i] ?? false, collapsed: inp.collapsed?.[i] ?? false, smsStopped: inp.smsStopped?.[i] ?? null }, trail, plan);
    if (v.kind === "hold") {
      // Held for a digest, listed by what the user would have seen.
      const p = render(u) ?? n.content?.push;
      const item = { nid, at: n.createdAt, ...(p?.title ?? n.content?.email?.subject ? { title: p?.title ?? n.content?.email?.subject } : {}), ...(p?.body ?? n.content?.sms?.text ? { body: p?.body ?? n.content?.sms?.text } : {}) };
      const h = inp.state.digests!.hold(userId, n, v.spec, item);
      if (trail) {
        trail.add(`digest|hold|${v.spec.key}|${h.until}|${h.id}|${h.count}\n`);
        book?.add(trail);
      }
      return void receipts.push({ user: userId, outcome: "digested", reason: h.id, until: h.until, at: now });
    }
    if (trail) book?.add(trail);
    if (v.kind === "suppress") return void receipts.push({ user: userId, outcome: "suppressed", reason: v.reason, at: now });
    // Listed for campaigns too (like suppressed): the entry is the recipient's one count.
    if (v.kind === "shed") return void receipts.push({ user: userId, outcome: "shed", reason: v.reason, at: now });
    if (v.kind === "defer") {
      let l = deferred.get(v.until);
      if (!l) deferred.set(v.until, (l = []));
      l.push(userId);
      if (listed) receipts.push({ user: userId, outcome: "deferred", until: v.until, at: now });
      else deferredCount++;
      return;
    }
    const push = render(u);
    // Email, SMS and in-app get their own template rendering when the template has one; else the gateway derives them from push (null: the notification's own content).
    const contentFor = (ch: Channel): Partial<Send> | null =>
      ch === "email" && use?.template.channels.email ? { email: renderEmail(use, u)! } : ch === "sms" && use?.template.channels.sms ? { sms: renderSms(use, u)! } : push ? { push } : null;
    for (const t of v.targets) {
      let own = contentFor(t.channel);
      if (t.channel === "inapp") {
        own ??= {};
        if (use?.template.channels.inapp) own.inapp = renderInApp(use, u)!;
        if (v.fallback) {
          own.fallback = v.fallback.map((f) => (f.app ? { channel: f.channel, device: f.device, token: f.token, app: f.app } : { channel: f.channel, device: f.device, token: f.token }));
          for (const f of v.fallback) Object.assign(own, contentFor(f.channel));
        }
      }
      // Built field by field (no spreads): a campaign makes one per device, the fan stage's most numerous object.
      const send: Send = { nid, user: userId, device: t.device, token: t.token };
      if (t.app) send.app = t.app;
      if (own) Object.assign(send, own);
      if (shedBy !== null) send.shedAfter = shedBy;
      sends[t.channel].push(send);
      if (listed) receipts.push({ user: userId, outcome: "queued", channel: t.channel, device: t.device, at: now });
      else queued++;
    }
  });
  return { sends, receipts, decided: chunk.release !== undefined ? 0 : decided, queued, deferred, deferredCount, trails: book };
}

/** Whether deciding `n` reads recipients' profiles: its template uses their fields, or email or SMS can be a route (they need the address). */
export const needsProfile = (n: NotificationBrief, policy: PolicyConfig): boolean =>
  usesUserFields(n) || [...n.channels, ...policy.fallback[n.priority]].some((c) => (c === "email" || c === "sms") && policy.available.has(c));

/** Whether SMS can be a route of notification `n`: one of its channels or of its priority's fallback, with a gateway in the cluster. */
export const wantsSms = (n: NotificationBrief, policy: PolicyConfig): boolean =>
  policy.available.has("sms") && (n.channels.includes("sms") || policy.fallback[n.priority].includes("sms"));

/** Per user (`phones`: each user's number, if any), whether the number replied STOP (null: no number, or no STOP): one HMGET for the chunk. */
export async function stopsOf(redis: Redis, phones: readonly (string | undefined)[]): Promise<(SmsStop | null)[]> {
  const idx: number[] = [];
  phones.forEach((p, i) => p && idx.push(i));
  const out: (SmsStop | null)[] = phones.map(() => null);
  const got = await smsStops(redis, idx.map((i) => phones[i]!));
  idx.forEach((i, k) => (out[i] = got[k]));
  return out;
}
