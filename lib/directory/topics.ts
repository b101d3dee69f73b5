// Topics: named audiences of users (stored per shard like segments, so a topic with millions fans out through the campaign machinery) and of webhook endpoints.
import { NotFound, TopicUnknown } from "../core/errors.js";
import { topicEndpointsKey, TOPICS_KEY, topicUsersKey } from "../core/keys.js";
import { groupByShard, shardOf } from "../core/shard-hash.js";
import { pipelineOf, type Redis } from "../infra/redis.js";

/** The prefix of a topic notification's internal segment name (`topic:<name>`); segment names may not start with it. */
export const TOPIC_SEGMENT_PREFIX = "topic:";

export interface TopicDefinition {
  name: string;
  description?: string;
  createdAt: number;
}

/** A topic with its subscriber counts. */
export interface TopicView extends TopicDefinition {
  users: number;
  endpoints: number;
}

/** Creates topic `name`, or updates its description when it exists (creation time kept). Returns the definition. */
export async function putTopic(redis: Redis, name: string, description: string | undefined, now = Date.now()): Promise<TopicDefinition> {
  const old = await redis.hget(TOPICS_KEY, name);
  const def: TopicDefinition = { name, ...(description !== undefined ? { description } : {}), createdAt: old ? (JSON.parse(old) as TopicDefinition).createdAt : now };
  await redis.hset(TOPICS_KEY, name, JSON.stringify(def));
  return def;
}

/** Throws {@link TopicUnknown} naming `field` when topic `name` does not exist (the notify path: 422). */
export async function requireTopic(redis: Redis, name: string, field = "topic"): Promise<void> {
  if (!(await redis.hexists(TOPICS_KEY, name))) throw new TopicUnknown(`${field}: no topic ${name} (create it with \`nfx topics create\` or PUT /v1/topics/${name})`, { field });
}

/** Topic `name` with its subscriber counts. Throws {@link NotFound} when it does not exist. */
export async function getTopic(redis: Redis, shards: number, name: string): Promise<TopicView> {
  const raw = await redis.hget(TOPICS_KEY, name);
  if (!raw) throw new NotFound(`topic ${name} not found`, { field: "name" });
  return { ...(JSON.parse(raw) as TopicDefinition), ...(await countSubscribers(redis, shards, name)) };
}

/** Every topic with its subscriber counts, by name. */
export async function listTopics(redis: Redis, shards: number): Promise<TopicView[]> {
  const all = await redis.hgetall(TOPICS_KEY);
  const out: TopicView[] = [];
  for (const name of Object.keys(all).sort()) out.push({ ...(JSON.parse(all[name]) as TopicDefinition), ...(await countSubscribers(redis, shards, name)) });
  return out;
}

async function countSubscribers(redis: Redis, shards: number, name: string): Promise<{ users: number; endpoints: number }> {
  const p = pipelineOf(redis);
  for (let s = 0; s < shards; s++) p.zcard(topicUsersKey(s, name));
  const res = (await p.exec()) ?? [];
  const users = res.reduce((a, [err, n]) => a + (err ? 0 : Number(n)), 0);
  return { users, endpoints: await redis.scard(topicEndpointsKey(name)) };
}

/** Deletes topic `name` and its subscriptions. Throws {@link NotFound} when it does not exist. Notifications already accepted for it go on with the members they find. */
export async function deleteTopic(redis: Redis, shards: number, name: string): Promise<void> {
  if (!(await redis.hdel(TOPICS_KEY, name))) throw new NotFound(`topic ${name} not found`, { field: "name" });
  const p = pipelineOf(redis);
  for (let s = 0; s < shards; s++) p.unlink(topicUsersKey(s, name));
  p.unlink(topicEndpointsKey(name));
  await p.exec();
}

/**
 * Subscribes (or, with `remove`, unsubscribes) users `ids` to topic `name`, one pipeline grouped per shard.
 * Returns how many were added (or removed); ids already in (or not in) the topic count nothing.
 * Throws {@link NotFound} when the topic does not exist.
 */
export async function changeUserSubscriptions(redis: Redis, shards: number, name: string, ids: readonly string[], remove = false): Promise<number> {
  if (!(await redis.hexists(TOPICS_KEY, name))) throw new NotFound(`topic ${name} not found`, { field: "name" });
  const p = pipelineOf(redis);
  for (const [s, list] of groupByShard(ids, shards)) {
    if (remove) p.zrem(topicUsersKey(s, name), ...list);
    else p.zadd(topicUsersKey(s, name), ...list.flatMap((u) => [0, u]));
  }
  const res = (await p.exec()) ?? [];
  for (const [err] of res) if (err) throw err;
  return res.reduce((a, [, n]) => a + Number(n), 0);
}

/** Subscribes (or, with `remove`, unsubscribes) endpoints `ids` to topic `name`. Returns how many changed. Throws {@link NotFound} when the topic does not exist. */
export async function changeEndpointSubscriptions(redis: Redis, name: string, ids: readonly string[], remove = false): Promise<number> {
  if (!(await redis.hexists(TOPICS_KEY, name))) throw new NotFound(`topic ${name} not found`, { field: "name" });
  if (ids.length === 0) return 0;
  return remove ? redis.srem(topicEndpointsKey(name), ...ids) : redis.sadd(topicEndpointsKey(name), ...ids);
}

/** The endpoint ids subscribed to topic `name`, sorted (a deterministic order: the router's batch numbering depends on it). */
export async function topicEndpoints(redis: Redis, name: string): Promise<string[]> {
  return (await redis.smembers(topicEndpointsKey(name))).sort();
}

/** Whether user `id` is subscribed to topic `name`. */
export async function isSubscribed(redis: Redis, shards: number, name: string, id: string): Promise<boolean> {
  return (await redis.zscore(topicUsersKey(shardOf(id, shards), name), id)) !== null;
}
