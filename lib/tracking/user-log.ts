// Per-user delivery log in Redis: written by the tracker, read by `nfx log --user`, HTTP and NATS.
import type { Config } from "../core/config.js";
import { userLogKey } from "../core/keys.js";
import { shardOf } from "../core/shard-hash.js";
import type { Channel } from "../core/subjects.js";
import type { Outcome, ReceiptEntry } from "../core/types.js";
import { pipelineOf, type Redis, slotGroups } from "../infra/redis.js";
import { type ScriptPipeline, type ScriptRedis, withScripts } from "../infra/scripts.js";

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

/** Entries per script call. */
const PER_CALL = 128;

/** The user delivery log of a cluster with `shards` shards. */
export class UserLog {
  private readonly r: ScriptRedis;
  constructor(redis: Redis, private readonly shards: number, private readonly cap = 100, private readonly ttlMs = 30 * 86400_000) {
    this.r = withScripts(redis);
  }

  /** Whether an entry belongs in the log: every outcome but "queued" (the send's final outcome follows). */
  static keeps(e: ReceiptEntry): boolean {
    return e.outcome !== "queued";
  }

  /**
   * Appends the entries of notification `nid` to their users' logs on one
   * pipeline (lib/infra/scripts/userLogAppend-n.lua, one run per 128
   * entries; on a cluster, per 128 entries of one user shard, since a
   * script's keys must share a hash slot, and {@link pipelineOf}'s
   * pipeline). The member is the entry's JSON with a fixed field order, so a
   * replayed receipt lands on the same member and is not logged twice.
   */
  append(nid: string, entries: readonly ReceiptEntry[], pipeline = pipelineOf(this.r)): ReturnType<Redis["pipeline"]> {
    const kept = entries.filter((e) => UserLog.keeps(e));
    const allKeys = kept.map((e) => userLogKey(shardOf(e.user, this.shards), e.user));
    for (const group of slotGroups(this.r, allKeys)) {
      for (let o = 0; o < group.length; o += PER_CALL) {
        const part = group.slice(o, o + PER_CALL);
        const args: (string | number)[] = [this.cap, this.ttlMs];
        for (const i of part) {
          const e = kept[i];
          const line: UserLogEntry = { notification: nid, outcome: e.outcome, channel: e.channel, device: e.device, reason: e.reason, providerId: e.providerId, at: e.at };
          args.push(e.at, JSON.stringify(line));
        }
        (pipeline as ScriptPipeline).nfxUserLogAppend(part.length, ...part.map((i) => allKeys[i]), ...args);
      }
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

/** The cluster's user log as configured (`tracker.*`), or null when it is off. */
export const userLogFor = (cfg: Config, redis: Redis): UserLog | null =>
  cfg.tracker.userLog ? new UserLog(redis, cfg.cluster.shards, cfg.tracker.userLogCap, cfg.tracker.userLogDays * 86400_000) : null;
