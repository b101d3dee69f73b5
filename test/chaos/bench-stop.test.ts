// Benchmarks run to their end and leave nothing behind: bench:fan run whole (small), interrupted with SIGINT mid-run, and stopped by its deadline, and bench:fan-slope (bench:fan runs of its own) interrupted, exit with their code and every process they started is gone.
import "../helpers/child-env.js";

import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import t from "tap";

const FAN = fileURLToPath(new URL("../../bench/fan.js", import.meta.url));
/** bench:fan over `users` users, as {@link runBench} takes it. */
const fanOf = (users: number): string[] => [FAN, "--users", String(users)];
const FAN_SLOPE = fileURLToPath(new URL("../../bench/fan-slope.js", import.meta.url));

/** pid -> [parent pid, command name] of every live (not zombie) process, read from /proc. */
function processTable(): Map<number, [number, string]> {
  const out = new Map<number, [number, string]>();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const close = stat.lastIndexOf(")");
      const [state, ppid] = stat.slice(close + 2).split(" ");
      if (state !== "Z") out.set(Number(d), [Number(ppid), stat.slice(stat.indexOf("(") + 1, close)]);
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

/** Every live descendant of `root`: pid -> command name. */
function descendants(root: number): Map<number, string> {
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

/**
 * Runs the bench script and arguments `args` (e.g. {@link fanOf}) with `env`; once nats-server, redis-server and the roles are up
 * (and it is seeding), calls `interrupt` (if any). Resolves with its exit code, its stderr, and which of the processes
 * seen then are still alive.
 */
async function runBench(args: readonly string[], env: Record<string, string>, interrupt?: (pid: number) => void): Promise<{ code: number | null; stdout: string; stderr: string; seen: Map<number, string>; left: string[] }> {
  const p = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  p.stdout.on("data", (b: Buffer) => (stdout += b.toString()));
  p.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
  const exited = new Promise<number | null>((r) => p.once("exit", (c) => r(c)));
  let seen = new Map<number, string>();
  const until = Date.now() + 60_000;
  // Up: both servers and the three roles (ingest, campaign, shard) running as its descendants, and seeding under way.
  for (;;) {
    seen = descendants(p.pid!);
    const names = [...seen.values()];
    if (names.includes("nats-server") && names.includes("redis-server") && names.filter((n) => n === "node").length >= 3 && stderr.includes("seeding")) break;
    if (p.exitCode !== null || Date.now() > until) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  interrupt?.(p.pid!);
  // The 60 s cap is cleared once the bench exits: a pending timer would hold the test process (and npm test) up to a minute.
  let cap: NodeJS.Timeout | undefined;
  const code = await Promise.race([exited, new Promise<null>((r) => (cap = setTimeout(() => r(null), 60_000)))]);
  clearTimeout(cap);
  if (p.exitCode === null) p.kill("SIGKILL");
  // Gone within 10 s of its exit (a process may take a moment to be reaped).
  let alive: [number, string][] = [];
  for (const until2 = Date.now() + 10_000; Date.now() < until2; await new Promise((r) => setTimeout(r, 250))) {
    const live = processTable();
    alive = [...seen].filter(([pid, name]) => live.get(pid)?.[1] === name);
    if (alive.length === 0) break;
  }
  // What is still there is the failure; it is stopped so the suite leaves nothing behind.
  for (const [pid] of alive) process.kill(pid, "SIGKILL");
  return { code, stdout, stderr, seen, left: alive.map(([pid, name]) => `${name} (${pid})`) };
}

t.test("bench:fan run to its end (small): exits 0, its JSON line last with every send once, every process it started is gone", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "nfx-bench-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const r = await runBench([...fanOf(3_000), "--campaigns", "1"], { BENCH_RESULTS_DIR: dir });
  t.equal(r.code, 0, `exit code 0 (stderr: ${r.stderr.slice(-600)})`);
  const last = r.stdout.trim().split("\n").at(-1) ?? "";
  const out = JSON.parse(last) as { bench: string; sends: number; expected_sends: number; lost: number; dup: number };
  t.equal(out.bench, "fan", "the last line is bench:fan's JSON");
  t.ok(out.expected_sends > 1_000, `the campaign expected sends (${out.expected_sends})`);
  t.equal(out.sends, out.expected_sends, "every expected send reached its channel stream");
  t.equal(out.lost, 0, "lost 0");
  t.equal(out.dup, 0, "dup 0");
  t.same(JSON.parse(readFileSync(join(dir, "fan.json"), "utf8")), out, "the same JSON written under BENCH_RESULTS_DIR");
  t.same(r.left, [], "none of its processes is left");
});

t.test("bench:fan interrupted with SIGINT while seeding: exits 130, every process it started is gone", async (t) => {
  const r = await runBench(fanOf(400_000), {}, (pid) => process.kill(pid, "SIGINT"));
  const names = [...r.seen.values()];
  t.ok(names.includes("nats-server") && names.includes("redis-server"), `it had started nats-server and redis-server (${names.join(", ")})`);
  t.equal(r.code, 130, `exit code 130 (stderr: ${r.stderr.slice(-400)})`);
  t.match(r.stderr, /SIGINT; stopping every process it started/, "says why it stopped");
  t.same(r.left, [], "none of its processes is left");
});

t.test("bench:fan at its deadline: exits 2 naming the deadline, every process it started is gone", async (t) => {
  // 0.25 min: the cluster is up and a 2M-user seeding is under way when it ends.
  const r = await runBench(fanOf(2_000_000), { BENCH_DEADLINE_MIN: "0.25" });
  t.equal(r.code, 2, `exit code 2 (stderr: ${r.stderr.slice(-400)})`);
  t.match(r.stderr, /deadline of 0\.25 min reached/, "names the deadline");
  t.same(r.left, [], "none of its processes is left");
});

t.test("bench:fan-slope interrupted with SIGINT during its first bench:fan run: exits 130, every process started under it is gone", async (t) => {
  const r = await runBench([FAN_SLOPE, "--small", "400000", "--large", "800000"], {}, (pid) => process.kill(pid, "SIGINT"));
  const names = [...r.seen.values()];
  t.ok(names.includes("nats-server") && names.includes("redis-server"), `its bench:fan run had started nats-server and redis-server (${names.join(", ")})`);
  t.equal(r.code, 130, `exit code 130 (stderr: ${r.stderr.slice(-400)})`);
  t.match(r.stderr, /SIGINT; stopping every process it started/, "the run it passed SIGINT on to says why it stopped");
  t.same(r.left, [], "none of the processes is left");
});
