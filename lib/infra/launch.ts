// Starts and stops local nats-server and redis-server processes (used by `nfx up` and by the test harness), and kills whatever children it was given (servers, role processes) with this process.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { appendFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { RuntimeMissing } from "../core/errors.js";
import { REDIS_SERVER_FLAGS } from "./redis.js";


export interface ServerProcess {
  url: string;
  port: number;
  proc: ChildProcess;
  /** Stops the server (SIGTERM, then SIGKILL after 5 s) and resolves when it has exited. */
  stop: () => Promise<void>;
  /** The last 64 KB the server wrote to stderr/stdout, for error messages. */
  output: () => string;
}

const live = new Set<ChildProcess>();
const killLive = (): void => {
  for (const p of live) p.kill("SIGKILL");
};
process.once("exit", killLive);
/** How long another handler of a signal may take to stop things gracefully before this process ends anyway (15 s). */
let signalGraceMs = 15_000;
/** Sets that grace (a test shortens it). */
export const setSignalGraceMs = (ms: number): void => {
  signalGraceMs = ms;
};

// A signal ends a process without its "exit" event: when nothing else handles SIGINT, SIGTERM or SIGHUP (a test runner's
// deadline, Ctrl-C on a benchmark), the servers started here are killed before this process goes, never left behind.
// When another handler is there (a graceful stop), it goes first; but a handler that leaves the exit to others (as
// signal-exit does when it is not alone, in a test runner's child) would leave both waiting for ever, so the process
// ends anyway after the grace (the timer does not keep it alive if it ends sooner).
for (const [sig, n] of [["SIGINT", 2], ["SIGTERM", 15], ["SIGHUP", 1]] as const) {
  process.on(sig, () => {
    const end = (): void => {
      killLive();
      process.exit(128 + n);
    };
    if (process.listenerCount(sig) > 1) setTimeout(end, signalGraceMs).unref();
    else end();
  });
}

/** Throws {@link RuntimeMissing} when `name` is not on PATH. */
export function requireBinary(name: string): void {
  if (spawnSync("sh", ["-c", `command -v ${name}`]).status !== 0) {
    throw new RuntimeMissing(`${name} not found on PATH: run \`npm run bootstrap\` (installs it with apt-get)`);
  }
}

/** Stops a child: SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited (at once if it already has). */
export function stopProcess(p: ChildProcess, graceMs: number): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise<void>((r) => {
    const t = setTimeout(() => p.kill("SIGKILL"), graceMs);
    p.once("exit", () => (clearTimeout(t), r()));
    p.kill("SIGTERM");
  });
}

/**
 * Registers `proc` (a child of this process) to be SIGKILLed if this process exits, or ends on SIGINT, SIGTERM or
 * SIGHUP (after a graceful handler's grace, when one is there), while it still runs: a server, or a role process that
 * would otherwise stop on its own only once it noticed its parent gone (up to its 10 s graceful stop).
 */
export function killedWithThisProcess(proc: ChildProcess): void {
  live.add(proc);
  proc.once("exit", () => live.delete(proc));
}

/**
 * Keeps the last 64 KB a started server wrote and registers it to be
 * SIGKILLed if this process exits first; `stop` sends SIGTERM, then SIGKILL
 * after 5 s, and resolves when it has exited.
 */
export function track(proc: ChildProcess): { output: () => string; stop: () => Promise<void> } {
  let out = "";
  const keep = (b: Buffer): void => {
    out = (out + b.toString()).slice(-65536);
  };
  proc.stdout?.on("data", keep);
  proc.stderr?.on("data", keep);
  killedWithThisProcess(proc);
  return {
    output: () => out,
    stop: () => stopProcess(proc, 5000),
  };
}

/** Resolves once a TCP connection to 127.0.0.1:port succeeds; rejects after `ms`. */
export async function waitForPort(port: number, ms = 10_000): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect(port, "127.0.0.1");
      s.once("connect", () => (s.destroy(), r(true)));
      s.once("error", () => r(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`nothing listening on 127.0.0.1:${port} after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A port free right now on 127.0.0.1, below the OS's ephemeral range (see `freePorts`). */
export async function freePort(): Promise<number> {
  return (await freePorts(1))[0];
}

/** The lowest port the OS hands out for outgoing connections (Linux's `ip_local_port_range`; 32768 where it cannot be read). */
function ephemeralFloor(): number {
  try {
    const low = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 2048 ? low : 32768;
  } catch {
    return 32768;
  }
}

/** Whether 127.0.0.1:`port` can be bound now; the server is left listening (the caller closes it). */
function holdPort(port: number): Promise<net.Server | null> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once("error", () => resolve(null));
    srv.listen(port, "127.0.0.1", () => resolve(srv));
  });
}

/**
 * `n` distinct ports free right now on 127.0.0.1, for servers started a moment later. They are drawn at random from below the
 * OS's ephemeral range, so an outgoing connection made meanwhile (a client of another server) cannot take one before its
 * server binds; all are held open together while chosen, then released.
 */
export async function freePorts(n: number): Promise<number[]> {
  const top = Math.min(ephemeralFloor(), 30_000);
  const servers: net.Server[] = [];
  try {
    for (let tries = 0; servers.length < n; tries++) {
      if (tries > 200 * n) throw new Error(`no ${n} free ports found on 127.0.0.1 between 10000 and ${top}`);
      const srv = await holdPort(10_000 + Math.floor(Math.random() * (top - 10_000)));
      if (srv) servers.push(srv);
    }
    return servers.map((srv) => (srv.address() as net.AddressInfo).port);
  } finally {
    await Promise.all(servers.map((srv) => new Promise<void>((r) => srv.close(() => r()))));
  }
}

/**
 * Starts nats-server with the configuration text `conf` (written beside the
 * store as `<storeDir>.conf`; `nfx nats-conf` renders nfx's, see
 * lib/infra/nats-auth.ts), bound to 127.0.0.1. `port: 0` lets the server choose and
 * reads it from its ports file. Resolves when the port accepts connections;
 * throws with the server's output if it exits first. With `NATS_SERVER_LOG` set,
 * the server's output is also appended to that file (e.g. to collect
 * permission violations across a test run).
 */
export async function startNatsServer(o: { storeDir: string; conf: string; port?: number }): Promise<ServerProcess> {
  requireBinary("nats-server");
  mkdirSync(o.storeDir, { recursive: true });
  const confFile = `${o.storeDir.replace(/\/+$/, "")}.conf`;
  writeFileSync(confFile, o.conf, { mode: 0o600 });
  const portsDir = mkdtempSync(join(tmpdir(), "nfx-ports-"));
  const proc = spawn("nats-server", ["-c", confFile, "-a", "127.0.0.1", "-p", String(o.port || -1), "-sd", o.storeDir, "--ports_file_dir", portsDir], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const t = track(proc);
  const logTo = process.env.NATS_SERVER_LOG;
  if (logTo) for (const s of [proc.stdout, proc.stderr]) s?.on("data", (b: Buffer) => appendFileSync(logTo, b));
  try {
    const until = Date.now() + 15_000;
    let port = 0;
    while (!port) {
      if (proc.exitCode !== null) throw new Error(`nats-server exited with ${proc.exitCode}: ${t.output()}`);
      if (Date.now() > until) throw new Error(`nats-server did not start: ${t.output()}`);
      const f = readdirSync(portsDir).find((n) => n.endsWith(".ports"));
      if (f) {
        try {
          const url = (JSON.parse(readFileSync(join(portsDir, f), "utf8")) as { nats: string[] }).nats[0];
          port = Number(new URL(url).port);
        } catch {
          /* partially written; retry */
        }
      }
      if (!port) await new Promise((r) => setTimeout(r, 25));
    }
    await waitForPort(port);
    return { url: `nats://127.0.0.1:${port}`, port, proc, stop: t.stop, output: t.output };
  } catch (err) {
    await t.stop();
    throw err;
  } finally {
    rmSync(portsDir, { recursive: true, force: true });
  }
}

/**
 * Starts redis-server on 127.0.0.1. `port: 0` picks a free port (retried if
 * another process takes it first). `persist` turns on the append-only file in
 * `dir`; without it nothing is written to disk.
 */
export async function startRedisServer(o: { dir: string; port?: number; persist?: boolean }): Promise<ServerProcess> {
  requireBinary("redis-server");
  mkdirSync(o.dir, { recursive: true });
  for (let attempt = 0; ; attempt++) {
    const port = o.port || (await freePort());
    const args = ["--port", String(port), "--bind", "127.0.0.1", "--dir", o.dir, "--save", "", "--appendonly", o.persist ? "yes" : "no", "--protected-mode", "yes", ...REDIS_SERVER_FLAGS];
    const proc = spawn("redis-server", args, { stdio: ["ignore", "pipe", "pipe"] });
    const t = track(proc);
    try {
      await Promise.race([
        waitForPort(port),
        new Promise((_, rej) => proc.once("exit", (c) => rej(new Error(`redis-server exited with ${c}: ${t.output()}`)))),
      ]);
      return { url: `redis://127.0.0.1:${port}`, port, proc, stop: t.stop, output: t.output };
    } catch (err) {
      await t.stop();
      if (o.port || attempt >= 4) throw err;
    }
  }
}
