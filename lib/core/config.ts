// Loads configuration once: schema defaults, then a JSON file, then NFX_* environment variables; validated, then frozen.
import { readFileSync } from "node:fs";

import { z } from "zod";

import { type Config, configSchema } from "../../config/schema.js";
import { ConfigInvalid } from "./errors.js";
import { protoKeyPath } from "./json-guard.js";
import { ownValueAt, PROTOTYPE_NAME_RULE } from "./own-keys.js";
import { formatIssues } from "./zod-issues.js";

export type { Config };

/** Where configuration comes from. Every field is optional; the process environment is the default for `env`. */
export interface ConfigSources {
  /** Path of a JSON config file. Falls back to `NFX_CONFIG` in `env`. */
  file?: string;
  /** Extra values layered over the file and under the environment (used by `nfx up` and tests). */
  overrides?: Record<string, unknown>;
  env?: NodeJS.ProcessEnv;
}

type Plain = Record<string, unknown>;
const isPlain = (v: unknown): v is Plain => typeof v === "object" && v !== null && !Array.isArray(v);

function merge(into: Plain, from: Plain): Plain {
  const out: Plain = { ...into };
  for (const [k, v] of Object.entries(from)) out[k] = isPlain(v) && isPlain(out[k]) ? merge(out[k], v) : v;
  return out;
}

/** Unwraps optional/default/prefault wrappers to reach an object schema's shape, if any. */
function shapeOf(s: z.ZodType | undefined): Record<string, z.ZodType> | undefined {
  let cur: unknown = s;
  for (;;) {
    if (cur instanceof z.ZodObject) return cur.shape;
    const inner = (cur as { _zod?: { def?: { innerType?: unknown } } } | undefined)?._zod?.def?.innerType;
    if (!inner) return undefined;
    cur = inner;
  }
}

/**
 * Turns `NFX_A__B_C=value` variables into a nested object: `__` separates
 * levels and each segment matches a schema key case-insensitively with `_`
 * ignored (`NFX_GATEWAYS__APNS__KEY_FILE` → `gateways.apns.keyFile`). Values
 * are parsed as JSON when they parse, else kept as strings. A variable naming
 * no key is reported as an unknown key, with the variable's name.
 * `NFX_TEST_*` variables are the test harness's (`NFX_TEST_REDIS=cluster`),
 * not configuration, and are skipped: roles started by a test inherit them.
 */
export function envToConfig(env: NodeJS.ProcessEnv): { value: Plain; problems: string[] } {
  const value: Plain = {};
  const problems: string[] = [];
  for (const [name, raw] of Object.entries(env)) {
    if (!isConfigVar(name) || raw === undefined) continue;
    const path = envPathOf(name);
    if (typeof path === "string") {
      problems.push(path);
      continue;
    }
    let parsed: unknown = raw;
    try {
      parsed = JSON.parse(raw);
    } catch {
      /* a plain string */
    }
    let node = value;
    for (const k of path.slice(0, -1)) node = (node[k] ??= {}) as Plain;
    node[path[path.length - 1]] = parsed;
  }
  return { value, problems };
}

/** Whether variable `name` is configuration ({@link envToConfig}): `NFX_*`, but `NFX_CONFIG` and the test harness's `NFX_TEST_*`. */
const isConfigVar = (name: string): boolean => name.startsWith("NFX_") && name !== "NFX_CONFIG" && !name.startsWith("NFX_TEST_");

/** The key path variable `name` sets ({@link envToConfig}), or the problem when it names no key. */
function envPathOf(name: string): string[] | string {
  const segs = name.slice(4).split("__");
  let shape: Record<string, z.ZodType> | undefined = configSchema.shape;
  const path: string[] = [];
  for (const seg of segs) {
    const want = seg.replace(/_/g, "").toLowerCase();
    const key: string | undefined = shape && Object.keys(shape).find((k) => k.toLowerCase() === want);
    if (!key || !shape) return `${name}: unknown key ${[...path, seg.toLowerCase()].join(".")}`;
    path.push(key);
    shape = shapeOf(shape[key]);
  }
  return path;
}

/**
 * `env` without the configuration variables that set a key `set` (nested, as config overrides) sets, a key inside one,
 * or one that holds one (`NFX_REDIS` as well as `NFX_REDIS__URL` for `redis.url`); and those variables, with the key
 * each sets and whether its value differs from `set`'s. A local cluster starts its roles with it: the servers and
 * settings it chose are not overridden by the shell's environment.
 */
export function envWithout(env: NodeJS.ProcessEnv, set: Record<string, unknown>): { env: NodeJS.ProcessEnv; dropped: { name: string; key: string; differs: boolean }[] } {
  const leaves: string[] = [];
  const walk = (o: Plain, pre: string): void => {
    for (const [k, v] of Object.entries(o)) {
      if (isPlain(v)) walk(v, `${pre}${k}.`);
      else leaves.push(`${pre}${k}`);
    }
  };
  walk(set, "");
  const out: NodeJS.ProcessEnv = {};
  const dropped: { name: string; key: string; differs: boolean }[] = [];
  for (const [name, v] of Object.entries(env)) {
    const path = isConfigVar(name) ? envPathOf(name) : null;
    const key = Array.isArray(path) ? path.join(".") : null;
    if (key === null || !leaves.some((p) => p === key || p.startsWith(`${key}.`) || key.startsWith(`${p}.`))) {
      out[name] = v;
      continue;
    }
    const theirs = ownValueAt(envToConfig({ [name]: v }).value, path as string[]);
    dropped.push({ name, key, differs: JSON.stringify(theirs) !== JSON.stringify(ownValueAt(set, path as string[])) });
  }
  return { env: out, dropped };
}

function deepFreeze<T>(o: T): T {
  if (typeof o === "object" && o !== null) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}

/**
 * Loads and validates the configuration. Nothing connects before this
 * returns. Throws {@link ConfigInvalid} listing every problem with its path
 * (`gateways.apns.keyFile: file not found`); the returned object is deeply frozen.
 */
export function loadConfig(src: ConfigSources = {}): Config {
  const env = src.env ?? process.env;
  const problems: string[] = [];
  let fromFile: Plain = {};
  const path = src.file ?? env.NFX_CONFIG;
  if (path) {
    try {
      const parsed: unknown = JSON.parse(readFileSync(path, "utf8"));
      if (!isPlain(parsed)) problems.push(`${path}: must hold a JSON object`);
      else fromFile = parsed;
    } catch (err) {
      problems.push(`${path}: ${(err as Error).message}`);
    }
  }
  const fromEnv = envToConfig(env);
  problems.push(...fromEnv.problems);
  // zod drops a `__proto__` key without a word (a category of that name would vanish): refuse it with its path.
  for (const layer of [fromFile, src.overrides ?? {}, fromEnv.value]) {
    const proto = protoKeyPath(layer);
    if (proto !== null) problems.push(`${proto}: ${PROTOTYPE_NAME_RULE}`);
  }
  const merged = merge(merge(fromFile, src.overrides ?? {}), fromEnv.value);
  const res = configSchema.safeParse(merged);
  if (!res.success) problems.push(...formatIssues(res.error.issues));
  if (problems.length > 0 || !res.success) {
    throw new ConfigInvalid(`invalid configuration:\n  ${problems.join("\n  ")}`);
  }
  return deepFreeze(res.data);
}
