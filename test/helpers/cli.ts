// Runs the real `nfx` CLI as a child process, the way a user would, against a given config.
import "./child-env.js";

import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);
/** The built CLI entry point. */
export const NFX = fileURLToPath(new URL("../../cmd/nfx.js", import.meta.url));

/**
 * Returns a function that runs `nfx <args>` with the current environment plus
 * `env` and resolves with its stdout and stderr; a non-zero exit rejects with
 * an error carrying `code`, `stdout` and `stderr`.
 */
export function nfxRunner(env: Record<string, string>): (...args: string[]) => Promise<{ stdout: string; stderr: string }> {
  return (...args) => run(process.execPath, [NFX, ...args], { env: { ...process.env, ...env }, maxBuffer: 16 * 1048576 });
}
