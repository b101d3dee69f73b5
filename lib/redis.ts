// Redis connection handling: auto-pipelined ioredis client, reconnects logged, never fatal.
import { Redis } from "ioredis";
import type { Config } from "./config.js";
import type { Logger } from "./log.js";

export type { Redis };

/**
 * Opens a Redis client with auto-pipelining (commands issued in the same
 * tick share one round trip). Waits until the first connection is ready;
 * later disconnects are logged and retried forever.
 */
export async function connectRedis(cfg: Config, log: Logger): Promise<Redis> {
  const r = new Redis(cfg.redis.url, {
    enableAutoPipelining: true,
    maxRetriesPerRequest: null,
    lazyConnect: true,
    retryStrategy: (n) => Math.min(n * 100, 2000),
  });
  r.on("error", (err) => log.warn({ err }, "redis error"));
  r.on("reconnecting", () => log.warn("redis reconnecting"));
  await r.connect();
  return r;
}
