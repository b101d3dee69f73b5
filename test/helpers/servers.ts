// Test harness: a real nats-server (JetStream, temp store) and redis-server (no persistence; a Redis Cluster with NFX_TEST_REDIS=cluster) on free loopback ports for one test file.
import "./child-env.js";

import type { ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import type { Test } from "tap";

import { mergeDeep } from "../../cmd/local-cluster.js";
import { type Config, loadConfig } from "../../lib/core/config.js";
import { startNatsServer, startRedisServer } from "../../lib/infra/launch.js";
import { renderNatsServerConf } from "../../lib/infra/nats-auth.js";
import { type RedisCluster, startRedisCluster } from "../../lib/infra/redis-cluster.js";
import { freshSecret } from "../../lib/infra/secrets.js";

/**
 * The Redis the test harness starts: `NFX_TEST_REDIS=cluster` runs every
 * suite on a Redis Cluster (three masters with a replica each) instead of
 * one redis-server (docs/testing.md).
 */
export const testRedis = (): "single" | "cluster" => (process.env.NFX_TEST_REDIS === "cluster" ? "cluster" : "single");

export interface TestServers {
  natsUrl: string;
  /** The nats-server process (to pause or kill it). */
  natsProc: ChildProcess;
  /** The cluster's `nats.secret` (every NATS password derives from it). */
  natsSecret: string;
  /** The redis-server's URL; on a Redis Cluster, its first node's. */
  redisUrl: string;
  /** The seed nodes of the Redis Cluster (`redis.cluster`); empty on one redis-server. */
  redisSeeds: string[];
  /** The Redis Cluster's processes (to kill and restart a node), or null on one redis-server. */
  redisCluster: RedisCluster | null;
  /** A config pointing at these servers, with fresh secrets and an explicit origin (roles refuse the published defaults), and `overrides` applied. */
  config(overrides?: Record<string, unknown>): Config;
}

/**
 * Starts nats-server and redis-server (or a Redis Cluster: `o.redis`,
 * by default {@link testRedis}) for the test `t`; all are stopped and their
 * directories removed when `t` ends, whatever the outcome.
 */
export async function startServers(t: Test, o: { redis?: "single" | "cluster" } = {}): Promise<TestServers> {
  const dir = mkdtempSync(join(tmpdir(), "nfx-test-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // Fresh NATS credentials per test file, as `nfx up` makes them (lib/infra/nats-auth.ts).
  const secret = freshSecret();
  const nats = await startNatsServer({ storeDir: join(dir, "nats"), conf: renderNatsServerConf({ secret, producers: ["producer"] }) });
  t.teardown(nats.stop);
  let redisUrl: string;
  let seeds: string[] = [];
  let rc: RedisCluster | null = null;
  if ((o.redis ?? testRedis()) === "cluster") {
    rc = await startRedisCluster({ dir: join(dir, "redis-cluster"), masters: 3, replicasPerMaster: 1 });
    t.teardown(rc.stop);
    seeds = rc.seeds;
    redisUrl = seeds[0];
  } else {
    const redis = await startRedisServer({ dir: join(dir, "redis") });
    t.teardown(redis.stop);
    redisUrl = redis.url;
  }
  return {
    natsUrl: nats.url,
    natsProc: nats.proc,
    natsSecret: secret,
    redisUrl,
    redisSeeds: seeds,
    redisCluster: rc,
    config: (overrides = {}) =>
      loadConfig({
        env: {},
        overrides: {
          ...mergeDeep({ ws: { secret: freshSecret(), origins: ["http://127.0.0.1"] }, engagement: { secret: freshSecret() } }, overrides),
          nats: { servers: [nats.url], secret }, redis: { url: redisUrl, cluster: seeds }, log: { level: "warn" },
        },
      }),
  };
}
