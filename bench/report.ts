// Shared by every benchmark: writes the result under bench/results/<name>.json and prints it as the last line.
import { mkdirSync, writeFileSync } from "node:fs";

/** Writes `result` to bench/results/<name>.json and prints it as one JSON line (the benchmark's last line). */
export function report(name: string, result: Record<string, unknown>): void {
  const out = new URL("../../bench/results/", import.meta.url);
  mkdirSync(out, { recursive: true });
  writeFileSync(new URL(`${name}.json`, out), JSON.stringify(result) + "\n");
  console.log(JSON.stringify(result));
}
