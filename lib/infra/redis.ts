// Redis connection handling: auto-pipelined ioredis client, reconnects logged, never fatal.
import { Redis } from "ioredis";

import type { Config } from "../core/config.js";
import { StoreUnavailable } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import { scriptOptions } from "./scripts.js";

export type { Redis };

/**
 * Opens a Redis client with auto-pipelining (commands issued in the same
 * tick share one round trip). Waits until the first connection is ready and
 * throws {@link StoreUnavailable} naming `redis.url` if it cannot be made,
 * unless `o.waitForServer` (roles): then it waits until Redis answers, each
 * retry logged with its growing delay (100 ms more per attempt, at most 2 s).
 * Later disconnects are logged and retried forever.
 */
export async function connectRedis(cfg: Config, log: Logger, o: { waitForServer?: boolean } = {}): Promise<Redis> {
  const r = new Redis(cfg.redis.url, {
    enableAutoPipelining: true,
    maxRetriesPerRequest: null,
    lazyConnect: true,
    retryStrategy: (n) => Math.min(n * 100, 2000),
    // Every Lua script (lib/infra/scripts/) as a command from construction, so no auto-pipeline misses one; duplicate() copies them.
    scripts: scriptOptions(),
  });
  if (o.waitForServer) {
    // ioredis keeps reconnecting after a refused first connect (its retryStrategy); wait for the first "ready".
    let attempt = 0;
    let last: Error | undefined;
    const onError = (err: Error): void => void (last = err);
    const onRetry = (retryInMs: number): void => log.warn({ err: last, url: cfg.redis.url, attempt: ++attempt, retryInMs }, "redis not reachable yet, waiting");
    r.on("error", onError);
    r.on("reconnecting", onRetry);
    const ready = new Promise<void>((res) => r.once("ready", () => res()));
    r.connect().catch(() => undefined);
    await ready;
    r.off("error", onError);
    r.off("reconnecting", onRetry);
    r.on("error", (err) => log.warn({ err }, "redis error"));
    r.on("reconnecting", () => log.warn("redis reconnecting"));
    return r;
  }
  let first: Error | undefined;
  const early = (err: Error): void => void (first ??= err);
  r.on("error", early);
  try {
    await r.connect();
  } catch (cause) {
    r.disconnect();
    throw new StoreUnavailable(`redis.url: cannot connect to ${cfg.redis.url}: ${(first ?? (cause as Error)).message}`, { field: "redis.url", cause });
  }
  r.off("error", early);
  // Only after the first connection: later disconnects are logged and retried, never fatal.
  r.on("error", (err) => log.warn({ err }, "redis error"));
  r.on("reconnecting", () => log.warn("redis reconnecting"));
  return r;
}
