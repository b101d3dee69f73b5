// Delivery-key claims and outcome records in Redis for the gateways: the claim and renewal scripts, and a writer that records outcomes as answers arrive.
import { hashTagOf, type Redis } from "../infra/redis.js";
import { type ScriptRedis, withScripts } from "../infra/scripts.js";

/** A claim marker in a delivery key starts with `~`; anything else in the key is a recorded outcome (JSON). */
export const CLAIM = "~";

/** The marker a batch leaves on the keys of sends it pushed back (NFX_RETRY), so the batch released under `batchId` may take them over. */
export const heldMarker = (batchId: string): string => CLAIM + batchId;

/** The marker of one attempt at `batchId` (one delivery of the message, in one process): only this attempt calls providers for keys holding it. */
export const attemptMarker = (batchId: string, attempt: string): string => `${CLAIM}${batchId}#${attempt}`;

/** True when a delivery key's value is a claim (by some attempt, live or dead), not a recorded outcome. */
export const isClaim = (v: string): boolean => v.startsWith(CLAIM);

/** Claims and renewals of delivery keys on one Redis client (lib/infra/scripts/claimDeliveryKeys-n.lua, renewDeliveryKeys-n.lua). */
export class Claims {
  private readonly r: ScriptRedis;
  constructor(redis: Redis) {
    this.r = withScripts(redis);
  }

  /**
   * Claims `keys` for the attempt `mine` for `ttlSec`, taking over keys that
   * hold `held`. Resolves each key's prior value (null when it was free).
   */
  claim(keys: readonly string[], mine: string, ttlSec: number, held: string): Promise<(string | null)[]> {
    return keys.length ? this.r.nfxClaimDeliveryKeys(keys.length, ...keys, mine, ttlSec, held) : Promise.resolve([]);
  }

  /** Extends to `ttlSec` the keys of `keys` that still hold `mine`; resolves how many did. */
  renew(keys: readonly string[], mine: string, ttlSec: number): Promise<number> {
    return keys.length ? this.r.nfxRenewDeliveryKeys(keys.length, ...keys, mine, ttlSec) : Promise.resolve(0);
  }
}

/** The writes of one event-loop turn to one shard's keys: keys, values ("" deletes), TTLs; and runs of keys set to one value (sent once). */
type Group = { keys: string[]; values: string[]; ttls: number[]; same: { keys: readonly string[]; value: string; ttl: number }[] };

/**
 * Writes delivery-key values as soon as they are known: every write queued in
 * one event-loop turn (e.g. the answers to the provider requests read in one
 * I/O phase) goes in one script call per user shard (setDeliveryKeys-n.lua:
 * its keys share a hash slot), sent right after that turn, so a request of 500
 * recipients costs one Redis command, not 500. One per gateway process, shared
 * by its batches. The promise a write returns settles when its turn's calls
 * ran, and rejects if any failed (the caller's batch then fails and is redelivered).
 */
export class OutcomeWriter {
  private groups = new Map<string, Group>();
  private turn: Promise<void> | null = null;
  private readonly r: ScriptRedis;
  constructor(redis: Redis) {
    this.r = withScripts(redis);
  }

  /** Sets `key` to `value` with TTL `ttlSec` (an outcome, or a held marker). */
  set(key: string, value: string, ttlSec: number): Promise<void> {
    this.add(key, value, ttlSec);
    return this.flushed();
  }

  /**
   * Sets every key of `keys` (one user shard's) to the same `value` with TTL `ttlSec` (the recipients of one email
   * request): one promise for all, the value sent once.
   */
  setAll(keys: readonly string[], value: string, ttlSec: number): Promise<void> {
    if (keys.length === 1) this.add(keys[0], value, ttlSec);
    else if (keys.length > 1) this.groupOf(keys[0]).same.push({ keys, value, ttl: ttlSec });
    return this.flushed();
  }

  /** Deletes `key` (a dead-lettered send's claim, so a replay can send it). */
  del(key: string): Promise<void> {
    return this.set(key, "", 0);
  }

  private groupOf(key: string): Group {
    const tag = hashTagOf(key);
    let g = this.groups.get(tag);
    if (!g) this.groups.set(tag, (g = { keys: [], values: [], ttls: [], same: [] }));
    return g;
  }

  private add(key: string, value: string, ttlSec: number): void {
    const g = this.groupOf(key);
    g.keys.push(key);
    g.values.push(value);
    g.ttls.push(ttlSec);
  }

  /** The promise of this turn's writes, sent right after the turn. */
  private flushed(): Promise<void> {
    this.turn ??= new Promise<void>((res, rej) =>
      setImmediate(() => {
        const groups = this.groups;
        this.groups = new Map();
        this.turn = null;
        const calls: Promise<number>[] = [];
        for (const x of groups.values()) {
          if (x.keys.length) calls.push(this.r.nfxSetDeliveryKeys(x.keys.length, ...x.keys, ...x.values, ...x.ttls));
          for (const r of x.same) calls.push(this.r.nfxSetDeliveryKeys(r.keys.length, ...r.keys, r.value, r.ttl));
        }
        Promise.all(calls).then(() => res(), rej);
      }),
    );
    // Marked handled here: a batch that failed before awaiting its writes must not crash the process with an unhandled rejection.
    this.turn.catch(() => undefined);
    return this.turn;
  }
}
