// Redis connection handling: an auto-pipelined ioredis client of one redis-server or of a Redis Cluster, reconnects logged, never fatal.
import { type ChainableCommander, Cluster, Redis as Single } from "ioredis";

import type { Config } from "../core/config.js";
import { StoreUnavailable } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import { scriptOptions, variableKeyScripts } from "./scripts.js";

/**
 * The client every role holds: one redis-server's (`redis.url`) or a Redis
 * Cluster's (`redis.cluster`). Both have the same commands and, with
 * {@link withScripts}, the same script commands. On a cluster every command
 * must touch keys of one hash slot (docs/directory.md, "Redis Cluster"), and
 * an explicit `pipeline()` keys of one node: nfx code sends single commands
 * (auto-pipelined per node) or groups work per slot.
 */
export type Redis = Single | Cluster;

/** True when `r` is a Redis Cluster client. */
export const isCluster = (r: Redis): r is Cluster => r instanceof Cluster;

/** A new client of the same server or cluster with the same options (scripts included), connecting on first use. */
export function duplicateRedis(r: Redis): Redis {
  return isCluster(r) ? r.duplicate() : r.duplicate();
}

/**
 * The clients to send a per-server command to (SCAN, FLUSHALL, INFO, DBSIZE):
 * every master of a cluster, or the client itself. A cluster's list is as
 * the client last saw the topology.
 */
export function masterClients(r: Redis): Single[] {
  return isCluster(r) ? r.nodes("master") : [r];
}

/**
 * Settings nfx wants of every redis-server it uses (the servers nfx starts itself get them as flags):
 * `lazyfree-lazy-expire yes` frees an expiring key in the background. A notification's delivery keys in one user shard
 * are one hash, which expires whole: freeing one of 1.5 million fields held every client for 660 ms without it, 5 ms
 * with it (docs/operations.md, "Redis settings").
 */
export const REDIS_SETTINGS: Readonly<Record<string, string>> = { "lazyfree-lazy-expire": "yes" };

/** {@link REDIS_SETTINGS} as `redis-server` command-line flags. */
export const REDIS_SERVER_FLAGS: readonly string[] = Object.entries(REDIS_SETTINGS).flatMap(([k, v]) => [`--${k}`, v]);

/**
 * Logs a warning for each setting of each master of `redis` that differs from {@link REDIS_SETTINGS}, naming the
 * server, the setting and the value wanted. A server that refuses `CONFIG GET` (some managed services) is left
 * unchecked. Never throws.
 */
export async function warnRedisSettings(redis: Redis, log: Logger): Promise<void> {
  await Promise.all(masterClients(redis).flatMap((c) => Object.entries(REDIS_SETTINGS).map(async ([setting, want]) => {
    const got = await c.config("GET", setting).catch(() => null);
    const value = Array.isArray(got) ? got[1] : undefined;
    if (value !== undefined && value !== want) {
      log.warn({ server: `${c.options.host}:${c.options.port}`, setting, value, want }, "redis-server setting differs from what nfx needs (docs/operations.md, \"Redis settings\")");
    }
  })));
}

/**
 * A pipeline that runs on both kinds of client. On one redis-server it is
 * `redis.pipeline()`. On a cluster, where a pipeline must keep to one node,
 * it records the commands and `exec()` sends each on its own in one tick,
 * so auto-pipelining carries every node's share in one round trip; it
 * resolves the same `[error, result]` pairs, in queue order. Nothing is sent
 * before `exec()` on either. Each command must still touch one hash slot.
 */
export function pipelineOf(redis: Redis): ChainableCommander {
  if (!isCluster(redis)) return redis.pipeline();
  const client = redis as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
  const queued: [string, unknown[]][] = [];
  const recorder: ChainableCommander = new Proxy({} as ChainableCommander, {
    get(_, name) {
      if (name === "exec") {
        return async (): Promise<[Error | null, unknown][]> =>
          (await Promise.allSettled(queued.splice(0).map(([m, args]) => client[m](...args)))).map((s) => (s.status === "fulfilled" ? [null, s.value] : [s.reason as Error, null]));
      }
      if (name === "length") return queued.length;
      if (typeof name !== "string" || typeof client[name] !== "function") return undefined;
      return (...args: unknown[]) => (queued.push([name, args]), recorder);
    },
  });
  return recorder;
}

/** The hash tag of a key (between the first `{` and the next `}`, when not empty), else the key: keys with the same one share a hash slot. */
export function hashTagOf(key: string): string {
  const open = key.indexOf("{");
  if (open < 0) return key;
  const close = key.indexOf("}", open + 1);
  return close > open + 1 ? key.slice(open + 1, close) : key;
}

/**
 * Positions of `keys` in groups whose keys share a hash slot, for a
 * multi-key command or script run once per group: one group of all on one
 * redis-server (nothing changes there), one per hash tag on a cluster.
 * Groups come in order of their first key; positions ascend within each.
 */
export function slotGroups(redis: Redis, keys: readonly string[]): number[][] {
  if (!isCluster(redis)) return keys.length ? [keys.map((_, i) => i)] : [];
  const by = new Map<string, number[]>();
  keys.forEach((k, i) => {
    const t = hashTagOf(k);
    const g = by.get(t);
    if (g) g.push(i);
    else by.set(t, [i]);
  });
  return [...by.values()];
}

/** Reconnect delay after `n` failed attempts: 100 ms more per attempt, at most 2 s. */
const backoff = (n: number): number => Math.min(n * 100, 2000);

/** How long a one-shot (non-waiting) cluster connect may take before it is reported unavailable (a cluster whose state is not ok never becomes ready). */
const CLUSTER_CONNECT_MS = 10_000;

function openCluster(seeds: readonly string[]): Cluster {
  const first = new URL(seeds[0]);
  return new Cluster(
    seeds.map((u) => {
      const x = new URL(u);
      return { host: x.hostname, port: Number(x.port || 6379) };
    }),
    {
      enableAutoPipelining: true,
      // ioredis routes an auto-pipelined call by its first argument, which for a script of a variable number of keys is that
      // number, not a key: such calls would share a pipeline with another node's commands and fail. They are sent on their own
      // (routed by their first key), still without waiting for earlier replies.
      autoPipeliningIgnoredCommands: variableKeyScripts(),
      lazyConnect: true,
      clusterRetryStrategy: (n) => backoff(n),
      // While a master fails over (cluster-node-timeout, then the replica's election), commands to its slots are retried
      // every 300 ms up to 64 times (about 20 s) rather than failing after ioredis's default 1.6 s.
      retryDelayOnFailover: 300,
      retryDelayOnClusterDown: 300,
      retryDelayOnTryAgain: 300,
      maxRedirections: 64,
      // An auto-pipeline whose commands come back MOVED to different slots is not redirected by ioredis (it only retries a
      // pipeline whose errors are all the same): the caller gets the error and retries, and the slot map is re-read every
      // second (ioredis: 5 s), so after a failover such errors last about a second.
      slotsRefreshInterval: 1000,
      // Every Lua script (lib/infra/scripts/) as a command from construction; duplicate() copies the options.
      scripts: scriptOptions(),
      redisOptions: {
        ...(first.username ? { username: decodeURIComponent(first.username) } : {}),
        ...(first.password ? { password: decodeURIComponent(first.password) } : {}),
        ...(first.protocol === "rediss:" ? { tls: {} } : {}),
      },
    },
  );
}

function openSingle(url: string): Single {
  return new Single(url, {
    enableAutoPipelining: true,
    maxRetriesPerRequest: null,
    lazyConnect: true,
    retryStrategy: backoff,
    // Every Lua script (lib/infra/scripts/) as a command from construction, so no auto-pipeline misses one; duplicate() copies them.
    scripts: scriptOptions(),
  });
}

/**
 * The client {@link connectRedis} connects, not connected yet (it connects on
 * `connect()` or its first command): a cluster client of `redis.cluster`
 * when it lists seed nodes, else one of `redis.url`.
 */
export function redisClient(cfg: Config): Redis {
  return cfg.redis.cluster.length > 0 ? openCluster(cfg.redis.cluster) : openSingle(cfg.redis.url);
}

/**
 * Opens a Redis client with auto-pipelining (commands issued in the same
 * tick share one round trip; on a cluster, one per node): a cluster client
 * when `redis.cluster` lists seed nodes, else one of `redis.url`. Waits
 * until the first connection is ready (a cluster's: its slots known and
 * `cluster_state:ok`) and throws {@link StoreUnavailable} naming the field
 * in use (`redis.cluster` or `redis.url`) if it cannot be made (a cluster
 * also if it is not ready within 10 s), unless `o.waitForServer` (roles):
 * then it waits until Redis answers, each retry logged with its growing
 * delay (100 ms more per attempt, at most 2 s). Later disconnects are
 * logged and retried forever.
 */
export async function connectRedis(cfg: Config, log: Logger, o: { waitForServer?: boolean } = {}): Promise<Redis> {
  const seeds = cfg.redis.cluster;
  const field = seeds.length > 0 ? "redis.cluster" : "redis.url";
  const where = seeds.length > 0 ? seeds.join(", ") : cfg.redis.url;
  const r = redisClient(cfg);
  const logged = (): Redis => {
    // Only after the first connection: later disconnects are logged and retried, never fatal.
    r.on("error", (err) => log.warn({ err }, "redis error"));
    r.on("reconnecting", () => log.warn("redis reconnecting"));
    if (isCluster(r)) {
      // A node that is down fails every retry (several a second): logged once per node per 10 s, with how many were not.
      const seen = new Map<string, { at: number; quiet: number }>();
      r.on("node error", (err: Error, node: string) => {
        const s = seen.get(node);
        if (s && Date.now() - s.at < 10_000) return void s.quiet++;
        log.warn({ err, node, ...(s?.quiet ? { notLogged: s.quiet } : {}) }, "redis cluster node error");
        seen.set(node, { at: Date.now(), quiet: 0 });
      });
    }
    return r;
  };
  if (o.waitForServer) {
    // ioredis keeps reconnecting after a refused first connect (its retry strategy); wait for the first "ready".
    let attempt = 0;
    let last: Error | undefined;
    const onError = (err: Error): void => void (last = err);
    const onRetry = (): void => {
      attempt++;
      log.warn({ err: last, [field === "redis.url" ? "url" : "seeds"]: where, attempt, retryInMs: backoff(attempt) }, "redis not reachable yet, waiting");
    };
    r.on("error", onError);
    r.on("reconnecting", onRetry);
    const ready = new Promise<void>((res) => r.once("ready", () => res()));
    r.connect().catch(() => undefined);
    await ready;
    r.off("error", onError);
    r.off("reconnecting", onRetry);
    return logged();
  }
  let first: Error | undefined;
  const early = (err: Error): void => void (first ??= err);
  r.on("error", early);
  let timer: NodeJS.Timeout | undefined;
  try {
    const deadline = new Promise<never>((_, rej) => {
      if (isCluster(r)) timer = setTimeout(() => rej(new Error(`not ready after ${CLUSTER_CONNECT_MS} ms (is cluster_state ok on every node?)`)), CLUSTER_CONNECT_MS);
    });
    await Promise.race([r.connect(), deadline]);
  } catch (cause) {
    r.disconnect();
    const why = first && !(cause as Error).message.startsWith("not ready") ? first : (cause as Error);
    const detail = (why as Error & { lastNodeError?: Error }).lastNodeError?.message;
    throw new StoreUnavailable(`${field}: cannot connect to ${where}: ${why.message}${detail ? ` (${detail})` : ""}`, { field, cause });
  } finally {
    clearTimeout(timer);
  }
  r.off("error", early);
  return logged();
}
