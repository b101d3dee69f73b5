// Test harness: a whole local cluster (servers, sandboxes, one process per role) for one test file, stopped when the test ends.
import { createWriteStream, mkdirSync, mkdtempSync, rmSync, type WriteStream } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { connect, type NatsConnection } from "@nats-io/transport-node";
import type { Test } from "tap";

import { openClients } from "../../cmd/cli-context.js";
import { type LocalCluster, mergeDeep, startLocalCluster } from "../../cmd/local-cluster.js";
import { type ProcessSpec, type Role, ROLES } from "../../cmd/roles.js";
import type { Config } from "../../lib/core/config.js";
import type { Nats } from "../../lib/infra/nats.js";
import { inboxPrefixOf, natsPassword } from "../../lib/infra/nats-auth.js";
import type { Redis } from "../../lib/infra/redis.js";
import { testRedis } from "./servers.js";

/**
 * Every role, but the gateways of content channels the cluster does not deliver (`ingest.channels`, default push:
 * the shard actor routes to no other) left out — a process or three fewer per cluster for most of the suite.
 */
function defaultRoles(overrides: Record<string, unknown> = {}): readonly ProcessSpec[] {
  const channels = (overrides.ingest as { channels?: string[] } | undefined)?.channels ?? ["push"];
  const unused: Record<string, string> = { "ws-gateway": "inapp", "gateway-email": "email", "gateway-sms": "sms" };
  // The webhook gateway only where a test configures endpoints.
  return ROLES.filter((r) => (r === "gateway-webhook" ? overrides.endpoints !== undefined : !(r in unused) || channels.includes(unused[r])));
}

/** `NFX_TEST_NATS_NODES` (e.g. 3, set by `npm run test:cluster`): the suites run on a nats-server cluster of that many nodes with replicated streams. */
export function natsNodesOfEnv(): number {
  const n = Number(process.env.NFX_TEST_NATS_NODES ?? 1);
  if (!Number.isInteger(n) || n < 1 || n > 5) throw new Error(`NFX_TEST_NATS_NODES: must be an integer 1-5, got ${process.env.NFX_TEST_NATS_NODES}`);
  return n;
}

/**
 * `NFX_TEST_PROCESSES=each` (set by `npm run test:cluster`): every role in a process of its own, as `nfx up` runs them.
 * Otherwise the default roles share one process but those a test names in `own`: starting a role process costs about
 * a CPU-second of module loading, eleven per cluster, and the suite starts fifty clusters.
 */
export function eachRoleItsOwnProcess(): boolean {
  const v = process.env.NFX_TEST_PROCESSES ?? "shared";
  if (v !== "each" && v !== "shared") throw new Error(`NFX_TEST_PROCESSES: must be "each" or "shared", got ${v}`);
  return v === "each";
}

/**
 * Starts the cluster with the sandboxes on free ports (on a nats-server cluster with NFX_TEST_NATS_NODES, on a Redis Cluster with
 * NFX_TEST_REDIS=cluster, or as `o` says); role output is kept and printed only if the test fails. Explicit `roles` get a
 * process each; the default roles share one but those in `own` (the ones a test kills, stops or inspects), unless
 * {@link eachRoleItsOwnProcess}.
 */
export async function startTestCluster(
  t: Test,
  o: { roles?: readonly ProcessSpec[]; own?: readonly Role[] | "all"; overrides?: Record<string, unknown>; natsNodes?: number; redis?: "single" | "cluster" } = {},
): Promise<LocalCluster> {
  const dir = mkdtempSync(join(tmpdir(), "nfx-cluster-"));
  const lines: string[] = [];
  // NFX_TEST_ROLE_LOGS=<dir>: every role line also goes to <dir>/<role>.log, as it comes (for a run too long to read from its end).
  const logDir = process.env.NFX_TEST_ROLE_LOGS;
  if (logDir) mkdirSync(logDir, { recursive: true });
  // Written as they come but not synchronously: the sandboxes answer from this process, and a blocking write would stall them.
  const logFiles = new Map<string, WriteStream>();
  const logFile = (role: string): WriteStream => logFiles.get(role) ?? logFiles.set(role, createWriteStream(join(logDir!, `${role}.log`), { flags: "a" })).get(role)!;
  const cluster = await startLocalCluster({
    dataDir: dir, natsPort: 0, redisPort: 0, httpPort: 0, persist: false, natsNodes: o.natsNodes ?? natsNodesOfEnv(), redis: o.redis ?? testRedis(),
    sandbox: {}, roles: o.roles ?? defaultRoles(o.overrides),
    together: o.roles || o.own === "all" || eachRoleItsOwnProcess() ? [] : defaultRoles(o.overrides).filter((r): r is Role => !(o.own ?? []).includes(r as Role)),
    // Retries back off from 100 ms rather than 1 s so retry paths finish within a test.
    overrides: mergeDeep({ log: { level: "warn" }, gateways: { retry: { baseMs: 100, maxMs: 2000 } } }, o.overrides ?? {}),
    onLine: (role, line) => {
      lines.push(`[${role}] ${line}`);
      if (logDir) logFile(role).write(`${line}\n`);
    },
  }).catch((err: unknown) => {
    // A role that failed to start says why in its output.
    console.error(lines.slice(-100).join("\n"));
    rmSync(dir, { recursive: true, force: true });
    throw err;
  });
  t.teardown(async () => {
    await cluster.stop();
    await Promise.all([...logFiles.values()].map((f) => new Promise((r) => f.end(r))));
    if (!t.passing()) console.error(lines.slice(-200).join("\n"));
    rmSync(dir, { recursive: true, force: true });
  });
  return cluster;
}

/** Polls `fn` every 100 ms until it returns true or `ms` pass (a throw counts as false); resolves with the last result. */
export async function eventually(fn: () => Promise<boolean> | boolean, ms = 20_000): Promise<boolean> {
  const until = Date.now() + ms;
  for (;;) {
    if (await Promise.resolve().then(fn).catch(() => false)) return true;
    if (Date.now() > until) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** NATS and Redis clients for a test, closed when it ends. Logs go to stderr at warn level. */
export async function clientsFor(t: Test, cfg: Config): Promise<{ nats: Nats; redis: Redis }> {
  const c = await openClients(cfg, "test");
  t.teardown(c.close);
  return c;
}

/**
 * A producer's NATS connection to `cluster` (account PRODUCERS, docs/security.md): user `name`
 * from `nats.producers`, its derived password and its own inbox prefix; closed when `t` ends.
 */
export async function producerFor(t: Test, cluster: LocalCluster, name = "producer"): Promise<NatsConnection> {
  const nc = await connect({ servers: cluster.nats.url, user: name, pass: natsPassword(cluster.cfg.nats.secret, name), inboxPrefix: inboxPrefixOf({ producer: name }) });
  t.teardown(() => nc.close());
  return nc;
}
