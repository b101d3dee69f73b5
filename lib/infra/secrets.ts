// Published defaults no running role may use: development secrets and open settings, each paired with the config key that replaces it.
import { randomBytes } from "node:crypto";

import { DEV_LINK_SECRET, DEV_NATS_SECRET, DEV_WS_SECRET } from "../../config/schema.js";
import type { Config } from "../core/config.js";
import { InsecureDefault } from "../core/errors.js";

/** One (config path, published value) pair. An array-valued key fails when it contains the value. */
export interface PublishedDefault {
  /** Dotted config path, e.g. `ws.secret`. */
  path: string;
  /** The value anyone can read in the source or docs. */
  published: string;
  /** Why it must not run, for the error message. */
  why: string;
}

/**
 * Every published default a role refuses to start with. Adding one is one
 * line here; `nfx up` and the test harness must then set the key (see
 * {@link localSecrets}).
 */
export const PUBLISHED_DEFAULTS: readonly PublishedDefault[] = [
  { path: "nats.secret", published: DEV_NATS_SECRET, why: "every NATS password derives from it: anyone could connect as any nfx role or as nfx-admin" },
  { path: "ws.secret", published: DEV_WS_SECRET, why: "anyone can mint user tokens with it and open any user's inbox" },
  { path: "engagement.secret", published: DEV_LINK_SECRET, why: "anyone can forge tracking links and opens/clicks with it" },
  { path: "ws.origins", published: "*", why: "any web page could open WebSocket connections with a user's token" },
];

/** The value at a dotted path of `cfg`, or undefined. */
function at(cfg: unknown, path: string): unknown {
  let cur: unknown = cfg;
  for (const k of path.split(".")) cur = cur !== null && typeof cur === "object" && Object.hasOwn(cur, k) ? (cur as Record<string, unknown>)[k] : undefined;
  return cur;
}

/** The entries of {@link PUBLISHED_DEFAULTS} that `cfg` still uses. */
export function publishedDefaultsIn(cfg: Config): PublishedDefault[] {
  return PUBLISHED_DEFAULTS.filter((d) => {
    const v = at(cfg, d.path);
    return Array.isArray(v) ? v.includes(d.published) : v === d.published;
  });
}

/**
 * Throws {@link InsecureDefault} naming the first key (and listing every one)
 * still set to its published default. Called by every role before it connects.
 */
export function refusePublishedDefaults(cfg: Config): void {
  const bad = publishedDefaultsIn(cfg);
  if (bad.length === 0) return;
  const lines = bad.map((d) => `${d.path}: must be set (the published default ${JSON.stringify(d.published)} is refused: ${d.why})`);
  throw new InsecureDefault(`refusing to start with published defaults:\n  ${lines.join("\n  ")}`, { field: bad[0].path });
}

/** A fresh random secret: 32 bytes, base64url (43 characters). */
export const freshSecret = (): string => randomBytes(32).toString("base64url");

/**
 * Config overrides for a local cluster (`nfx up`, tests) whose config still
 * uses published defaults: a fresh `ws.secret` and `engagement.secret`, and
 * `ws.origins` set to the WebSocket gateway's own origins so its demo page
 * works. Keys the user set are left alone.
 */
export function localSecrets(cfg: Config, wsPort: number): Record<string, unknown> {
  const bad = new Set(publishedDefaultsIn(cfg).map((d) => d.path));
  const ws: Record<string, unknown> = {};
  if (bad.has("ws.secret")) ws.secret = freshSecret();
  if (bad.has("ws.origins")) ws.origins = [`http://127.0.0.1:${wsPort}`, `http://localhost:${wsPort}`];
  return {
    ...(Object.keys(ws).length > 0 ? { ws } : {}),
    ...(bad.has("engagement.secret") ? { engagement: { secret: freshSecret() } } : {}),
  };
}
