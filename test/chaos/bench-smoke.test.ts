// Every benchmark runs to its end at a small size: exit 0, its JSON line last (and the same JSON in its results file), nothing lost or sent twice, no process left.
import "../helpers/child-env.js";

import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import t from "tap";

import { ownValueAt } from "../../lib/core/own-keys.js";
import { benchScript, lastJson, runWatched } from "../helpers/watched-run.js";

/**
 * Each benchmark with arguments that make it small, whether its JSON counts losses and duplicates, the figures it
 * must report as positive numbers (`figures`) or as numbers (`numbers`: a slope measured at a small size may be
 * anything). A run of one once failed at its end unnoticed (bench:fan, after the webhook stream's consumers changed);
 * bench:fan's own run to its end is in bench-stop.test.ts.
 */
const SMALL: readonly { name: string; args: string[]; reportsLosses?: true; figures?: string[]; numbers?: string[] }[] = [
  { name: "pipeline", reportsLosses: true, args: ["--users", "2000"] },
  { name: "ingest", reportsLosses: true, args: ["--seconds", "2", "--rate", "2000"] },
  { name: "fan-slope", reportsLosses: true, args: ["--small", "2000", "--large", "4000"], numbers: ["slope_bytes_per_recipient"] },
  { name: "shard", args: ["--users", "5000"] },
  { name: "tracker", args: ["--entries", "20000", "--notifications", "10"] },
  { name: "priority", reportsLosses: true, args: ["--users", "20000", "--idle-secs", "3", "--window-secs", "2", "--campaign-secs", "20", "--critical-rate", "5", "--high-rate", "5"] },
  { name: "inbox", args: ["--users", "1000", "--notifications", "3", "--reads", "1000"] },
  { name: "ws", args: ["--gateways", "1", "--connections", "500", "--users", "5000", "--probes", "50"], figures: ["p99_ms", "p99_ms_loaded"], numbers: ["bytes_per_conn"] },
  { name: "webhooks", reportsLosses: true, args: ["--endpoints", "50", "--messages", "3", "--rounds", "1"], figures: ["ratio", "nfx_per_s", "bare_per_s", "gateway_cpu_us_per_delivery"] },
  { name: "gateways", reportsLosses: true, args: ["--rounds", "1", "--sends", "2000"], figures: ["apns.ratio", "fcm.ratio", "email.ratio", "sms.ratio"] },
];

/** Every value under a `lost`, `dup` or `duplicates` key anywhere in `v`, with its path. */
function losses(v: unknown, path = ""): [string, unknown][] {
  if (!v || typeof v !== "object") return [];
  const out: [string, unknown][] = [];
  for (const [k, x] of Object.entries(v)) {
    const p = path ? `${path}.${k}` : k;
    if (k === "lost" || k === "dup" || k === "duplicates") out.push([p, x]);
    else out.push(...losses(x, p));
  }
  return out;
}

/** The value at dotted `path` of `v`. */
const at = (v: unknown, path: string): unknown => ownValueAt(v, path.split("."));

for (const { name, args, reportsLosses, figures, numbers } of SMALL) {
  t.test(`bench:${name} ${args.join(" ")}: exits 0 with its JSON last, nothing lost or twice, nothing left`, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "nfx-bench-"));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const r = await runWatched(["--expose-gc", benchScript(name), ...args], { BENCH_RESULTS_DIR: dir, BENCH_DEADLINE_MIN: "4" }, { capMs: 300_000 });
    t.equal(r.code, 0, r.code === 0 ? "exit code 0" : `exit code 0 (stderr: ${r.stderr.slice(-600)})`);
    if (r.code !== 0) return;
    const out = lastJson(r.stdout);
    t.equal(out.bench, name, "the last line is its JSON");
    t.same(JSON.parse(readFileSync(join(dir, `${name}.json`), "utf8")), out, "the same JSON written under BENCH_RESULTS_DIR");
    const l = losses(out);
    if (reportsLosses) t.ok(l.length > 0, `it reports lost and duplicates (${l.map(([p]) => p).join(", ")})`);
    for (const [p, x] of l) t.equal(x, 0, `${p} is 0`);
    for (const f of figures ?? []) t.ok(typeof at(out, f) === "number" && (at(out, f) as number) > 0, `${f} is a positive number (${String(at(out, f))})`);
    for (const f of numbers ?? []) t.ok(Number.isFinite(at(out, f)), `${f} is a number (${String(at(out, f))})`);
    t.same(r.left, [], "none of its processes is left");
  });
}
