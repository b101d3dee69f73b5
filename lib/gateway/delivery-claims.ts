// Delivery-key claims and outcome records in Redis for the gateways: the claim and renewal scripts, and a writer that records outcomes as answers arrive.
import { pipelineOf, type Redis } from "../infra/redis.js";
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

type Op = { key: string; value: string | null; ttlSec: number };

/**
 * Writes delivery-key values as soon as they are known: every write queued in
 * one event-loop turn (e.g. the answers to the provider requests read in one
 * I/O phase) goes in one pipeline ({@link pipelineOf}: on a cluster, one
 * round trip per node), sent right after that turn. One per
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
        const p = pipelineOf(this.redis);
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
