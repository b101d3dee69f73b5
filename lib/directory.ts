// The user directory in Redis: one JSON record per user and a per-shard id index, all under the shard's hash tag.
import type { NatsConnection } from "@nats-io/transport-node";
import type { Redis } from "./redis.js";
import { encodeJson } from "./codec.js";
import { userIndexKey, userKey } from "./keys.js";
import { shardOf } from "./shard.js";
import { dirChangedSubject } from "./subjects.js";
import type { Preferences, UserRecord } from "./types.js";

/**
 * Reads the records of `userIds`, all of one shard, in one MGET (one round
 * trip; one hash slot on Redis Cluster). Returns them in input order; a
 * missing user is `null`. Throws if Redis fails or a record is not valid JSON.
 */
export async function readUsers(redis: Redis, shard: number, userIds: readonly string[]): Promise<(UserRecord | null)[]> {
  if (userIds.length === 0) return [];
  const raw = await redis.mget(userIds.map((u) => userKey(shard, u)));
  return raw.map((r) => (r === null ? null : parseUser(r)));
}

/**
 * Writes (replaces) user records and adds them to their shard's index, in one
 * pipeline. The shard of each is derived from its id with `shards`. Throws on
 * the first Redis error.
 */
export async function writeUsers(redis: Redis, shards: number, users: readonly UserRecord[]): Promise<void> {
  const p = redis.pipeline();
  for (const u of users) {
    const s = shardOf(u.id, shards);
    p.set(userKey(s, u.id), JSON.stringify(u));
    p.zadd(userIndexKey(s), 0, u.id);
  }
  const res = await p.exec();
  const failed = res?.find(([err]) => err);
  if (failed) throw failed[0];
}

/** Parses a stored record. Redis's Lua cjson writes an empty array as {}: devices is normalized back to an array. */
function parseUser(raw: string): UserRecord {
  const u = JSON.parse(raw) as UserRecord;
  if (!Array.isArray(u.devices)) u.devices = [];
  return u;
}

/** Reads one user by id, or null. */
export async function getUser(redis: Redis, shards: number, userId: string): Promise<UserRecord | null> {
  const [u] = await readUsers(redis, shardOf(userId, shards), [userId]);
  return u ?? null;
}

// Atomic read-merge-write of one record's preferences and opt-out, in Redis (cjson is built in).
const UPDATE_PREFS = `
local raw = redis.call('GET', KEYS[1])
if not raw then return nil end
local u = cjson.decode(raw)
local patch = cjson.decode(ARGV[1])
if patch.optedOut ~= nil then u.optedOut = patch.optedOut end
if patch.categories then
  if type(u.preferences) ~= 'table' then u.preferences = {} end
  if type(u.preferences.categories) ~= 'table' then u.preferences.categories = {} end
  for cat, chans in pairs(patch.categories) do
    if type(u.preferences.categories[cat]) ~= 'table' then u.preferences.categories[cat] = {} end
    for ch, v in pairs(chans) do u.preferences.categories[cat][ch] = v end
  end
end
local out = cjson.encode(u)
redis.call('SET', KEYS[1], out)
return out`;

/** A change to a user's choices: global opt-out and/or per category, per channel switches. */
export interface PreferencePatch {
  optedOut?: boolean;
  categories?: NonNullable<Preferences["categories"]>;
}

/**
 * Applies `patch` to a user's record atomically (a Lua script), then announces
 * the change on `nfx.dir.changed.<shard>` so caches drop the user. Returns
 * the updated record, or null when the user does not exist (nothing changes then).
 */
export async function updatePreferences(redis: Redis, nc: NatsConnection, shards: number, userId: string, patch: PreferencePatch): Promise<UserRecord | null> {
  const shard = shardOf(userId, shards);
  const out = (await redis.eval(UPDATE_PREFS, 1, userKey(shard, userId), JSON.stringify(patch))) as string | null;
  if (out === null) return null;
  nc.publish(dirChangedSubject(shard), encodeJson({ user: userId, fields: Object.keys(patch) }));
  return parseUser(out);
}
