// The per-user in-app inbox in Redis: capped items with seen/read/archived state, an unread count, and the live-delivery state that makes push fallback happen at most once.
import type { Redis } from "../infra/redis.js";
import { inboxItemsKey, inboxKey } from "../core/keys.js";
import { shardOf } from "../core/shard-hash.js";
import type { Priority } from "../core/subjects.js";

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

/** The unread counter lives in the items hash under a field no notification id can have. */
const UNREAD = "~unread";
/**
 * State bits of an item, kept apart from its content (`~s:<nid>` in the
 * items hash) so the content JSON is stored exactly as written and never
 * re-encoded by Lua.
 */
const SEEN = 1, READ = 2, ARCHIVED = 4, ACKED = 8, FALLBACK = 16;

// KEYS: order zset, items hash. ARGV: nid, at, item json, cap, ttl ms. Returns "new", or the stored item's live state.
const ADD = `
local st = redis.call('HGET', KEYS[2], '~s:' .. ARGV[1])
if st then
  st = tonumber(st)
  if bit.band(st, ${ACKED}) ~= 0 then return 'acked' end
  if bit.band(st, ${FALLBACK}) ~= 0 then return 'fallback' end
  return 'pending'
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3], '~s:' .. ARGV[1], 0)
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HINCRBY', KEYS[2], '${UNREAD}', 1)
local n = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
if n > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, n - 1)) do
    local s = tonumber(redis.call('HGET', KEYS[2], '~s:' .. id) or '${READ}')
    if bit.band(s, ${READ + ARCHIVED}) == 0 then redis.call('HINCRBY', KEYS[2], '${UNREAD}', -1) end
    redis.call('HDEL', KEYS[2], id, '~s:' .. id)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - 1)
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 'new'`;

// KEYS: items hash. ARGV: nid, target bit. Sets the bit when neither live bit is set; returns the state before ('pending', 'acked', 'fallback' or 'gone').
const LIVE = `
local st = redis.call('HGET', KEYS[1], '~s:' .. ARGV[1])
if not st then return 'gone' end
st = tonumber(st)
if bit.band(st, ${ACKED}) ~= 0 then return 'acked' end
if bit.band(st, ${FALLBACK}) ~= 0 then return 'fallback' end
redis.call('HSET', KEYS[1], '~s:' .. ARGV[1], bit.bor(st, tonumber(ARGV[2])))
return 'pending'`;

// KEYS: order zset, items hash. ARGV: bits to set, all (1/0), nids... Returns {unread, changed ids...}.
const MARK = `
local set = tonumber(ARGV[1])
local ids = {}
if ARGV[2] == '1' then ids = redis.call('ZRANGE', KEYS[1], 0, -1) else for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end end
local changed = {}
local delta = 0
for _, id in ipairs(ids) do
  local s = redis.call('HGET', KEYS[2], '~s:' .. id)
  if s then
    s = tonumber(s)
    local t = bit.bor(s, set)
    if t ~= s then
      if bit.band(s, ${READ + ARCHIVED}) == 0 and bit.band(t, ${READ + ARCHIVED}) ~= 0 then delta = delta - 1 end
      redis.call('HSET', KEYS[2], '~s:' .. id, t)
      changed[#changed + 1] = id
    end
  end
end
local u
if delta ~= 0 then u = redis.call('HINCRBY', KEYS[2], '${UNREAD}', delta) else u = tonumber(redis.call('HGET', KEYS[2], '${UNREAD}') or '0') end
local out = { u }
for _, id in ipairs(changed) do out[#out + 1] = id end
return out`;

// KEYS: order zset, items hash. ARGV: before (exclusive, ms), limit. Returns {unread, json, state, json, state...} newest first, archived skipped.
const LIST = `
local out = { tonumber(redis.call('HGET', KEYS[2], '${UNREAD}') or '0') }
local limit = tonumber(ARGV[2]) * 2
for _, id in ipairs(redis.call('ZREVRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '-inf')) do
  if #out > limit then break end
  local s = tonumber(redis.call('HGET', KEYS[2], '~s:' .. id) or '0')
  if bit.band(s, ${ARCHIVED}) == 0 then
    local j = redis.call('HGET', KEYS[2], id)
    if j then out[#out + 1] = j; out[#out + 1] = s end
  end
end
return out`;

/** Bits each action sets (reading also marks seen). */
const ACTION_BITS: Record<InboxAction, number> = { seen: SEEN, read: READ | SEEN, archive: ARCHIVED };

type InboxRedis = Redis & {
  nfxInboxAdd(k1: string, k2: string, ...argv: (string | number)[]): Promise<string>;
  nfxInboxLive(k1: string, ...argv: string[]): Promise<string>;
  nfxInboxMark(k1: string, k2: string, ...argv: string[]): Promise<(number | string)[]>;
  nfxInboxList(k1: string, k2: string, ...argv: (string | number)[]): Promise<(number | string)[]>;
};

/** An item as clients see it: stored content plus its state bits. */
function publicItem(json: string, state: number): InboxItem {
  return { ...(JSON.parse(json) as Omit<InboxItem, "seen" | "read" | "archived">), seen: (state & SEEN) !== 0, read: (state & READ) !== 0, archived: (state & ARCHIVED) !== 0 };
}

/** Inboxes of every user, each kept in the user's shard (one Lua script per operation, so every change is atomic). */
export class Inbox {
  private readonly r: InboxRedis;

  constructor(redis: Redis, private readonly o: { shards: number; cap: number; retentionMs: number }) {
    const r = redis as InboxRedis;
    if (!r.nfxInboxAdd) {
      r.defineCommand("nfxInboxAdd", { numberOfKeys: 2, lua: ADD });
      r.defineCommand("nfxInboxLive", { numberOfKeys: 1, lua: LIVE });
      r.defineCommand("nfxInboxMark", { numberOfKeys: 2, lua: MARK });
      r.defineCommand("nfxInboxList", { numberOfKeys: 2, lua: LIST });
    }
    this.r = r;
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
    return (await this.r.nfxInboxLive(this.keys(user)[1], nid, String(to === "acked" ? ACKED : FALLBACK))) as LiveState | "gone";
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
