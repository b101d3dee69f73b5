// Test harness: a real nats-server (JetStream, temp store) and redis-server (no persistence) on free loopback ports for one test file.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import type { Test } from "tap";

import { mergeDeep } from "../../cmd/local-cluster.js";
import { type Config, loadConfig } from "../../lib/core/config.js";
import { startNatsServer, startRedisServer } from "../../lib/infra/launch.js";
import { renderNatsServerConf } from "../../lib/infra/nats-auth.js";
import { freshSecret } from "../../lib/infra/secrets.js";

export interface TestServers {
  natsUrl: string;
  /** The cluster's `nats.secret` (every NATS password derives from it). */
  natsSecret: string;
  redisUrl: string;
  /** A config pointing at these servers, with fresh secrets and an explicit origin (roles refuse the published defaults), and `overrides` applied. */
  config(overrides?: Record<string, unknown>): Config;
}

/**
 * Starts nats-server and redis-server for the test `t`; both are stopped and
 * their directories removed when `t` ends, whatever the outcome.
 */
export async function startServers(t: Test): Promise<TestServers> {
  const dir = mkdtempSync(join(tmpdir(), "nfx-test-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // Fresh NATS credentials per test file, as `nfx up` makes them (lib/infra/nats-auth.ts).
  const secret = freshSecret();
  const nats = await startNatsServer({ storeDir: join(dir, "nats"), conf: renderNatsServerConf({ secret, producers: ["producer"] }) });
  t.teardown(nats.stop);
  const redis = await startRedisServer({ dir: join(dir, "redis") });
  t.teardown(redis.stop);
  return {
    natsUrl: nats.url,
    natsSecret: secret,
    redisUrl: redis.url,
    config: (overrides = {}) =>
      loadConfig({
        env: {},
        overrides: {
          ...mergeDeep({ ws: { secret: freshSecret(), origins: ["http://127.0.0.1"] }, engagement: { secret: freshSecret() } }, overrides),
          nats: { servers: [nats.url], secret }, redis: { url: redis.url }, log: { level: "warn" },
        },
      }),
  };
}
