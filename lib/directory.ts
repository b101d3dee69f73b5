// The user directory in Redis: one JSON record per user under its shard's hash tag, read a chunk at a time.
import type { Redis } from "./redis.js";
import { userKey } from "./keys.js";
import { shardOf } from "./shard.js";
import type { UserRecord } from "./types.js";

/**
 * Reads the records of `userIds`, all of one shard, in one MGET (one round
 * trip; one hash slot on Redis Cluster). Returns them in input order; a
 * missing user is `null`. Throws if Redis fails or a record is not valid JSON.
 */
export async function readUsers(redis: Redis, shard: number, userIds: readonly string[]): Promise<(UserRecord | null)[]> {
  if (userIds.length === 0) return [];
  const raw = await redis.mget(userIds.map((u) => userKey(shard, u)));
  return raw.map((r) => (r === null ? null : (JSON.parse(r) as UserRecord)));
}

/** Writes (replaces) user records, pipelined. The shard of each is derived from its id with `shards`. */
export async function writeUsers(redis: Redis, shards: number, users: readonly UserRecord[]): Promise<void> {
  const p = redis.pipeline();
  for (const u of users) p.set(userKey(shardOf(u.id, shards), u.id), JSON.stringify(u));
  const res = await p.exec();
  const failed = res?.find(([err]) => err);
  if (failed) throw failed[0];
}

/** Reads one user by id, or null. */
export async function getUser(redis: Redis, shards: number, userId: string): Promise<UserRecord | null> {
  const [u] = await readUsers(redis, shardOf(userId, shards), [userId]);
  return u ?? null;
}
