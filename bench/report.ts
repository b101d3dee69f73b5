// Shared by every benchmark: writes the result under bench/results/<name>.json and prints it as the last line.
import { mkdirSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

/**
 * Writes `result` to bench/results/<name>.json (or `$BENCH_RESULTS_DIR/<name>.json`, so a test's small run leaves the
 * recorded figures alone) and prints it as one JSON line (the benchmark's last line).
 */
export function report(name: string, result: Record<string, unknown>): void {
  const dir = process.env.BENCH_RESULTS_DIR;
  const out = dir ? pathToFileURL(`${dir.replace(/\/+$/, "")}/`) : new URL("../../bench/results/", import.meta.url);
  mkdirSync(out, { recursive: true });
  writeFileSync(new URL(`${name}.json`, out), JSON.stringify(result) + "\n");
  console.log(JSON.stringify(result));
}
