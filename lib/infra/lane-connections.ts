// Runs a lane-consuming part once per lane class, the urgent class on NATS and Redis connections of its own when a process runs both.
import type { Config } from "../core/config.js";
import type { Logger } from "../core/log.js";
import type { LaneClass } from "../core/subjects.js";
import { connectNats, type Nats } from "./nats.js";
import type { NatsIdentity } from "./nats-auth.js";
import { duplicateRedis, type Redis } from "./redis.js";

/** What {@link perLaneClass} needs: the process's connections and which classes it runs. */
export interface LaneConnectionOptions {
  cfg: Config;
  log: Logger;
  nats: Nats;
  redis: Redis;
  lanes: readonly LaneClass[];
  /** The NATS user the extra urgent connection logs in as (the role's). */
  as: NatsIdentity;
  /** Connection name prefix (`<name>-urgent` for the extra one). */
  name: string;
}

/**
 * Starts `start` once per lane class of `o.lanes`. When both classes run in
 * one process, the urgent one gets a NATS connection and a Redis connection
 * of its own: NATS and Redis answer each connection in order, so an urgent
 * read or publish would otherwise queue behind megabytes of bulk traffic.
 * Resolves the started parts in `o.lanes` order and a `stop` that stops them,
 * then closes the extra connections. If a start throws, what started is stopped and the error rethrown.
 */
export async function perLaneClass<T extends { stop(): Promise<void> }>(o: LaneConnectionOptions, start: (c: { nats: Nats; redis: Redis }, cls: LaneClass) => Promise<T>): Promise<{ parts: T[]; stop: () => Promise<void> }> {
  const parts: T[] = [];
  const closers: (() => Promise<void>)[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(parts.map((p) => p.stop().catch((err) => o.log.warn({ err }, "lane part stop failed"))));
    for (const c of closers) await c();
  };
  try {
    for (const cls of o.lanes) {
      if (cls === "urgent" && o.lanes.length > 1) {
        const nats = await connectNats(o.cfg, o.log, `${o.name}-urgent`, o.as);
        const redis = duplicateRedis(o.redis);
        closers.push(async () => {
          await nats.nc.drain().catch(() => undefined);
          redis.disconnect();
        });
        parts.push(await start({ nats, redis }, cls));
      } else parts.push(await start({ nats: o.nats, redis: o.redis }, cls));
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { parts, stop };
}
