// One role process (`nfx run <role>`) started as a child, with its nice value, its output by line, and readiness over IPC.
import { type ChildProcess, spawn } from "node:child_process";
import { setPriority } from "node:os";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

import type { Config } from "../lib/core/config.js";
import { RoleNotReady } from "../lib/core/errors.js";
import { killedWithThisProcess, stopProcess } from "../lib/infra/launch.js";
import { parseProcessSpec, type ProcessSpec, type Role } from "./roles.js";

const NFX_BIN = fileURLToPath(new URL("./nfx.js", import.meta.url));

/**
 * Node flags of a role's own process (not of several roles sharing one). The WebSocket gateway's young generation is
 * capped at 4 MB per semi-space (V8's default is 16 MB): its heap then gives the garbage of a connection burst back
 * within seconds, and an idle connection holds about 1.0–1.5 KB of the process's memory instead of 4–7 KB; and its
 * heap may grow to twice what a full collection left, so a burst's garbage is collected during the burst rather than
 * piling up until it ends (docs/benchmarks.md, "bench:ws"). The webhook gateway's is raised to 64 MB: a delivery's objects live across many
 * requests' answers, and with fewer scavenges fewer of them are copied (docs/benchmarks.md, "bench:webhooks"). The
 * shard actor's young generation is capped at 4 MB too and its heap may grow to twice what a full collection left
 * (V8 lets it grow up to four times): a campaign's garbage no longer piles up to several times the state the actor
 * holds (peak RSS at 1M users 272 MB against 429–466; docs/benchmarks.md, "Shard memory per recipient"). The provider
 * gateways' is raised to 64 MB: a send's objects live until its provider answers, so with 16 MB many were copied and
 * promoted before they died (GC per APNs send about a third lower; docs/benchmarks.md, "Young generation of the provider
 * gateways"). `ROLE_NODE_ARGS` comes after these, so it can override them.
 */
const PROVIDER_GATEWAY_FLAGS = ["--max-semi-space-size=64"] as const;
export const ROLE_NODE_FLAGS: Partial<Record<Role, readonly string[]>> = {
  "ws-gateway": ["--max-semi-space-size=4", "--heap-growing-percent=100"],
  "gateway-webhook": ["--max-semi-space-size=64"],
  "gateway-apns": PROVIDER_GATEWAY_FLAGS,
  "gateway-fcm": PROVIDER_GATEWAY_FLAGS,
  "gateway-email": PROVIDER_GATEWAY_FLAGS,
  "gateway-sms": PROVIDER_GATEWAY_FLAGS,
  shard: ["--max-semi-space-size=4", "--heap-growing-percent=100"],
};

/** The node flags a process for `spec` starts with: its role's {@link ROLE_NODE_FLAGS} (a process of its own only), then `ROLE_NODE_ARGS`. */
export function nodeArgsOf(spec: ProcessSpec | readonly Role[], env: NodeJS.ProcessEnv = process.env): string[] {
  const own = typeof spec === "string" ? (ROLE_NODE_FLAGS[parseProcessSpec(spec).role] ?? []) : [];
  return [...own, ...(env.ROLE_NODE_ARGS ?? "").split(" ").filter(Boolean)];
}

/** The nice value of a process (`lanes.nice`): urgent-only lane processes, ingest and the router; bulk-only ones and the campaign actor; everything else. */
export function niceOf(cfg: Config, spec: ProcessSpec): number {
  const { role, lanes } = parseProcessSpec(spec);
  if (role === "campaign") return cfg.lanes.nice.bulk;
  if (role === "ingest" || role === "router") return cfg.lanes.nice.urgent;
  return lanes.length === 1 ? cfg.lanes.nice[lanes[0]] : cfg.lanes.nice.other;
}

/** Sets a started process's nice value; a refusal (no CAP_SYS_NICE for a negative value) is reported, and the process keeps running. */
export function setNice(p: ChildProcess, nice: number, report: (msg: string) => void): void {
  if (p.pid === undefined || nice === 0) return;
  try {
    setPriority(p.pid, nice);
  } catch (err) {
    report(`nfx: could not set nice ${nice} on pid ${p.pid} (${(err as Error).message}); it keeps its inherited priority`);
  }
}

/** Lines of a role's output kept to explain why it did not get ready, and the characters kept of each. */
const LAST_LINES = 5;
const LINE_CHARS = 400;

/** A line of a role's output as it explains a failed start: a log line's message (and its error's), anything else as printed; at most LINE_CHARS. */
function brief(line: string): string {
  let out = line;
  if (line.startsWith("{")) {
    try {
      const j = JSON.parse(line) as { msg?: unknown; err?: { message?: unknown } };
      if (typeof j.msg === "string") out = typeof j.err?.message === "string" ? `${j.msg} (${j.err.message})` : j.msg;
    } catch {
      // not a log line: as printed
    }
  }
  return out.length > LINE_CHARS ? `${out.slice(0, LINE_CHARS)}…` : out;
}

/**
 * Starts `nfx run <role> [--lanes <class>]` for `spec` (or, for a list of roles, `nfx run <role>...`: every lane class,
 * all in one process) with `NFX_CONFIG=configFile` and `env` (this process's by default) at nice `nice`; every line it prints goes to `onLine`. `started`
 * receives the process at once (before it is ready); the promise resolves when the roles report ready over IPC. It
 * rejects with {@link RoleNotReady} (the role, the deadline and its last lines of output, a log line as its message) if the process exits first,
 * or if `readyTimeoutMs` pass first (`up.readyTimeoutMs`): the process is then SIGKILLed, and has exited when it
 * rejects. Its node gets the role's {@link ROLE_NODE_FLAGS}, then `ROLE_NODE_ARGS` (e.g. --cpu-prof).
 */
export function spawnRoleProcess(
  spec: ProcessSpec | readonly Role[],
  o: { configFile: string; nice: number; readyTimeoutMs: number; env?: NodeJS.ProcessEnv; onLine?: (line: string) => void; started?: (p: ChildProcess) => void },
): Promise<ChildProcess> {
  return new Promise((res, rej) => {
    const args = typeof spec === "string" ? runArgs(spec) : ["run", ...spec];
    const name = typeof spec === "string" ? spec : spec.join("+");
    const nodeArgs = nodeArgsOf(spec);
    const p = spawn(process.execPath, [...nodeArgs, NFX_BIN, ...args], {
      env: { ...(o.env ?? process.env), NFX_CONFIG: o.configFile },
      stdio: ["ignore", "pipe", "pipe", "ipc"],
    });
    // Interrupted (Ctrl-C on `nfx demo` or a benchmark), this process kills its servers at once: its roles go with them,
    // rather than outlive it by their graceful stop against servers that are gone.
    killedWithThisProcess(p);
    setNice(p, o.nice, (msg) => o.onLine?.(msg));
    o.started?.(p);
    let ready = false;
    let timedOut = false;
    const last: string[] = [];
    const onLine = (line: string): void => {
      if (!ready) {
        last.push(brief(line));
        if (last.length > LAST_LINES) last.shift();
      }
      o.onLine?.(line);
    };
    const lastLines = (): string => (last.length ? `; its last lines:\n${last.map((l) => `  ${l}`).join("\n")}` : "; it printed nothing");
    // A role on its own waits for its servers for ever (as under a service manager); a launcher waits only so long.
    const deadline = setTimeout(() => {
      timedOut = true;
      p.kill("SIGKILL");
    }, o.readyTimeoutMs);
    p.on("message", (m: { type?: string }) => {
      if (m?.type === "ready" && !ready && !timedOut) {
        ready = true;
        clearTimeout(deadline);
        p.channel?.unref();
        res(p);
      }
    });
    createInterface({ input: p.stdout! }).on("line", onLine);
    createInterface({ input: p.stderr! }).on("line", onLine);
    p.once("exit", () => clearTimeout(deadline));
    // "close": exited, and its output read to the end (its last lines are the reason).
    p.once("close", (code, sig) => {
      if (ready) return;
      const why = timedOut
        ? `role ${name} was not ready within ${o.readyTimeoutMs} ms (up.readyTimeoutMs) and was killed`
        : `role ${name} exited (${code ?? sig}) before it was ready`;
      rej(new RoleNotReady(why + lastLines()));
    });
  });
}

/** The `nfx` arguments that run one process spec. */
function runArgs(spec: ProcessSpec): string[] {
  const { role, lanes } = parseProcessSpec(spec);
  return ["run", role, ...(lanes.length === 1 ? ["--lanes", lanes[0]] : [])];
}

/** Stops processes: SIGTERM, then SIGKILL after `graceMs`; resolves when all have exited. */
export async function stopProcesses(ps: readonly ChildProcess[], graceMs = 8000): Promise<void> {
  await Promise.all(ps.map((p) => stopProcess(p, graceMs)));
}
