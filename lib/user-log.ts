// Per-user delivery log in Redis: written by the tracker, read by `nfx log --user`, HTTP and NATS.
import type { Redis } from "./redis.js";
import { userLogKey } from "./keys.js";
import { shardOf } from "./shard.js";
import type { Channel } from "./subjects.js";
import type { Outcome, ReceiptEntry } from "./types.js";

/** One line of a user's delivery log. */
export interface UserLogEntry {
  notification: string;
  outcome: Outcome;
  channel?: Channel;
  device?: string;
  reason?: string;
  providerId?: string;
  at: number;
}

/** Adds ARGV[3] at score ARGV[2] to KEYS[1], keeps the newest ARGV[1] entries, sets the TTL ARGV[4] ms. Idempotent: the same entry is one member. */
const APPEND = `
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
local n = redis.call('ZCARD', KEYS[1])
local cap = tonumber(ARGV[1])
if n > cap then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - cap - 1) end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return n`;

type LogRedis = Redis & { nfxLogAppend(key: string, cap: number, score: number, member: string, ttlMs: number): Promise<number> };

/** The user delivery log of a cluster with `shards` shards. */
export class UserLog {
  private readonly r: LogRedis;
  constructor(redis: Redis, private readonly shards: number, private readonly cap = 100, private readonly ttlMs = 30 * 86400_000) {
    if (!(redis as unknown as Partial<LogRedis>).nfxLogAppend) redis.defineCommand("nfxLogAppend", { numberOfKeys: 1, lua: APPEND });
    this.r = redis as unknown as LogRedis;
  }

  /** Whether an entry belongs in the log: every outcome but "queued" (the send's final outcome follows). */
  static keeps(e: ReceiptEntry): boolean {
    return e.outcome !== "queued";
  }

  /**
   * Appends the entries of notification `nid` to their users' logs on one
   * pipeline. The member is the entry's JSON with a fixed field order, so a
   * replayed receipt lands on the same member and is not logged twice.
   */
  append(nid: string, entries: readonly ReceiptEntry[], pipeline = this.r.pipeline()): ReturnType<Redis["pipeline"]> {
    for (const e of entries) {
      if (!UserLog.keeps(e)) continue;
      const line: UserLogEntry = { notification: nid, outcome: e.outcome, channel: e.channel, device: e.device, reason: e.reason, providerId: e.providerId, at: e.at };
      (pipeline as unknown as LogRedis).nfxLogAppend(userLogKey(shardOf(e.user, this.shards), e.user), this.cap, e.at, JSON.stringify(line), this.ttlMs);
    }
    return pipeline;
  }

  /** The newest `limit` entries of `user`, newest first; `before` (ms) pages back. */
  async read(user: string, limit = 50, before?: number): Promise<UserLogEntry[]> {
    const key = userLogKey(shardOf(user, this.shards), user);
    const max = before === undefined ? "+inf" : `(${before}`;
    const raw = await this.r.zrevrangebyscore(key, max, "-inf", "LIMIT", 0, limit);
    return raw.map((m) => JSON.parse(m) as UserLogEntry);
  }
}
