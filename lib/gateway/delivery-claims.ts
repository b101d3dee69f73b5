// Delivery-key claims and outcome records in Redis for the gateways: the claim and renewal scripts, and a writer that records outcomes as answers arrive.
import type { Redis } from "../infra/redis.js";
import { type ScriptRedis, withScripts } from "../infra/scripts.js";

/** A claim marker in a delivery key starts with `~`; anything else in the key is a recorded outcome (JSON). */
export const CLAIM = "~";

/** The marker a batch leaves on the keys of sends it pushed back (NFX_RETRY), so the batch released under `batchId` may take them over. */
export const heldMarker = (batchId: string): string => CLAIM + batchId;

/** The marker of one attempt at `batchId` (one delivery of the message, in one process): only this attempt calls providers for keys holding it. */
export const attemptMarker = (batchId: string, attempt: string): string => `${CLAIM}${batchId}#${attempt}`;

/** True when a delivery key's value is a claim or held marker (stored as `<marker>@<deadline ms>`), not a recorded outcome. */
export const isClaim = (v: string): boolean => v.startsWith(CLAIM);

/** Delivery keys grouped by hash: the hashes, and each one's fields (as the claim and renewal scripts take them). */
export interface FieldsByHash {
  hashes: readonly string[];
  fields: readonly (readonly string[])[];
}

const argsOf = (k: FieldsByHash): (string | number)[] => [...k.fields.map((f) => f.length), ...k.fields.flat()];

/**
 * Claims and renewals of delivery keys on one Redis client
 * (lib/infra/scripts/claimDeliveryFields-n.lua, in its two modes):
 * one script call per batch, two commands per hash inside it.
 */
export class Claims {
  private readonly r: ScriptRedis;
  constructor(redis: Redis) {
    this.r = withScripts(redis);
  }

  /**
   * Claims the fields of `keys` (one user shard's hashes) for the attempt `mine` for `ttlSec`, taking over fields held
   * for `held` and lapsed claims. Resolves each field's prior value, hash by hash: null when the attempt now holds it.
   */
  claim(keys: FieldsByHash, mine: string, ttlSec: number, held: string): Promise<(string | null)[]> {
    return keys.hashes.length ? this.r.nfxClaimDeliveryFields(keys.hashes.length, ...keys.hashes, mine, ttlSec, "claim", held, ...argsOf(keys)) as Promise<(string | null)[]> : Promise.resolve([]);
  }

  /** Extends to `ttlSec` from now the fields of `keys` that still hold `mine`; resolves how many did. */
  renew(keys: FieldsByHash, mine: string, ttlSec: number): Promise<number> {
    return keys.hashes.length ? this.r.nfxClaimDeliveryFields(keys.hashes.length, ...keys.hashes, mine, ttlSec, "renew", "", ...argsOf(keys)) as Promise<number> : Promise.resolve(0);
  }
}

/** The writes of one event-loop turn to one delivery hash: fields and values set, fields deleted, the longest TTL asked; runs of fields set to one value (sent once). */
type Group = { sets: string[]; ttl: number; dels: string[]; same: { fields: readonly string[]; value: string; ttl: number }[] };

/**
 * Writes delivery-key values as soon as they are known: every write queued in
 * one event-loop turn (e.g. the answers to the provider requests read in one
 * I/O phase) goes in one `HSET` per delivery hash (plus `EXPIRE NX` and `GT`,
 * so the hash lives at least the longest TTL asked), sent right after that
 * turn, so a request of 500 recipients costs one Redis command, not 500. One
 * per gateway process, shared by its batches. The promise a write returns
 * settles when its turn's commands ran, and rejects if any failed (the
 * caller's batch then fails and is redelivered).
 */
export class OutcomeWriter {
  private groups = new Map<string, Group>();
  private turn: Promise<void> | null = null;
  private readonly r: ScriptRedis;
  constructor(redis: Redis) {
    this.r = withScripts(redis);
  }

  /** Sets `field` of delivery hash `hash` to `value` (an outcome), the hash kept at least `ttlSec`. */
  set(hash: string, field: string, value: string, ttlSec: number): Promise<void> {
    const g = this.groupOf(hash);
    g.sets.push(field, value);
    if (ttlSec > g.ttl) g.ttl = ttlSec;
    return this.flushed();
  }

  /**
   * Sets every field of `fields` of `hash` to the same `value` (the recipients of one email request), the hash kept at
   * least `ttlSec`: one promise for all, the value sent once (setDeliveryFields-1.lua).
   */
  setAll(hash: string, fields: readonly string[], value: string, ttlSec: number): Promise<void> {
    if (fields.length === 1) return this.set(hash, fields[0], value, ttlSec);
    if (fields.length > 1) this.groupOf(hash).same.push({ fields, value, ttl: ttlSec });
    return this.flushed();
  }

  /**
   * Sets `fields` of `hash` to held marker `marker` until `ttlSec` from now (Redis's clock), the hash kept at least as
   * long. Resolves when written.
   */
  hold(hash: string, fields: readonly string[], marker: string, ttlSec: number): Promise<void> {
    if (!fields.length) return Promise.resolve();
    const p = this.r.nfxSetDeliveryFields(hash, marker, ttlSec, "1", ...fields).then(() => undefined);
    // Marked handled, as a turn's writes are: the caller's batch learns of a failure when it awaits its writes.
    p.catch(() => undefined);
    return p;
  }

  /** Deletes `field` of `hash` (a dead-lettered send's claim, so a replay can send it). */
  del(hash: string, field: string): Promise<void> {
    this.groupOf(hash).dels.push(field);
    return this.flushed();
  }

  private groupOf(hash: string): Group {
    let g = this.groups.get(hash);
    if (!g) this.groups.set(hash, (g = { sets: [], ttl: 0, dels: [], same: [] }));
    return g;
  }

  /** The promise of this turn's writes, sent right after the turn. */
  private flushed(): Promise<void> {
    this.turn ??= new Promise<void>((res, rej) =>
      setImmediate(() => {
        const groups = this.groups;
        this.groups = new Map();
        this.turn = null;
        const calls: Promise<unknown>[] = [];
        const redis = this.r;
        for (const [hash, x] of groups) {
          if (x.sets.length) calls.push(redis.hset(hash, ...x.sets), redis.expire(hash, x.ttl, "NX"), redis.expire(hash, x.ttl, "GT"));
          if (x.dels.length) calls.push(redis.hdel(hash, ...x.dels));
          for (const r of x.same) calls.push(redis.nfxSetDeliveryFields(hash, r.value, r.ttl, "0", ...r.fields));
        }
        Promise.all(calls).then(() => res(), rej);
      }),
    );
    // Marked handled here: a batch that failed before awaiting its writes must not crash the process with an unhandled rejection.
    this.turn.catch(() => undefined);
    return this.turn;
  }
}
