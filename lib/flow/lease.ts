// Leases in JetStream KV: one owner at a time per key, renewed by compare-and-set, fenced by revision.
import type { KV } from "@nats-io/kv";

import { decodeJson, encodeJson } from "../core/codec.js";
import { Fenced } from "../core/errors.js";
import { isTransientJsError } from "../infra/nats.js";

interface LeaseRecord {
  owner: string;
  expiresAt: number;
}

/**
 * A held lease. Ownership is a KV entry `{owner, expiresAt}` written with
 * compare-and-set on its revision: taking an expired lease and every renewal
 * must name the revision the holder last saw, so two processes can never both
 * believe they hold it after a renewal; a holder whose renewal fails has lost
 * it (`lost` turns true, `onLost` runs) and must stop writing.
 */
export class Lease {
  private timer: NodeJS.Timeout | null = null;
  /** A quick second try after a renewal the bucket did not answer. */
  private retry: NodeJS.Timeout | null = null;
  /** The renewal in flight, if any: a timer tick and a retry never overlap. */
  private renewing: Promise<boolean> | null = null;
  /** Runs one renewal and reports a loss (set by {@link acquire}). */
  private tick: () => void = () => undefined;
  lost = false;

  private constructor(
    private readonly kv: KV,
    readonly key: string,
    readonly owner: string,
    private readonly ttlMs: number,
    private readonly now: () => number,
    /** The KV revision this holder wrote last: the fence. */
    public revision: number,
    private expiresAt: number,
    /** Monotonic deadline (performance.now) before which this holder may act; immune to wall-clock jumps and counts time spent stopped. */
    private validUntil: number,
  ) {}

  /** Fraction of the TTL a holder gives up at the end of its lease, so it stops before anyone else may start. */
  private static margin(ttlMs: number): number {
    return Math.min(500, ttlMs / 5);
  }

  /**
   * Takes the lease if it is free or expired. Resolves null when another
   * owner holds it; throws only if KV is unreachable. The lease then renews
   * itself every third of `ttlMs` until released or lost.
   */
  static async acquire(kv: KV, key: string, owner: string, ttlMs: number, now: () => number = Date.now, onLost?: () => void): Promise<Lease | null> {
    const m0 = performance.now();
    const e = await kv.get(key);
    const t = now();
    const val = encodeJson({ owner, expiresAt: t + ttlMs } satisfies LeaseRecord);
    let rev: number;
    try {
      if (!e || e.operation !== "PUT") rev = e ? await kv.update(key, val, e.revision) : await kv.create(key, val);
      else {
        const cur = decodeJson<LeaseRecord>(e.value);
        if (cur.expiresAt > t && cur.owner !== owner) return null;
        rev = await kv.update(key, val, e.revision);
      }
    } catch (err) {
      // A bucket busy or electing a leader is not a lost race: the caller hears of it (and asks again).
      if (isTransientJsError(err)) throw err;
      return null; // somebody else wrote it first
    }
    const l = new Lease(kv, key, owner, ttlMs, now, rev, t + ttlMs, m0 + ttlMs - Lease.margin(ttlMs));
    l.tick = () => void l.renew().then((ok) => !ok && onLost?.());
    l.timer = setInterval(l.tick, Math.max(100, ttlMs / 3));
    l.timer.unref();
    return l;
  }

  /**
   * Extends the lease; false (and `lost`) if it was taken or expired meanwhile. A renewal the bucket did not answer (a
   * nats-server cluster electing the bucket's leader) is tried again within a second, not a third of the TTL later: an
   * election of a few seconds then costs no lease.
   */
  renew(): Promise<boolean> {
    return (this.renewing ??= this.renewOnce().finally(() => (this.renewing = null)));
  }

  private async renewOnce(): Promise<boolean> {
    if (this.lost) return false;
    const t = this.now();
    const m0 = performance.now();
    if (t >= this.expiresAt || m0 >= this.validUntil) return this.lose("expired before it could be renewed");
    const rec: LeaseRecord = { owner: this.owner, expiresAt: t + this.ttlMs };
    const held = (revision: number, expiresAt: number): true => {
      this.revision = revision;
      this.expiresAt = expiresAt;
      this.validUntil = m0 + (expiresAt - t) - Lease.margin(this.ttlMs);
      return true;
    };
    try {
      return held(await this.kv.update(this.key, encodeJson(rec), this.revision), rec.expiresAt);
    } catch (err) {
      // KV busy or electing a leader (nats-server cluster): still held until its deadline; tried again shortly.
      if (isTransientJsError(err)) {
        if (!this.retry && !this.lost) {
          this.retry = setTimeout(() => ((this.retry = null), this.tick()), Math.max(100, Math.min(1000, this.ttlMs / 10)));
          this.retry.unref();
        }
        return true;
      }
      // Refused: someone else wrote the key, or an earlier update of ours went through after its answer was lost (a
      // timeout). Owner names are unique per holder, so an entry naming us is our own write: held until what it says.
      const e = await this.kv.get(this.key).catch(() => null);
      if (e?.operation === "PUT") {
        const cur = decodeJson<LeaseRecord>(e.value);
        if (cur.owner === this.owner && cur.expiresAt > t) return held(e.revision, Math.min(cur.expiresAt, this.expiresAt + this.ttlMs));
      }
      return this.lose(`renewal refused: ${(err as Error)?.message ?? String(err)}`);
    }
  }

  /**
   * Whether the holder may still act: not lost and not past its deadline on
   * the monotonic clock (a process stopped past its lease sees it expired the
   * moment it runs again, before any renewal could fail).
   */
  get valid(): boolean {
    return !this.lost && performance.now() < this.validUntil && this.now() < this.expiresAt;
  }

  /**
   * The fence: call right before every write made under this lease (a
   * publish, a checkpoint). Returns if the lease is {@link valid} (checked on
   * the monotonic clock at this moment); otherwise throws {@link Fenced}
   * (`NFX_ERR_FENCED`) saying `<holder>: lease <revision> is gone`, and the
   * holder must stop without writing. `holder` names what holds the lease in
   * that message, e.g. `shard 3`.
   */
  fence(holder: string): void {
    if (!this.valid) throw new Fenced(`${holder}: lease ${this.revision} is gone`);
  }

  /** Why the lease was lost, once it is (for the holder's log). */
  lostReason?: string;

  private lose(reason: string): false {
    this.lost = true;
    this.lostReason = reason;
    if (this.timer) clearInterval(this.timer);
    if (this.retry) clearTimeout(this.retry);
    return false;
  }

  /** Gives the lease up (deletes it if still ours). */
  async release(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    if (this.retry) clearTimeout(this.retry);
    if (this.lost) return;
    this.lost = true;
    await this.kv.delete(this.key, { previousSeq: this.revision }).catch(() => undefined);
  }
}
