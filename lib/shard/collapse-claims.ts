// Collapse keys across lane classes: which notification holds a (collapse key, user) pair, claimed in Redis per fan chunk.
import { createHash } from "node:crypto";

import { collapseKey } from "../core/keys.js";
import { CHANNELS } from "../core/subjects.js";
import type { Redis } from "../infra/redis.js";
import { type ScriptRedis, withScripts } from "../infra/scripts.js";
import type { ChunkDecision } from "./chunk-decision.js";

/**
 * Claims and releases collapse keys for the shard actor (lib/infra/scripts/claimCollapseKeys-n.lua,
 * releaseCollapseKeys-n.lua). A collapse key can be shared by notifications of both lane classes, whose owners are
 * different processes, so the holder lives in Redis: the first notification to claim a (key, user) pair holds it for
 * the dedup window; a later one finds it held and is suppressed as `duplicate_collapse_key`. A claim names its
 * notification, so deciding the same chunk again (a replay after a crash) finds its own claim and decides the same.
 */
export class CollapseClaims {
  private readonly r: ScriptRedis;
  constructor(redis: Redis, private readonly windowMs: number) {
    this.r = withScripts(redis);
  }

  private keys(shard: number, key: string, users: readonly string[]): string[] {
    const h = createHash("sha256").update(key).digest("base64url").slice(0, 22);
    return users.map((u) => collapseKey(shard, h, u));
  }

  /** Claims `key` for `nid` for every user of `users`; resolves, per user, true when another notification holds it. One round trip. */
  async claim(shard: number, key: string, nid: string, users: readonly string[]): Promise<boolean[]> {
    if (users.length === 0) return [];
    const held = await this.r.nfxClaimCollapseKeys(users.length, ...this.keys(shard, key, users), nid, this.windowMs);
    return held.map((v) => v === 0);
  }

  /** Gives back `nid`'s claims of `key` for `users` (users it was not sent to); claims of other notifications are untouched. */
  async release(shard: number, key: string, nid: string, users: readonly string[]): Promise<void> {
    if (users.length > 0) await this.r.nfxReleaseCollapseKeys(users.length, ...this.keys(shard, key, users), nid);
  }
}

/**
 * The users of a chunk whose collapse-key claim this notification holds (`collapsed[i]` false) but who were neither
 * sent to nor deferred by `dec`: their claims are given back, so a user who never got the notification is not
 * kept from the next one with the same key.
 */
export function unsentUsers(users: readonly string[], collapsed: readonly boolean[], dec: ChunkDecision): string[] {
  const kept = new Set<string>();
  for (const c of CHANNELS) for (const s of dec.sends[c]) kept.add(s.user);
  for (const l of dec.deferred.values()) for (const u of l) kept.add(u);
  return users.filter((u, i) => !collapsed[i] && !kept.has(u));
}
