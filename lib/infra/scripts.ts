// The Redis Lua script registry: every script nfx runs is a file in lib/infra/scripts/, defined as a typed command on each client once.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import type { ChainableCommander, Cluster, Redis as Single } from "ioredis";

import type { Redis } from "./redis.js";

/**
 * Every script as a command on a client. A file `<name>-<keys>.lua` becomes
 * the command `nfx<Name>`: with a number of keys, the keys are its first
 * arguments; with `n` (a variable number), the first argument is the number
 * of keys, then the keys, then ARGV. ioredis also defines `<command>Buffer`,
 * which resolves binary replies as Buffers. What each script takes and
 * returns is in its file's header.
 */
export interface ScriptCommands {
  /** claimDeliveryFields-n.lua */
  nfxClaimDeliveryFields(numKeys: number, ...keysThenArgv: (string | number)[]): Promise<(string | null)[] | number>;
  /** claimCollapseKeys-n.lua */
  nfxClaimCollapseKeys(numKeys: number, ...keysThenArgv: (string | number)[]): Promise<number[]>;
  /** releaseCollapseKeys-n.lua */
  nfxReleaseCollapseKeys(numKeys: number, ...keysThenArgv: (string | number)[]): Promise<number>;
  /** setDeliveryFields-1.lua */
  nfxSetDeliveryFields(hash: string, value: string, ttlSec: number, marker: "1" | "0", ...fields: string[]): Promise<number>;
  /** inboxAdd-2.lua */
  nfxInboxAdd(order: string, items: string, nid: string, at: number, json: string, cap: number, ttlMs: number): Promise<string>;
  /** inboxSettle-1.lua */
  nfxInboxSettle(items: string, nid: string, bit: string): Promise<string>;
  /** inboxMark-2.lua */
  nfxInboxMark(order: string, items: string, bits: string, all: "1" | "0", ...ids: string[]): Promise<(number | string)[]>;
  /** inboxList-2.lua */
  nfxInboxList(order: string, items: string, before: number, limit: number): Promise<(number | string)[]>;
  /** broadcastStore-2.lua */
  nfxBroadcastStore(records: string, index: string, id: string, json: string, at: number): Promise<number>;
  /** inboxBroadcasts-n.lua */
  nfxInboxBroadcasts(numKeys: number, ...keysThenArgv: (string | number)[]): Promise<number[]>;
  /** inboxMarkBroadcasts-1.lua */
  nfxInboxMarkBroadcasts(items: string, bits: string, ttlMs: number, ...ids: string[]): Promise<string[]>;
  /** presenceSet-n.lua */
  nfxPresenceSet(numKeys: number, ...keysThenArgv: (string | number)[]): Promise<number>;
  /** existsAll-n.lua */
  nfxExistsAll(numKeys: number, ...keys: string[]): Promise<number[]>;
  /** userLogAppend-n.lua */
  nfxUserLogAppend(numKeys: number, ...keysThenArgv: (string | number)[]): Promise<number>;
  /** markFirst-n.lua */
  nfxMarkFirst(numKeys: number, ...keysThenArgv: (string | number)[]): Promise<number[]>;
  /** scanActive-2.lua */
  nfxScanActive(index: string, lastActive: string, from: string, to: string, limit: number, since: number): Promise<(string | number)[]>;
  /** updatePreferences-3.lua, binary reply (the record is msgpack). */
  nfxUpdatePreferencesBuffer(user: string, changed: string, consentLog: string, patchJson: string, now: string, userId: string, logEntry: string): Promise<Buffer | null>;
  /** removeDevice-1.lua */
  nfxRemoveDevice(user: string, deviceId: string, token: string): Promise<number>;
  /** endpointEnqueue-n.lua */
  nfxEndpointEnqueue(numKeys: number, ...keysThenArgv: (string | number)[]): Promise<number>;
  /** endpointNext-5.lua */
  nfxEndpointNext(queue: string, items: string, done: string, state: string, history: string, now: number, doneTtlMs: number, historyCap: number, max: number, ...idOutcomeStatusEntry: (string | number)[]): Promise<(string | number)[]>;
  /** endpointFail-1.lua */
  nfxEndpointFail(state: string, now: number, nextAt: number, status: number, error: string, attempts: number): Promise<[number, number]>;
  /** endpointDirect-n.lua */
  nfxEndpointDirect(numKeys: number, ...keysThenArgv: (string | number)[]): Promise<number[]>;
  /** endpointDirectDone-n.lua */
  nfxEndpointDirectDone(numKeys: number, ...keysThenArgv: (string | number)[]): Promise<number>;
  /** receiptOutboxAdd-3.lua */
  nfxReceiptOutboxAdd(entries: string, order: string, taken: string, ...idJsonPairs: string[]): Promise<number>;
  /** receiptOutboxTake-5.lua */
  nfxReceiptOutboxTake(entries: string, order: string, taken: string, batches: string, batchTimes: string, now: number, max: number, batchId: string, staleMs: number, keepMs: number): Promise<string[]>;
  /** endpointIdle-3.lua (one redis-server only) */
  nfxEndpointIdle(active: string, queue: string, lease: string, endpoint: string, owner: string): Promise<number>;
  /** endpointLease-1.lua */
  nfxEndpointLease(lease: string, owner: string, ms: number, mode: "take" | "renew" | "release"): Promise<number>;
}

/** A client (of one server or of a cluster) with every script defined. */
export type ScriptRedis = (Single & ScriptCommands) | (Cluster & ScriptCommands);

/** The scripts as pipeline commands: queued like any other, their replies come with the pipeline's. */
export type ScriptPipeline = ChainableCommander & { [K in keyof ScriptCommands]: (...args: Parameters<ScriptCommands[K]>) => ScriptPipeline };

/** One script file: its command name, its number of keys (null: variable, given by the caller) and its source. */
export interface ScriptFile {
  file: string;
  command: string;
  numberOfKeys: number | null;
  lua: string;
}

const NAME = /^([a-z][A-Za-z0-9]*)-([0-9]+|n)\.lua$/;

/**
 * Where the .lua files are: beside this module when run from the sources,
 * else in the source tree (tsc does not copy them; dist/lib/infra/scripts.js
 * reads lib/infra/scripts/ of the same checkout).
 */
function scriptDir(): string {
  for (const rel of ["./scripts/", "../../../lib/infra/scripts/"]) {
    const dir = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(dir) && readdirSync(dir).some((f) => f.endsWith(".lua"))) return dir;
  }
  throw new Error(`Redis scripts not found: no lib/infra/scripts/*.lua near ${fileURLToPath(import.meta.url)}`);
}

let files: readonly ScriptFile[] | null = null;

/**
 * Every script of lib/infra/scripts/, read from disk once per process.
 * Throws if the directory is missing or a file name is not `<name>-<keys>.lua`.
 */
export function scriptFiles(): readonly ScriptFile[] {
  if (files) return files;
  const dir = scriptDir();
  const out: ScriptFile[] = [];
  for (const file of readdirSync(dir).filter((f) => f.endsWith(".lua")).sort()) {
    const m = NAME.exec(file);
    if (!m) throw new Error(`lib/infra/scripts/${file}: a script file is named <name>-<numberOfKeys>.lua (or -n for a variable number)`);
    out.push({
      file,
      command: `nfx${m[1][0].toUpperCase()}${m[1].slice(1)}`,
      numberOfKeys: m[2] === "n" ? null : Number(m[2]),
      lua: readFileSync(dir + file, "utf8"),
    });
  }
  return (files = out);
}

const definition = (s: ScriptFile): { lua: string; numberOfKeys?: number } => (s.numberOfKeys === null ? { lua: s.lua } : { lua: s.lua, numberOfKeys: s.numberOfKeys });

/**
 * Every script as ioredis's `scripts` option: a client made with it (and
 * every `duplicate()` of it, which copies the options) has the commands from
 * construction, before any auto-pipeline exists. connectRedis uses it.
 */
export function scriptOptions(): Record<string, { lua: string; numberOfKeys?: number }> {
  return Object.fromEntries(scriptFiles().map((s) => [s.command, definition(s)]));
}

/**
 * The commands of the scripts that take a variable number of keys
 * (`<name>-n.lua`), whose first argument is that number rather than a key.
 * A cluster client sends them outside its auto-pipelines (lib/infra/redis.ts).
 */
export function variableKeyScripts(): string[] {
  return scriptFiles().filter((s) => s.numberOfKeys === null).map((s) => s.command);
}

/**
 * Returns `redis` typed with every script, defining those it lacks (a client
 * made elsewhere, e.g. a test's): a no-op on a client that has them, so
 * every module given a client calls it. Defining must happen before the
 * client is used: an auto-pipeline already being filled does not get
 * commands defined after it began.
 */
export function withScripts(redis: Redis): ScriptRedis {
  const r = redis as unknown as Record<string, unknown>;
  for (const s of scriptFiles()) if (typeof r[s.command] !== "function") redis.defineCommand(s.command, definition(s));
  return redis as ScriptRedis;
}
