// bench:fan-slope — the shard actor's memory per recipient held: bench:fan with one campaign at two sizes, each in its own process, and the slope of the shard's peak RSS between them.
import { spawn } from "node:child_process";
import { constants } from "node:os";

import { arg, passSignals } from "./harness.js";
import { report } from "./report.js";

/** What this bench reads from each bench:fan run's JSON line. */
interface FanRun {
  recipients: number;
  shard_growth_bytes: number;
  shard_rss_before_mb: number;
  sends_per_s: number;
  lost: number;
  dup: number;
  cpu_seconds_during_campaign: { shard: number };
}

const SIZES = [arg("small", 200_000), arg("large", 1_000_000)] as const;
if (!SIZES.every((n) => Number.isInteger(n) && n >= 1000) || SIZES[0] >= SIZES[1]) throw new Error(`--small and --large: integers of at least 1000, small below large; got ${SIZES.join(", ")}`);
const FAN = new URL("./fan.js", import.meta.url).pathname;

/** The bench:fan run now going: SIGINT and SIGTERM are passed on to it, so it stops every process it started itself. */
let current: ReturnType<typeof spawn> | null = null;
const signals = passSignals(() => current);

/**
 * Runs bench:fan with one campaign over `users` users in a process of its own (its own deadline, BENCH_DEADLINE_MIN);
 * resolves its JSON line. Rejects, naming the run, if it fails or prints no JSON.
 */
function fanRun(users: number): Promise<FanRun> {
  const child = spawn(process.execPath, [FAN, "--users", String(users), "--campaigns", "1"], { stdio: ["ignore", "pipe", "inherit"] });
  current = child;
  let out = "";
  child.stdout.on("data", (b: Buffer) => (out += b.toString()));
  return new Promise((resolve, reject) =>
    child.once("exit", (code, sig) => {
      current = null;
      const sigIn = signals.received();
      if (sigIn) process.exit(128 + constants.signals[sigIn]);
      const last = out.trim().split("\n").pop() ?? "";
      if (code !== 0) return reject(new Error(`bench:fan --users ${users} --campaigns 1 ended with ${code ?? sig}`));
      try {
        resolve(JSON.parse(last) as FanRun);
      } catch {
        reject(new Error(`bench:fan --users ${users} printed no JSON line last (got: ${last.slice(0, 200)})`));
      }
    }),
  );
}

const runs: FanRun[] = [];
for (const users of SIZES) runs.push(await fanRun(users));
const [a, b] = runs;
const slope = (b.shard_growth_bytes - a.shard_growth_bytes) / (b.recipients - a.recipients);
report("fan-slope", {
  bench: "fan-slope",
  users: SIZES,
  recipients: runs.map((r) => r.recipients),
  shard_rss_before_mb: runs.map((r) => r.shard_rss_before_mb),
  shard_growth_mb: runs.map((r) => Number((r.shard_growth_bytes / 1048576).toFixed(1))),
  slope_bytes_per_recipient: Math.round(slope),
  target_bytes_per_recipient: 64,
  sends_per_s: runs.map((r) => r.sends_per_s),
  shard_cpu_seconds: runs.map((r) => r.cpu_seconds_during_campaign.shard),
  lost: a.lost + b.lost,
  dup: a.dup + b.dup,
});
