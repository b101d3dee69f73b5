// Delivery-key claims and outcome records in Redis for the gateways: the claim and renewal scripts, and a writer that records outcomes as answers arrive.
import type { Redis } from "../infra/redis.js";

/** A claim marker in a delivery key starts with `~`; anything else in the key is a recorded outcome (JSON). */
export const CLAIM = "~";

/** The marker a batch leaves on the keys of sends it pushed back (NFX_RETRY), so the batch released under `batchId` may take them over. */
export const heldMarker = (batchId: string): string => CLAIM + batchId;

/** The marker of one attempt at `batchId` (one delivery of the message, in one process): only this attempt calls providers for keys holding it. */
export const attemptMarker = (batchId: string, attempt: string): string => `${CLAIM}${batchId}#${attempt}`;

/** True when a delivery key's value is a claim (by some attempt, live or dead), not a recorded outcome. */
export const isClaim = (v: string): boolean => v.startsWith(CLAIM);

/**
 * nfxClaim — KEYS: the delivery keys of one batch (one shard: one hash slot).
 * ARGV[1]: this attempt's marker; ARGV[2]: claim TTL in seconds; ARGV[3]: the
 * held marker of this batch id. Per key: a free key, or one holding ARGV[3],
 * is set to ARGV[1] with TTL ARGV[2]. Returns per key its value before the
 * call (false when free). One round trip per batch.
 */
const CLAIM_SCRIPT = `
local out = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if v == ARGV[3] then redis.call('SET', k, ARGV[1], 'EX', ARGV[2]); out[i] = v
  elseif v then out[i] = v
  else redis.call('SET', k, ARGV[1], 'EX', ARGV[2]); out[i] = false end
end
return out`;

/**
 * nfxRenew — KEYS: delivery keys of one batch. ARGV[1]: this attempt's
 * marker; ARGV[2]: TTL in seconds. Extends only keys still holding ARGV[1]
 * (a recorded outcome or another attempt's claim is left alone). Returns how
 * many were extended.
 */
const RENEW_SCRIPT = `
local n = 0
for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then redis.call('EXPIRE', k, ARGV[2]); n = n + 1 end
end
return n`;

type ClaimRedis = Redis & {
  nfxClaim(n: number, ...args: (string | number)[]): Promise<(string | null)[]>;
  nfxRenew(n: number, ...args: (string | number)[]): Promise<number>;
};

/** Claims and renewals of delivery keys on one Redis client (scripts defined once per client). */
export class Claims {
  private readonly r: ClaimRedis;
  constructor(redis: Redis) {
    const r = redis as unknown as Partial<ClaimRedis>;
    if (!r.nfxClaim) redis.defineCommand("nfxClaim", { lua: CLAIM_SCRIPT });
    if (!r.nfxRenew) redis.defineCommand("nfxRenew", { lua: RENEW_SCRIPT });
    this.r = redis as ClaimRedis;
  }

  /**
   * Claims `keys` for the attempt `mine` for `ttlSec`, taking over keys that
   * hold `held`. Resolves each key's prior value (null when it was free).
   */
  claim(keys: readonly string[], mine: string, ttlSec: number, held: string): Promise<(string | null)[]> {
    return keys.length ? this.r.nfxClaim(keys.length, ...keys, mine, ttlSec, held) : Promise.resolve([]);
  }

  /** Extends to `ttlSec` the keys of `keys` that still hold `mine`; resolves how many did. */
  renew(keys: readonly string[], mine: string, ttlSec: number): Promise<number> {
    return keys.length ? this.r.nfxRenew(keys.length, ...keys, mine, ttlSec) : Promise.resolve(0);
  }
}

type Op = { key: string; value: string | null; ttlSec: number };

/**
 * Writes delivery-key values as soon as they are known: every write queued in
 * one event-loop turn (e.g. the answers to the provider requests read in one
 * I/O phase) goes in one pipeline, sent right after that turn. One per
 * gateway process, shared by its batches. The promise a write returns
 * settles when its pipeline was executed, and rejects if any command of it
 * failed (the caller's batch then fails and is redelivered).
 */
export class OutcomeWriter {
  private ops: Op[] = [];
  private turn: Promise<void> | null = null;
  constructor(private readonly redis: Redis) {}

  /** Sets `key` to `value` with TTL `ttlSec` (an outcome, or a held marker). */
  set(key: string, value: string, ttlSec: number): Promise<void> {
    return this.queue({ key, value, ttlSec });
  }

  /** Deletes `key` (a dead-lettered send's claim, so a replay can send it). */
  del(key: string): Promise<void> {
    return this.queue({ key, value: null, ttlSec: 0 });
  }

  private queue(op: Op): Promise<void> {
    this.ops.push(op);
    this.turn ??= new Promise<void>((res, rej) =>
      setImmediate(() => {
        const ops = this.ops;
        this.ops = [];
        this.turn = null;
        const p = this.redis.pipeline();
        for (const o of ops) {
          if (o.value === null) p.del(o.key);
          else p.set(o.key, o.value, "EX", o.ttlSec);
        }
        p.exec().then((out) => {
          const err = out?.find(([e]) => e)?.[0];
          if (err) rej(err);
          else res();
        }, rej);
      }),
    );
    // Marked handled here: a batch that failed before awaiting its writes must not crash the process with an unhandled rejection.
    this.turn.catch(() => undefined);
    return this.turn;
  }
}
