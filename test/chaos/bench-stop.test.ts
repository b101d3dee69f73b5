// Benchmarks run to their end and leave nothing behind: bench:fan run whole (small), interrupted with SIGINT mid-run, and stopped by its deadline, and bench:fan-slope (bench:fan runs of its own) interrupted, exit with their code and every process they started is gone.
import "../helpers/child-env.js";

import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import t from "tap";

import { benchScript, lastJson, runWatched } from "../helpers/watched-run.js";

const FAN = benchScript("fan");
/** bench:fan over `users` users, as {@link runWatched} takes it. */
const fanOf = (users: number): string[] => [FAN, "--users", String(users)];
const FAN_SLOPE = benchScript("fan-slope");

t.test("bench:fan run to its end (small): exits 0, its JSON line last with every send once, every process it started is gone", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "nfx-bench-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const r = await runWatched([...fanOf(3_000), "--campaigns", "1"], { BENCH_RESULTS_DIR: dir });
  t.equal(r.code, 0, r.code === 0 ? "exit code 0" : `exit code 0 (stderr: ${r.stderr.slice(-600)})`);
  const out = lastJson(r.stdout) as {
    bench: string; sends: number; expected_sends: number; lost: number; dup: number; sends_per_s: number; shard_bytes_per_recipient: number;
    cpu_seconds_during_campaign: Record<string, number>; projection_100m: { sends_per_s_per_core: number };
  };
  t.equal(out.bench, "fan", "the last line is bench:fan's JSON");
  t.ok(out.expected_sends > 1_000, `the campaign expected sends (${out.expected_sends})`);
  t.equal(out.sends, out.expected_sends, "every expected send reached its channel stream");
  t.equal(out.lost, 0, "lost 0");
  t.equal(out.dup, 0, "dup 0");
  t.ok(out.sends_per_s > 0 && out.projection_100m.sends_per_s_per_core > 0, `sends/s and per core reported (${out.sends_per_s}, ${out.projection_100m.sends_per_s_per_core})`);
  t.ok(Number.isFinite(out.cpu_seconds_during_campaign.shard) && "redis-server" in out.cpu_seconds_during_campaign && "nats-server" in out.cpu_seconds_during_campaign, "the CPU split per process reported");
  t.ok(Number.isFinite(out.shard_bytes_per_recipient), `shard_bytes_per_recipient reported (${out.shard_bytes_per_recipient})`);
  t.same(JSON.parse(readFileSync(join(dir, "fan.json"), "utf8")), out, "the same JSON written under BENCH_RESULTS_DIR");
  t.same(r.left, [], "none of its processes is left");
});

t.test("bench:fan interrupted with SIGINT while seeding: exits 130, every process it started is gone", async (t) => {
  const r = await runWatched(fanOf(400_000), {}, { interrupt: (pid) => process.kill(pid, "SIGINT") });
  const names = [...r.seen.values()];
  t.ok(names.includes("nats-server") && names.includes("redis-server"), `it had started nats-server and redis-server (${names.join(", ")})`);
  t.equal(r.code, 130, `exit code 130 (stderr: ${r.stderr.slice(-400)})`);
  t.match(r.stderr, /SIGINT; stopping every process it started/, "says why it stopped");
  t.same(r.left, [], "none of its processes is left");
});

t.test("bench:fan at its deadline: exits 2 naming the deadline, every process it started is gone", async (t) => {
  // 0.25 min: the cluster is up and a 2M-user seeding is under way when it ends.
  const r = await runWatched(fanOf(2_000_000), { BENCH_DEADLINE_MIN: "0.25" }, { capMs: 60_000 });
  t.equal(r.code, 2, `exit code 2 (stderr: ${r.stderr.slice(-400)})`);
  t.match(r.stderr, /deadline of 0\.25 min reached/, "names the deadline");
  t.same(r.left, [], "none of its processes is left");
});

t.test("bench:fan-slope interrupted with SIGINT during its first bench:fan run: exits 130, every process started under it is gone", async (t) => {
  const r = await runWatched([FAN_SLOPE, "--small", "400000", "--large", "800000"], {}, { interrupt: (pid) => process.kill(pid, "SIGINT") });
  const names = [...r.seen.values()];
  t.ok(names.includes("nats-server") && names.includes("redis-server"), `its bench:fan run had started nats-server and redis-server (${names.join(", ")})`);
  t.equal(r.code, 130, `exit code 130 (stderr: ${r.stderr.slice(-400)})`);
  t.match(r.stderr, /SIGINT; stopping every process it started/, "the run it passed SIGINT on to says why it stopped");
  t.same(r.left, [], "none of the processes is left");
});
