// Role start-up: published default secrets are refused with the key to set; NATS and Redis that come up late are waited for; a launcher waits for a role only so long.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { pino } from "pino";
import t, { type Test } from "tap";

import { startLocalCluster } from "../../cmd/local-cluster.js";
import { spawnRoleProcess } from "../../cmd/role-process.js";
import { loadConfig } from "../../lib/core/config.js";
import { createLogger } from "../../lib/core/log.js";
import { freePort, startNatsServer, startRedisServer } from "../../lib/infra/launch.js";
import { connectNats } from "../../lib/infra/nats.js";
import { renderNatsServerConf } from "../../lib/infra/nats-auth.js";
import { freshSecret } from "../../lib/infra/secrets.js";
import { ensureTopology } from "../../lib/infra/topology.js";
import { NFX } from "../helpers/cli.js";
import { descendants } from "../helpers/watched-run.js";

const dir = mkdtempSync(join(tmpdir(), "nfx-startup-"));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** Starts `nfx run router` with `cfg` as its config file; collects its output; killed when the test ends. */
function runRole(t: Test, name: string, cfg: unknown): { p: ChildProcess; out: () => string; exited: Promise<number | null>; ready: Promise<boolean> } {
  const file = join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify(cfg));
  const p = spawn(process.execPath, [NFX, "run", "router"], { env: { ...process.env, NFX_CONFIG: file }, stdio: ["ignore", "pipe", "pipe", "ipc"] });
  let out = "";
  p.stdout!.on("data", (b: Buffer) => void (out += b.toString()));
  p.stderr!.on("data", (b: Buffer) => void (out += b.toString()));
  const exited = new Promise<number | null>((r) => p.once("exit", (code) => r(code)));
  const ready = new Promise<boolean>((r) => {
    p.on("message", (m: { type?: string }) => m?.type === "ready" && r(true));
    p.once("exit", () => r(false));
  });
  t.teardown(() => {
    if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
  });
  return { p, out: () => out, exited, ready };
}

const within = <T>(p: Promise<T>, ms: number, what: string): Promise<T> =>
  Promise.race([p, new Promise<T>((_, rej) => setTimeout(() => rej(new Error(`${what}: not within ${ms} ms`)), ms).unref())]);

const natsSecret = freshSecret();
/** The parts of a role's config file these cases change. */
type RoleConfig = { nats: { secret?: string }; ws: { secret?: string; origins: string[] }; engagement: { secret?: string } } & Record<string, unknown>;
const safe = () => ({ nats: { secret: natsSecret }, ws: { secret: freshSecret(), origins: ["https://app.example"] }, engagement: { secret: freshSecret() }, log: { level: "info" }, metrics: { enabled: false } });

t.test("a role refuses each published default, naming the key to set", async (t) => {
  const nothere = `nats://127.0.0.1:${await freePort()}`;
  const cases: [string, Record<string, unknown>, string][] = [
    ["nats.secret", {}, "nats.secret"],
    ["ws.secret", { ws: { origins: ["https://app.example"] } }, "ws.secret"],
    ["engagement.secret", { engagement: {} }, "engagement.secret"],
    ["ws.origins *", { ws: { origins: ["https://app.example", "*"] } }, "ws.origins"],
  ];
  for (const [name, change, key] of cases) {
    const cfg: RoleConfig = safe();
    if (key === "nats.secret") delete cfg.nats.secret;
    if (key === "ws.secret") delete cfg.ws.secret;
    if (key === "engagement.secret") delete cfg.engagement.secret;
    if (key === "ws.origins") cfg.ws.origins = (change.ws as { origins: string[] }).origins;
    const r = runRole(t, `bad-${key}`, { ...cfg, nats: { ...cfg.nats, servers: [nothere] } });
    const code = await within(r.exited, 20_000, `${name}: exit`);
    t.equal(code, 1, `${name}: the role exits with status 1`);
    t.match(r.out(), "NFX_ERR_INSECURE_DEFAULT", `${name}: with the coded error`);
    t.match(r.out(), `${key}: must be set`, `${name}: naming ${key}`);
    t.notMatch(r.out(), "nats not reachable", `${name}: before connecting to anything`);
  }
});

t.test("a role waits for NATS and Redis that start after it, then becomes ready with fresh secrets", async (t) => {
  const natsPort = await freePort();
  const redisPort = await freePort();
  const cfg = { ...safe(), nats: { secret: natsSecret, servers: [`nats://127.0.0.1:${natsPort}`] }, redis: { url: `redis://127.0.0.1:${redisPort}` } };
  const r = runRole(t, "late", cfg);
  // Nothing listens yet: the role logs its retries and keeps running.
  const until = Date.now() + 15_000;
  while (!/nats not reachable yet/.test(r.out()) && Date.now() < until) await new Promise((res) => setTimeout(res, 100));
  t.match(r.out(), /"retryInMs":250\b.*nats not reachable yet/, "the first NATS retry is logged with its delay");
  await new Promise((res) => setTimeout(res, 1500));
  t.equal(r.p.exitCode, null, "still running while NATS is down");
  const delays = [...r.out().matchAll(/"retryInMs":(\d+)[^\n]*nats not reachable yet/g)].map((m) => Number(m[1]));
  t.ok(delays.length >= 2 && delays[1] > delays[0], `the delay grows (${delays.join(", ")} ms)`);

  const nats = await startNatsServer({ storeDir: join(dir, "nats"), port: natsPort, conf: renderNatsServerConf({ secret: natsSecret, producers: [] }) });
  t.teardown(nats.stop);
  // The operator's `nfx init` (roles may not create streams): the role then finds the topology.
  const admin = await connectNats(loadConfig({ env: {}, overrides: cfg }), createLogger({ level: "warn", redact: true }, pino.destination(2)), "test-init");
  await ensureTopology(admin, loadConfig({ env: {}, overrides: cfg }));
  await admin.nc.close();
  // NATS is up, Redis is not: the role now waits for Redis.
  const until2 = Date.now() + 15_000;
  while (!/redis not reachable yet/.test(r.out()) && Date.now() < until2) await new Promise((res) => setTimeout(res, 100));
  t.match(r.out(), /redis not reachable yet/, "then waits for Redis, logged");
  t.equal(r.p.exitCode, null, "still running while Redis is down");

  const redis = await startRedisServer({ dir: join(dir, "redis"), port: redisPort });
  t.teardown(redis.stop);
  t.equal(await within(r.ready, 30_000, "ready"), true, "the role reports ready once both answer");
  // The IPC "ready" can overtake the log line on its way through stdout: wait for it (bounded).
  const logged = /router ready|"msg":"[^"]*ready/;
  const until3 = Date.now() + 10_000;
  while (!logged.test(r.out()) && Date.now() < until3) await new Promise((res) => setTimeout(res, 100));
  t.match(r.out(), logged, "and logs that it is ready");
});

/** The pids of this test process's descendants. */
const children = (): Set<number> => new Set(descendants(process.pid).keys());

t.test("a launcher waits up.readyTimeoutMs for a role, then kills it and stops what it started, naming the role and why", async (t) => {
  const before = children();
  const deadRedis = `redis://127.0.0.1:${await freePort()}`;
  const started = Date.now();
  const err = await within(
    startLocalCluster({
      dataDir: join(dir, "stuck"), natsPort: 0, redisPort: 0, httpPort: 0, persist: false, sandbox: null, roles: ["router"],
      overrides: { redis: { url: deadRedis }, up: { readyTimeoutMs: 3000 } },
    }).then(async (c) => (await c.stop(), null), (e: Error & { code?: string }) => e),
    30_000, "the launcher's failure",
  );
  t.ok(err, "start-up fails");
  t.equal(err?.code, "NFX_ERR_ROLE_NOT_READY", "with the coded error");
  t.match(err?.message, "role router was not ready within 3000 ms (up.readyTimeoutMs) and was killed", "naming the role and the deadline");
  t.match(err?.message, /its last lines:[^]*redis not reachable yet/, "and what it was waiting for, from its last lines");
  t.ok(Date.now() - started >= 3000, "after the deadline, not before");
  const left = [...children()].filter((pid) => !before.has(pid));
  t.same(left, [], "the role, nats-server and redis-server are gone");
});

t.test("a role that exits before it is ready fails its launcher with its last lines", async (t) => {
  const file = join(dir, "exits.json");
  const cfg: RoleConfig = safe();
  delete cfg.nats.secret;
  writeFileSync(file, JSON.stringify({ ...cfg, nats: { servers: [`nats://127.0.0.1:${await freePort()}`] } }));
  const err = await within(spawnRoleProcess("router", { configFile: file, nice: 0, readyTimeoutMs: 20_000 }).then(() => null, (e: Error & { code?: string }) => e), 30_000, "the failure");
  t.equal(err?.code, "NFX_ERR_ROLE_NOT_READY", "with the coded error");
  t.match(err?.message, "role router exited (1) before it was ready", "naming the role and its exit status");
  t.match(err?.message, /its last lines:[^]*NFX_ERR_INSECURE_DEFAULT/, "and why, from its last lines");
});
