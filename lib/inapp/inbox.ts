// The per-user in-app inbox in Redis: capped items with seen/read/archived state, an unread count, and the live-delivery state that makes push fallback happen at most once.
import { inboxItemsKey, inboxKey } from "../core/keys.js";
import { shardOf } from "../core/shard-hash.js";
import type { Priority } from "../core/subjects.js";
import type { Redis } from "../infra/redis.js";
import { type ScriptRedis, withScripts } from "../infra/scripts.js";

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
  return { ...(JSON.parse(json) as Omit<InboxItem, "seen" | "read" | "archived">), seen: (state & SEEN) !== 0, read: (state & READ) !== 0, archived: (state & ARCHIVED) !== 0 };
}

/** Inboxes of every user, each kept in the user's shard (one Lua script per operation, so every change is atomic). */
export class Inbox {
  private readonly r: ScriptRedis;

  constructor(redis: Redis, private readonly o: { shards: number; cap: number; retentionMs: number }) {
    this.r = withScripts(redis);
  }

  private keys(user: string): [string, string] {
    const s = shardOf(user, this.o.shards);
    return [inboxKey(s, user), inboxItemsKey(s, user)];
  }

  /**
   * Stores `item` unless the user's inbox has it (a replayed send). Returns
   * `"new"` or the live state of the stored item. The oldest items beyond the
   * cap are dropped; the inbox expires after the retention without new items.
   */
  async add(user: string, item: Omit<InboxItem, "seen" | "read" | "archived">): Promise<"new" | LiveState> {
    const [z, h] = this.keys(user);
    return (await this.r.nfxInboxAdd(z, h, item.id, item.at, JSON.stringify(item), this.o.cap, Math.round(this.o.retentionMs))) as "new" | LiveState;
  }

  /** Moves an item's live state from pending to `to`; returns the state before (`"gone"` if the item was dropped). Only the first transition wins. */
  async settle(user: string, nid: string, to: "acked" | "fallback"): Promise<LiveState | "gone"> {
    return (await this.r.nfxInboxSettle(this.keys(user)[1], nid, String(to === "acked" ? ACKED : FALLBACK))) as LiveState | "gone";
  }

  /** Applies a user action to `ids` (or every item with `all`); returns the new unread count and the ids that changed. */
  async mark(user: string, action: InboxAction, ids: readonly string[] | "all"): Promise<{ unread: number; changed: string[] }> {
    const [z, h] = this.keys(user);
    const out = await this.r.nfxInboxMark(z, h, String(ACTION_BITS[action]), ids === "all" ? "1" : "0", ...(ids === "all" ? [] : ids));
    return { unread: Number(out[0]), changed: out.slice(1) as string[] };
  }

  /** Newest items first (archived ones skipped), older than `before` when given, and the unread count. */
  async list(user: string, limit: number, before?: number): Promise<{ unread: number; items: InboxItem[] }> {
    const [z, h] = this.keys(user);
    const out = await this.r.nfxInboxList(z, h, before ?? 9e15, limit);
    const items: InboxItem[] = [];
    for (let i = 1; i + 1 < out.length; i += 2) items.push(publicItem(out[i] as string, Number(out[i + 1])));
    return { unread: Number(out[0]), items };
  }
}
