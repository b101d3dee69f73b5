// The repository's own TypeScript sources, read as text by tests that check the code's shape (layout, scripts).
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root (tests run from dist/test/…, the sources sit beside dist/). */
export const REPO_ROOT = fileURLToPath(new URL("../../..", import.meta.url));

/** Every `.ts` file below `dir` (a path relative to the repository root), as repository-relative paths. */
export function sourcesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(REPO_ROOT, dir))) {
    const rel = join(dir, name);
    if (statSync(join(REPO_ROOT, rel)).isDirectory()) out.push(...sourcesUnder(rel));
    else if (name.endsWith(".ts")) out.push(rel);
  }
  return out;
}
