// The per-user in-app inbox in Redis: capped items with seen/read/archived state, an unread count, and the live-delivery state that makes push fallback happen at most once.
import { inboxItemsKey, inboxKey } from "../core/keys.js";
import { shardOf } from "../core/shard-hash.js";
import type { Priority } from "../core/subjects.js";
import type { NotificationBrief, Send } from "../core/types.js";
import type { Redis } from "../infra/redis.js";
import { type ScriptRedis, withScripts } from "../infra/scripts.js";
import type { Broadcasts, Reaching } from "./broadcasts.js";

/** One inbox entry as clients see it. `id` is the notification id. */
export interface InboxItem {
  id: string;
  at: number;
  category: string;
  priority: Priority;
  title?: string;
  body?: string;
  payload: Record<string, unknown>;
  seen: boolean;
  read: boolean;
  archived: boolean;
}

/** An item as stored: everything but the user's state. */
export type StoredItem = Omit<InboxItem, "seen" | "read" | "archived">;

/** The inbox item of a notification: its in-app payload (`s`: rendered for one recipient, else inline, else the push data), title and body from the push content. */
export function inboxItemOf(n: NotificationBrief, s?: Pick<Send, "push" | "inapp">): StoredItem {
  const push = s?.push ?? n.content?.push;
  const payload = s?.inapp?.payload ?? n.content?.inapp?.payload ?? (push?.data ? { ...push.data } : {});
  return {
    id: n.id, at: n.createdAt, category: n.category, priority: n.priority,
    ...(push?.title ? { title: push.title } : {}),
    ...(push?.body ? { body: push.body } : {}),
    payload,
  };
}

/**
 * Live-delivery state of an item: `pending` until a client acknowledged it
 * (`acked`) or the dispatcher gave up and sent push instead (`fallback`).
 * Exactly one of the two transitions ever happens.
 */
export type LiveState = "pending" | "acked" | "fallback";

/** A user action on inbox items. */
export type InboxAction = "seen" | "read" | "archive";
export const INBOX_ACTIONS: readonly InboxAction[] = ["seen", "read", "archive"];

/**
 * The scripts behind each operation are lib/infra/scripts/inbox*.lua; they
 * spell the state bits below as numbers and keep the unread count in the
 * items hash under `~unread`, a field no notification id can have.
 *
 * State bits of an item, kept apart from its content (`~s:<nid>` in the
 * items hash) so the content JSON is stored exactly as written and never
 * re-encoded by Lua.
 */
const SEEN = 1, READ = 2, ARCHIVED = 4, ACKED = 8, FALLBACK = 16;
/** The state bits by name, as the scripts' headers name them (a unit test holds the two together). */
export const INBOX_STATE_BITS = { SEEN, READ, ARCHIVED, ACKED, FALLBACK } as const;

/** Bits each action sets (reading also marks seen). */
const ACTION_BITS: Record<InboxAction, number> = { seen: SEEN, read: READ | SEEN, archive: ARCHIVED };

/** An item as clients see it: stored content plus its state bits. */
function publicItem(json: string, state: number): InboxItem {
  // The parsed object itself gets the state (no copy): an inbox read parses up to `limit` items.
  const it = JSON.parse(json) as InboxItem;
  it.seen = (state & SEEN) !== 0;
  it.read = (state & READ) !== 0;
  it.archived = (state & ARCHIVED) !== 0;
  return it;
}

/**
 * A copy of `item` with the user's state bits `state` (0: new, unseen): how a broadcast or a live item is shown.
 * Object.assign, not `{ ...item, seen, … }`: on Node 20 properties written after a spread cost about 30 times more
 * (docs/benchmarks.md, bench:inbox).
 */
export function itemWithState(item: StoredItem, state = 0): InboxItem {
  return Object.assign({}, item, { seen: (state & SEEN) !== 0, read: (state & READ) !== 0, archived: (state & ARCHIVED) !== 0 });
}

/**
 * Inboxes of every user, each kept in the user's shard (one Lua script per operation, so every change is atomic). With
 * `broadcasts`, reads merge the broadcasts that reach the user (lib/inapp/broadcasts.ts) and actions apply to them too.
 */
export class Inbox {
  private readonly r: ScriptRedis;

  constructor(redis: Redis, private readonly o: { shards: number; cap: number; retentionMs: number; broadcasts?: Broadcasts; now?: () => number }) {
    this.r = withScripts(redis);
  }

  private keys(user: string): [string, string] {
    const s = shardOf(user, this.o.shards);
    return [inboxKey(s, user), inboxItemsKey(s, user)];
  }

  /** The broadcasts reaching `user` now, none without a broadcast store. */
  private reaching(user: string): Promise<Reaching[]> {
    return this.o.broadcasts ? this.o.broadcasts.reaching(user, (this.o.now ?? Date.now)()) : Promise.resolve([]);
  }

  /**
   * Stores `item` unless the user's inbox has it (a replayed send). Returns
   * `"new"` or the live state of the stored item. The oldest items beyond the
   * cap are dropped; the inbox expires after the retention without new items.
   */
  async add(user: string, item: StoredItem): Promise<"new" | LiveState> {
    const [z, h] = this.keys(user);
    return (await this.r.nfxInboxAdd(z, h, item.id, item.at, JSON.stringify(item), this.o.cap, Math.round(this.o.retentionMs))) as "new" | LiveState;
  }

  /** Moves an item's live state from pending to `to`; returns the state before (`"gone"` if the item was dropped). Only the first transition wins. */
  async settle(user: string, nid: string, to: "acked" | "fallback"): Promise<LiveState | "gone"> {
    return (await this.r.nfxInboxSettle(this.keys(user)[1], nid, String(to === "acked" ? ACKED : FALLBACK))) as LiveState | "gone";
  }

  /**
   * Applies a user action to `ids` (or every item with `all`), broadcasts that reach the user included; returns the new
   * unread count and the ids that changed. Ids that are neither an item nor a broadcast reaching the user change nothing.
   */
  async mark(user: string, action: InboxAction, ids: readonly string[] | "all"): Promise<{ unread: number; changed: string[] }> {
    const [z, h] = this.keys(user);
    const bits = ACTION_BITS[action];
    const bs = await this.reaching(user);
    const reach = new Map(bs.map((x) => [x.b.id, x]));
    const own = ids === "all" ? ids : ids.filter((id) => !reach.has(id));
    const mine = ids === "all" ? [...reach.keys()] : ids.filter((id) => reach.has(id));
    const [out, changedB] = await Promise.all([
      this.r.nfxInboxMark(z, h, String(bits), own === "all" ? "1" : "0", ...(own === "all" ? [] : own)),
      this.o.broadcasts ? this.o.broadcasts.mark(user, bits, mine) : Promise.resolve([]),
    ]);
    const changed = new Set(changedB);
    const unreadB = bs.filter((x) => ((changed.has(x.b.id) ? x.state | bits : x.state) & (READ | ARCHIVED)) === 0).length;
    return { unread: Number(out[0]) + unreadB, changed: [...(out.slice(1) as string[]), ...changedB] };
  }

  /** Newest items first (archived ones skipped), older than `before` when given, broadcasts reaching the user merged in, and the unread count. */
  async list(user: string, limit: number, before?: number): Promise<{ unread: number; items: InboxItem[] }> {
    const [z, h] = this.keys(user);
    const [out, bs] = await Promise.all([this.r.nfxInboxList(z, h, before ?? 9e15, limit), this.reaching(user)]);
    const items: InboxItem[] = [];
    for (let i = 1; i + 1 < out.length; i += 2) items.push(publicItem(out[i] as string, Number(out[i + 1])));
    const unread = Number(out[0]) + bs.filter((x) => (x.state & (READ | ARCHIVED)) === 0).length;
    if (bs.length === 0) return { unread, items };
    for (const x of bs) {
      if ((x.state & ARCHIVED) !== 0 || (before !== undefined && x.b.at >= before)) continue;
      items.push(itemWithState(x.b.item, x.state));
    }
    items.sort((a, b) => b.at - a.at || (b.id < a.id ? -1 : b.id > a.id ? 1 : 0));
    return { unread, items: items.slice(0, limit) };
  }
}
