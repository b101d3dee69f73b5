// What the benchmarks share: a throw-away local cluster with clients, and a count of recipients decided as receipts are published.
import { type ChildProcess, spawn } from "node:child_process";
import { appendFileSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { constants, tmpdir } from "node:os";
import { join } from "node:path";

import { openClients } from "../cmd/cli-context.js";
import { type LocalCluster, mergeDeep, startLocalCluster } from "../cmd/local-cluster.js";
import type { ProcessSpec } from "../cmd/roles.js";
import type { CampaignStatus } from "../lib/campaign/campaigns.js";
import { decode } from "../lib/core/codec.js";
import { API, receiptAll } from "../lib/core/subjects.js";
import type { ReceiptBatch } from "../lib/core/types.js";
import { writeUsers } from "../lib/directory/directory.js";
import { syntheticUser } from "../lib/directory/users.js";
import type { Nats } from "../lib/infra/nats.js";
import type { Redis } from "../lib/infra/redis.js";
import { callApi } from "../lib/intake/api-client.js";

export interface BenchCluster {
  cluster: LocalCluster;
  nats: Nats;
  redis: Redis;
  /** Closes the clients, stops the cluster and removes its data. */
  close(): Promise<void>;
}

/** Processes a benchmark started itself (load generators, a sandbox process): killed when it ends, however it ends. */
const adopted = new Set<ChildProcess>();
process.once("exit", () => {
  for (const p of adopted) p.kill("SIGKILL");
});

/** Registers `p`, a process the benchmark started itself, to be SIGKILLed when the benchmark ends (normally, failed, interrupted or at its deadline). */
export function adopt<P extends ChildProcess>(p: P): P {
  adopted.add(p);
  p.once("exit", () => adopted.delete(p));
  return p;
}

/**
 * Makes sure this benchmark runs under node `flags`: a benchmark that hosts a role in its own process (bench:gateways
 * runs each gateway beside the bare SDK loop) takes that role's flags, so both of its runs get them alike. With the
 * flags already there, resolves at once. Otherwise runs this script again under them with the same arguments, passes
 * SIGINT and SIGTERM on to it, and exits with its exit code (never resolves); the child keeps its own deadline.
 */
export async function underNodeFlags(flags: readonly string[]): Promise<void> {
  if (flags.every((f) => process.execArgv.includes(f))) return;
  const child = spawn(process.execPath, [...flags, ...process.execArgv, ...process.argv.slice(1)], { stdio: "inherit" });
  passSignals(() => child);
  const code = await new Promise<number>((r) => child.once("exit", (c, sig) => r(c ?? 128 + (sig ? constants.signals[sig] : 0))));
  process.exit(code);
}

/**
 * For a benchmark that runs another in a child process: passes SIGINT and SIGTERM on to the child `current()` returns
 * (it then stops every process it started itself); with none running, exits at once with 128 + the signal's number.
 * `received()` names the signal that came, if any.
 */
export function passSignals(current: () => ChildProcess | null): { received(): NodeJS.Signals | null } {
  let got: NodeJS.Signals | null = null;
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.on(sig, () => {
      got = sig;
      const c = current();
      if (c) c.kill(sig);
      else process.exit(128 + constants.signals[sig]);
    });
  }
  return { received: () => got };
}

/** The number after `--<name>` on the command line, else `dflt`. */
export const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};

/** A benchmark's whole run ends by this deadline (minutes; `BENCH_DEADLINE_MIN`, default 30), whatever it waits for. Not `NFX_…`: those are config. */
export const BENCH_DEADLINE_MIN = Number(process.env.BENCH_DEADLINE_MIN ?? 30);

/** Options of {@link guardBench}. */
export interface BenchGuardOptions {
  /** Minutes until the benchmark is stopped (default {@link BENCH_DEADLINE_MIN}). */
  deadlineMin?: number;
  /** Called first when the benchmark is ended from outside (signal, failure, deadline): drop its own clients. */
  onEnd?: () => void;
}

/**
 * Makes sure a benchmark leaves nothing running: on SIGINT, SIGTERM or SIGHUP
 * (exit 130), on an uncaught failure (exit 1) and at {@link BENCH_DEADLINE_MIN}
 * (exit 2) it runs `close` (given 20 s), says why on stderr, and exits; the
 * servers it started are killed on exit in any case (lib/infra/launch.ts), role
 * processes stop when their parent goes, and processes it {@link adopt}ed are killed. `done()` disarms it once the benchmark closed on its own.
 */
export function guardBench(name: string, close: () => Promise<void>, o: BenchGuardOptions = {}): { done(): void } {
  const deadlineMin = o.deadlineMin ?? BENCH_DEADLINE_MIN;
  let ending = false;
  const end = (why: string, code: number): void => {
    if (ending) return;
    ending = true;
    console.error(`bench:${name}: ${why}; stopping every process it started`);
    o.onEnd?.();
    for (const p of adopted) p.kill("SIGKILL");
    const hard = setTimeout(() => process.exit(code), 20_000);
    hard.unref();
    void close().catch((err) => console.error(`bench:${name}: close failed`, err)).finally(() => process.exit(code));
  };
  const onSignal = (sig: NodeJS.Signals): void => end(sig, 130);
  const onFailure = (err: unknown): void => (console.error(err), end("failed", 1));
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(sig, onSignal);
  process.on("uncaughtException", onFailure);
  process.on("unhandledRejection", onFailure);
  const deadline = setTimeout(() => end(`deadline of ${deadlineMin} min reached`, 2), deadlineMin * 60_000);
  deadline.unref();
  return {
    done() {
      clearTimeout(deadline);
      for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.off(sig, onSignal);
      process.off("uncaughtException", onFailure);
      process.off("unhandledRejection", onFailure);
    },
  };
}

/**
 * Polls `cond` every `pollMs` until it holds; throws after `timeoutMs` with a
 * message naming what was awaited and where it stood (`what()`), never waits forever.
 */
export async function waitUntil(what: () => string, cond: () => boolean | Promise<boolean>, timeoutMs: number, pollMs = 20): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > until) throw new Error(`gave up after ${Math.round(timeoutMs / 1000)} s waiting for ${what()}`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/**
 * Starts a local cluster of `roles` in a temporary directory (with the sandboxes when `sandbox`), logging at warn, with
 * `overrides` on the config, and opens clients. The cluster is guarded ({@link guardBench}) until `close()`.
 */
export async function startBenchCluster(name: string, roles: readonly ProcessSpec[], sandbox: boolean, overrides: Record<string, unknown> = {}, guard: BenchGuardOptions = {}): Promise<BenchCluster> {
  const dir = mkdtempSync(join(tmpdir(), `nfx-bench-${name}-`));
  let clients: Awaited<ReturnType<typeof openClients>> | null = null;
  let closing: Promise<void> | null = null;
  let starting: Promise<LocalCluster> | null = null;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      await clients?.close().catch(() => undefined);
      // Interrupted while the cluster was starting: it is stopped once it is up (a failed start stopped itself).
      await (await starting?.catch(() => null))?.stop();
      rmSync(dir, { recursive: true, force: true });
    })());
  const guarded = guardBench(name, close, guard);
  const roleLogs = process.env.BENCH_ROLE_LOGS;
  if (roleLogs) mkdirSync(roleLogs, { recursive: true });
  starting = startLocalCluster({
    dataDir: dir, natsPort: 0, redisPort: 0, httpPort: 0, persist: false,
    sandbox: sandbox ? { apns: 0, fcm: 0, control: 0 } : null, roles, overrides: mergeDeep({ log: { level: "warn" } }, overrides),
    // BENCH_ROLE_LOGS=<dir>: every role's output (warnings and errors) goes to <dir>/<role>.log.
    ...(roleLogs ? { onLine: (role: string, line: string) => appendFileSync(join(roleLogs, `${role}.log`), `${line}\n`) } : {}),
  });
  const cluster = await starting;
  clients = await openClients(cluster.cfg, "bench");
  return {
    cluster, nats: clients.nats, redis: clients.redis,
    async close() {
      await close();
      guarded.done();
    },
  };
}

/**
 * Writes `n` synthetic users (lib/directory/users.ts, active as of `now`) to the directory, 2,000 per call, eight
 * calls in flight. Returns each user's last activity, for {@link membersAsOf}.
 */
export async function seedSyntheticUsers(redis: Redis, shards: number, n: number, now = Date.now()): Promise<Float64Array> {
  const lastActive = new Float64Array(n);
  const seeding: Promise<void>[] = [];
  for (let i = 0; i < n; i += 2000) {
    const us = Array.from({ length: Math.min(2000, n - i) }, (_, k) => syntheticUser(i + k, now));
    us.forEach((u, k) => (lastActive[i + k] = u.lastActive ?? 0));
    seeding.push(writeUsers(redis, shards, us));
    if (seeding.length >= 8) await seeding.shift();
  }
  await Promise.all(seeding);
  return lastActive;
}

/**
 * Waits (60 s at most) for campaign `id` to be recorded and returns its creation time, the time its segment is
 * evaluated at: members counted before it (seeding a million users takes minutes) would include users a 30-day
 * window has since let go, and a benchmark waiting for them would wait forever.
 */
export async function campaignCreatedAt(n: Nats, id: string): Promise<number> {
  let at = 0;
  const status = (): Promise<CampaignStatus | null> => callApi<CampaignStatus>(n.nc, API.campaign, { id, action: "status" }).catch(() => null);
  await waitUntil(() => `campaign ${id} to be recorded`, async () => (at = (await status())?.createdAt ?? 0) > 0, 60_000, 100);
  return at;
}

/** Indexes of the users (by {@link seedSyntheticUsers}' `lastActive`) active within `days` of `asOf`: an "active_<days>d" segment's members. */
export function membersAsOf(lastActive: Float64Array, asOf: number, days: number): number[] {
  const since = asOf - days * 86_400_000;
  const out: number[] = [];
  for (let i = 0; i < lastActive.length; i++) if (lastActive[i] >= since) out.push(i);
  return out;
}

/**
 * Counts recipients decided by shard actors from the receipts as they are
 * published (core NATS sees every JetStream publish; a replayed batch is
 * counted once by its message id). Shard actors do not ack chunks, so this is
 * how a benchmark sees that the fan-out is done.
 */
export function countDecided(n: Nats): { readonly decided: number; stop(): void } {
  let decided = 0;
  const seen = new Set<string>();
  const sub = n.nc.subscribe(receiptAll, {
    callback: (_e, m) => {
      const mid = m.headers?.get("Nats-Msg-Id");
      if (!mid?.startsWith("dec:") || seen.has(mid)) return;
      seen.add(mid);
      decided += decode<ReceiptBatch>(m.data).decided ?? 0;
    },
  });
  return {
    get decided() {
      return decided;
    },
    stop: () => sub.unsubscribe(),
  };
}

/**
 * redis-server's command statistics so far, from one `INFO commandstats`: calls and microseconds per command (a script
 * call counts as evalsha, and each command it ran under its own name too).
 */
export interface RedisCommandStats {
  calls: Map<string, number>;
  usec: Map<string, number>;
}

export async function redisCommandStats(r: Redis): Promise<RedisCommandStats> {
  const out: RedisCommandStats = { calls: new Map(), usec: new Map() };
  for (const m of (await r.info("commandstats")).matchAll(/cmdstat_([^:]+):calls=(\d+),usec=(\d+)/g)) {
    out.calls.set(m[1], Number(m[2]));
    out.usec.set(m[1], Number(m[3]));
  }
  return out;
}

/** Adds to `into` (by default empty) how much each command's counts grew from `a` to `b`; returns `into`. */
export function statsGrowth(a: RedisCommandStats, b: RedisCommandStats, into: RedisCommandStats = { calls: new Map(), usec: new Map() }): RedisCommandStats {
  for (const k of ["calls", "usec"] as const) for (const [c, v] of b[k]) into[k].set(c, (into[k].get(c) ?? 0) + v - (a[k].get(c) ?? 0));
  return into;
}

/** Bytes redis-server has read from its clients so far (INFO stats `total_net_input_bytes`). */
export const redisBytesIn = async (r: Redis): Promise<number> => Number(/total_net_input_bytes:(\d+)/.exec(await r.info("stats"))![1]);

/** Per item (`n` items: deliveries, sends) of each command's count in `m` (calls or µs) that is at least 0.01 per item, largest first. */
export const perItem = (m: Map<string, number>, n: number): Record<string, number> =>
  Object.fromEntries([...m].map(([k, v]) => [k, Number((v / n).toFixed(2))] as const).filter(([, v]) => v >= 0.01).sort((x, y) => y[1] - x[1]));
