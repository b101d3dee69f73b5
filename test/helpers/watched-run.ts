// Runs a benchmark or a CLI command as a user would (its own process), watches every process it starts, and reports which of them outlived it.
import { spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** The compiled benchmark script `name` (e.g. "fan" for bench/fan.ts). */
export const benchScript = (name: string): string => fileURLToPath(new URL(`../../bench/${name}.js`, import.meta.url));

/** Each live process's pid with what `read(pid)` returns for it (processes that end meanwhile are skipped). */
function* eachProcess<T>(read: (pid: string) => T): Generator<[number, T]> {
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    let v: T;
    try {
      v = read(d);
    } catch {
      continue; // gone meanwhile
    }
    yield [Number(d), v];
  }
}

/** pid -> [parent pid, command name] of every live (not zombie) process, read from /proc. */
function processTable(): Map<number, [number, string]> {
  const out = new Map<number, [number, string]>();
  for (const [pid, stat] of eachProcess((d) => readFileSync(`/proc/${d}/stat`, "utf8"))) {
    const close = stat.lastIndexOf(")");
    const [state, ppid] = stat.slice(close + 2).split(" ");
    if (state !== "Z") out.set(pid, [Number(ppid), stat.slice(stat.indexOf("(") + 1, close)]);
  }
  return out;
}

/** Every live descendant of `root`: pid -> command name. */
export function descendants(root: number): Map<number, string> {
  const table = processTable();
  const out = new Map<number, string>();
  let frontier = [root];
  while (frontier.length) {
    const next: number[] = [];
    for (const [pid, [ppid, name]] of table) {
      if (!frontier.includes(ppid) || out.has(pid)) continue;
      out.set(pid, name);
      next.push(pid);
    }
    frontier = next;
  }
  return out;
}

/** The live processes started with `NFX_CONFIG=configFile` (the role processes of one local cluster): pid -> argv. */
export function withConfigFile(configFile: string): Map<number, string[]> {
  const out = new Map<number, string[]>();
  const env = `NFX_CONFIG=${configFile}`;
  const read = (d: string): string[] | null =>
    readFileSync(`/proc/${d}/environ`, "utf8").split("\0").includes(env) ? readFileSync(`/proc/${d}/cmdline`, "utf8").split("\0").filter(Boolean) : null;
  for (const [pid, argv] of eachProcess(read)) if (argv) out.set(pid, argv);
  return out;
}

/** What {@link runWatched} saw. */
export interface BenchRun {
  /** Exit code; null if it was still running at `capMs` (it is then SIGKILLed). */
  code: number | null;
  stdout: string;
  stderr: string;
  /** Every process seen among its descendants while it ran: pid -> command name. */
  seen: Map<number, string>;
  /** Those of `seen` still alive `goneWithinMs` after it exited (then SIGKILLed, so nothing is left either way): "name (pid)". */
  left: string[];
}

/** Up, as {@link runWatched} waits for it before an interrupt: the names of the processes seen so far, and the output so far. */
type UpTest = (names: readonly string[], stdout: string, stderr: string) => boolean;
/** A benchmark is up once nats-server, redis-server and three node roles run and it printed "seeding" (to stderr). */
const benchUp: UpTest = (names, _out, err) => names.includes("nats-server") && names.includes("redis-server") && names.filter((n) => n === "node").length >= 3 && err.includes("seeding");

/**
 * Runs node with `args` (a bench script, or the CLI, and its arguments) and `env`, watching its descendants every
 * 200 ms. With `interrupt`, calls it once `upWhen` holds (default: a benchmark's servers and roles are up and it is
 * seeding), or after 60 s. Resolves once it exits, or at `capMs` (default 60 s after the interrupt, else 300 s).
 */
export async function runWatched(args: readonly string[], env: Record<string, string>, o: { interrupt?: (pid: number) => void; upWhen?: UpTest; capMs?: number; goneWithinMs?: number } = {}): Promise<BenchRun> {
  const p = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  p.stdout.on("data", (b: Buffer) => (stdout += b.toString()));
  p.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
  const exited = new Promise<number | null>((r) => p.once("exit", (c) => r(c)));
  const seen = new Map<number, string>();
  const look = (): string[] => {
    for (const [pid, name] of descendants(p.pid!)) seen.set(pid, name);
    return [...seen.values()];
  };
  if (o.interrupt) {
    const until = Date.now() + 60_000;
    for (;;) {
      const names = look();
      if ((o.upWhen ?? benchUp)(names, stdout, stderr)) break;
      if (p.exitCode !== null || Date.now() > until) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    o.interrupt(p.pid!);
  }
  // Watched until it exits or the cap; the timers are cleared once it exits (a pending one would hold the test process up).
  const cap = Date.now() + (o.capMs ?? (o.interrupt ? 60_000 : 300_000));
  let code: number | null = null;
  for (;;) {
    look();
    let tick: NodeJS.Timeout | undefined;
    const done = await Promise.race([exited.then((c) => ({ c })), new Promise<null>((r) => (tick = setTimeout(() => r(null), 200)))]);
    clearTimeout(tick);
    if (done) {
      code = done.c;
      break;
    }
    if (Date.now() > cap) break;
  }
  if (p.exitCode === null) p.kill("SIGKILL");
  // Gone within `goneWithinMs` (default 10 s) of its exit (a process may take a moment to be reaped).
  let alive: [number, string][] = [];
  for (const until2 = Date.now() + (o.goneWithinMs ?? 10_000); Date.now() < until2; await new Promise((r) => setTimeout(r, 250))) {
    const live = processTable();
    alive = [...seen].filter(([pid, name]) => live.get(pid)?.[1] === name);
    if (alive.length === 0) break;
  }
  // What is still there is the failure; it is stopped so the suite leaves nothing behind.
  for (const [pid] of alive) process.kill(pid, "SIGKILL");
  return { code, stdout, stderr, seen, left: alive.map(([pid, name]) => `${name} (${pid})`) };
}

/** The JSON object on the last line of a run's standard output; throws naming what was there instead. */
export function lastJson(stdout: string): Record<string, unknown> {
  const last = stdout.trim().split("\n").at(-1) ?? "";
  try {
    return JSON.parse(last) as Record<string, unknown>;
  } catch {
    throw new Error(`the last line of the output is not JSON: ${JSON.stringify(last.slice(0, 300))}`);
  }
}
