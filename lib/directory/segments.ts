// Segments: the built-in ones (all, active_<N>d) and named ones materialized per shard; iterated in id order, a chunk at a time.
import { z } from "zod";

import { RequestInvalid, SegmentUnknown } from "../core/errors.js";
import { lastActiveKey, segmentBuildingKey, segmentKey, SEGMENTS_KEY, topicUsersKey, userIndexKey } from "../core/keys.js";
import { ownValue } from "../core/own-keys.js";
import type { UserRecord } from "../core/types.js";
import type { Redis } from "../infra/redis.js";
import { withScripts } from "../infra/scripts.js";
import { readUsers } from "./directory.js";
import { requireTopic, TOPIC_SEGMENT_PREFIX } from "./topics.js";

const DAY = 86_400_000;
/** Built-in segment names: `all`, and `active_<N>d` for "active within the last N days". */
export const BUILTIN = /^(all|active_([1-9][0-9]{0,3})d)$/;
export const SEGMENT_NAME = /^[a-z0-9][a-z0-9_:-]{0,63}$/;

/** A named segment's rule: every condition must hold. */
export const segmentRuleSchema = z.strictObject({
  activeDays: z.number().int().min(1).max(3650).optional(),
  locales: z.array(z.string().min(1)).min(1).optional(),
  platforms: z.array(z.enum(["ios", "android"])).min(1).optional(),
  /** Attribute equalities. */
  attributes: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).optional(),
  optedOut: z.boolean().optional(),
});
export type SegmentRule = z.infer<typeof segmentRuleSchema>;

export interface SegmentDefinition {
  name: string;
  rule: SegmentRule;
  definedAt: number;
  /** Members when it was last materialized. */
  members: number;
}

/** Whether `u` satisfies `rule` at time `now`. */
export function matches(u: UserRecord, rule: SegmentRule, now: number): boolean {
  if (rule.activeDays !== undefined && (u.lastActive ?? 0) < now - rule.activeDays * DAY) return false;
  if (rule.locales && !rule.locales.includes(u.locale ?? "")) return false;
  if (rule.platforms && !u.devices.some((d) => rule.platforms!.includes(d.platform))) return false;
  if (rule.optedOut !== undefined && Boolean(u.optedOut) !== rule.optedOut) return false;
  for (const [k, v] of Object.entries(rule.attributes ?? {})) if (ownValue(u.attributes, k) !== v) return false;
  return true;
}

/**
 * Where a segment's members are listed, per shard, and the rule the shard
 * actor applies to each record: built-ins list every user and filter by last
 * activity as of `asOf`; named segments list their materialized members.
 */
export interface SegmentSource {
  key: (shard: number) => string;
  filter?: { activeSince: number };
}

/**
 * Where segment `name`'s members are listed and its rule as of `asOf`, without checking that it exists (the caller
 * did, or reads it later and finds an empty set): built-ins list every user, a topic's users are its subscriber sets.
 */
export function sourceOf(name: string, asOf: number): SegmentSource {
  const b = BUILTIN.exec(name);
  if (b) return b[2] ? { key: userIndexKey, filter: { activeSince: asOf - Number(b[2]) * DAY } } : { key: userIndexKey };
  if (name.startsWith(TOPIC_SEGMENT_PREFIX)) {
    // A topic notification's users: the topic's per-shard subscriber sets (lib/directory/topics.ts).
    const topic = name.slice(TOPIC_SEGMENT_PREFIX.length);
    return { key: (s) => topicUsersKey(s, topic) };
  }
  return { key: (s) => segmentKey(s, name) };
}

/** Resolves a segment name ({@link sourceOf}). Throws {@link SegmentUnknown} naming `segment` when it is neither built in nor defined, {@link TopicUnknown} for a missing topic. */
export async function segmentSource(redis: Redis, name: string, asOf: number): Promise<SegmentSource> {
  if (name.startsWith(TOPIC_SEGMENT_PREFIX)) await requireTopic(redis, name.slice(TOPIC_SEGMENT_PREFIX.length));
  else if (!BUILTIN.test(name) && !(await redis.hexists(SEGMENTS_KEY, name))) {
    throw new SegmentUnknown(`segment: no segment ${name} (define it with \`nfx segments define\`; built in: all, active_<N>d)`, { field: "segment" });
  }
  return sourceOf(name, asOf);
}

/**
 * The next up-to-`limit` member ids of a shard after `after` (exclusive; null
 * = from the start), in id order. Ids inserted while a scan runs land in their
 * place in the order, so a chunk range (after, last] read again later holds
 * the same ids plus any inserted inside it.
 */
export async function scanIds(redis: Redis, key: string, after: string | null, limit: number): Promise<string[]> {
  return redis.zrangebylex(key, after === null ? "-" : `(${after}`, "+", "LIMIT", 0, limit);
}

/**
 * Lists the next up-to-`limit` ids of a shard's index after `after` (and up to
 * `to` when replaying a planned chunk), keeping those active since `since`, in
 * one Redis call (lib/infra/scripts/scanActive-2.lua). Returns the last id listed (null when nothing was listed),
 * how many were listed, and the active ones, in order.
 */
export async function scanActive(redis: Redis, shard: number, after: string | null, to: string | null, limit: number, since: number): Promise<{ last: string | null; listed: number; ids: string[] }> {
  const r = await withScripts(redis).nfxScanActive(userIndexKey(shard), lastActiveKey(shard), after === null ? "-" : `(${after}`, to === null ? "+" : `[${to}`, limit, since);
  return r.length === 0 ? { last: null, listed: 0, ids: [] } : { last: String(r[0]), listed: Number(r[1]), ids: r.slice(2).map(String) };
}

/** The ids of a shard in (after, to], for replaying a planned chunk exactly. */
export async function rangeIds(redis: Redis, key: string, after: string | null, to: string): Promise<string[]> {
  return redis.zrangebylex(key, after === null ? "-" : `(${after}`, `[${to}`);
}

/** Visits every user record of a shard in id order, `batch` at a time. */
async function forEachUser(redis: Redis, shard: number, batch: number, visit: (users: UserRecord[]) => Promise<void> | void): Promise<void> {
  let after: string | null = null;
  for (;;) {
    const ids = await scanIds(redis, userIndexKey(shard), after, batch);
    if (ids.length === 0) return;
    await visit((await readUsers(redis, shard, ids, { profile: true })).filter((u): u is UserRecord => u !== null));
    after = ids[ids.length - 1]!;
  }
}

/**
 * Defines (or redefines) a named segment and materializes its members per
 * shard: each shard's set is built aside and swapped in with RENAME, so a
 * campaign never sees a half-built shard. Returns the definition with its
 * member count.
 */
export async function defineSegment(redis: Redis, shards: number, name: string, rule: SegmentRule, now: number, onShard?: (done: number) => void): Promise<SegmentDefinition> {
  if (!SEGMENT_NAME.test(name) || BUILTIN.test(name) || name.startsWith(TOPIC_SEGMENT_PREFIX)) {
    throw new RequestInvalid(`name: must match ${SEGMENT_NAME}, not be a built-in name and not start with ${TOPIC_SEGMENT_PREFIX} (a topic's users)`, { field: "name" });
  }
  const parsed = segmentRuleSchema.parse(rule);
  let members = 0;
  for (let s = 0; s < shards; s++) {
    const tmp = segmentBuildingKey(s, name);
    await redis.del(tmp);
    await forEachUser(redis, s, 5000, async (users) => {
      const ids = users.filter((u) => matches(u, parsed, now)).map((u) => u.id);
      members += ids.length;
      if (ids.length) await redis.zadd(tmp, ...ids.flatMap((id) => [0, id]));
    });
    if (await redis.exists(tmp)) await redis.rename(tmp, segmentKey(s, name));
    else await redis.del(segmentKey(s, name));
    onShard?.(s + 1);
  }
  const def: SegmentDefinition = { name, rule: parsed, definedAt: now, members };
  await redis.hset(SEGMENTS_KEY, name, JSON.stringify(def));
  return def;
}

/** Counts a segment's members now: named segments by their sets; built-ins by reading every record (slow on big directories). */
export async function countSegment(redis: Redis, shards: number, name: string, now: number): Promise<number> {
  const src = await segmentSource(redis, name, now);
  let n = 0;
  for (let s = 0; s < shards; s++) {
    if (!src.filter) n += await redis.zcard(src.key(s));
    else await forEachUser(redis, s, 5000, (users) => void (n += users.filter((u) => (u.lastActive ?? 0) >= src.filter!.activeSince).length));
  }
  return n;
}

/** Every named segment's definition. */
export async function listSegments(redis: Redis): Promise<SegmentDefinition[]> {
  const all = await redis.hgetall(SEGMENTS_KEY);
  return Object.values(all).map((v) => JSON.parse(v) as SegmentDefinition).sort((a, b) => a.name.localeCompare(b.name));
}
