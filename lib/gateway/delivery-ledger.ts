// The delivery ledger a gateway batch keeps in Redis: claim its keys, renew them, record outcomes, hold pushed-back keys for their release, drop dead-lettered claims.
import { createHash } from "node:crypto";

import { deliveredField, deliveredKey } from "../core/keys.js";
import type { Logger } from "../core/log.js";
import type { Channel } from "../core/subjects.js";
import type { SendBatch } from "../core/types.js";
import type { Redis } from "../infra/redis.js";
import { attemptMarker, Claims, type FieldsByHash, heldMarker, isClaim, OutcomeWriter } from "./delivery-claims.js";
import type { Recorded } from "./outcomes.js";

/** What a send's delivery key held when its batch claimed it. */
export type KeyState =
  /** Free, or held for this batch id by its earlier release: this attempt owns it and may call the provider. */
  | { kind: "mine" }
  /**
   * Claimed by another attempt (live, or dead until its claim lapses): look again later. `sibling` when that attempt is
   * at this same batch id (an earlier delivery of the same message, still running or dead): the whole batch must then
   * wait, since the outcome it records is reported only by this batch id's receipts.
   */
  | { kind: "claimed"; sibling: boolean }
  /**
   * Already delivered: re-emit this recorded outcome, never send again. `echo` when another batch id
   * recorded it: that batch reports it (its receipts, or its redelivery's under the same message id), so
   * this copy's receipt is marked and not counted again.
   */
  | { kind: "recorded"; record: Recorded; echo: boolean };

const MINE: KeyState = { kind: "mine" };
const CLAIMED: KeyState = { kind: "claimed", sibling: false };
const SIBLING: KeyState = { kind: "claimed", sibling: true };

/** The fields of sends `idx` (default: all) that pass `keep`, grouped by their hash (`at[i]` indexes `hashes`). */
function byHash(hashes: readonly string[], at: Uint32Array, fields: readonly string[], keep: (i: number) => boolean, idx?: readonly number[]): FieldsByHash {
  const out: string[][] = hashes.map(() => []);
  const visit = (i: number): void => {
    if (keep(i)) out[at[i]].push(fields[i]);
  };
  if (idx) idx.forEach(visit);
  else for (let i = 0; i < fields.length; i++) visit(i);
  const used = out.flatMap((f, h) => (f.length ? [h] : []));
  return { hashes: used.map((h) => hashes[h]), fields: used.map((h) => out[h]) };
}

/** TTLs of the ledger's keys, from `gateways` configuration. */
export interface LedgerTtls {
  /** Lifetime of a claim, renewed every third of it while the batch runs. */
  claimTtlSec: number;
  /** Lifetime of a recorded outcome. */
  deliveredTtlSec: number;
}

/**
 * The delivery keys of one send batch, claimed for one attempt: one key per
 * send (a field of its notification's hash), indexed like `batch.sends`. Only this attempt calls providers for keys
 * in state `mine`, and their claims are renewed until {@link close}. Writes
 * go through the process's {@link OutcomeWriter} (one pipeline per event-loop
 * turn). Ordering rules: docs/architecture.md, "Acks, ordering and ownership" (3).
 */
export interface BatchLedger {
  /** What send `i`'s key held when it was claimed. */
  state(i: number): KeyState;
  /** Records outcome `rec` on send `i`'s key for `deliveredTtlSec`; the promise settles when its pipeline ran, and rejects if the write failed. */
  record(i: number, rec: Recorded): Promise<void>;
  /** {@link record} of one outcome on the keys of sends `idx` (the recipients of one email request): serialised once. */
  recordAll(idx: readonly number[], rec: Recorded): Promise<void>;
  /**
   * Moves the keys of sends `idx` this attempt owns (others are skipped) from
   * its claim to the hold of the release `releaseId` published on NFX_RETRY,
   * until `claimTtlSec` after `due`: the released batch takes them over, nothing
   * else sends them meanwhile. Call only once the release is stored.
   */
  hold(idx: readonly number[], releaseId: string, due: number, now: number): void;
  /** Deletes send `i`'s claim (its dead letter is stored), so a replay can send it. Resolves when deleted. */
  release(i: number): Promise<void>;
  /** Resolves when every record and hold queued so far was written; rejects if any failed (the batch must then fail). */
  written(): Promise<void>;
  /** Stops renewing the claims. Idempotent; call when the batch ends, however it ends. */
  close(): void;
}

/**
 * A gateway process's ledger: claims delivery keys batch by batch on one Redis
 * client. One per gateway process, shared by its batches (and by their
 * writes' pipelines).
 */
export class DeliveryLedger {
  private readonly claims: Claims;
  private readonly writer: OutcomeWriter;

  constructor(redis: Redis, private readonly ttl: LedgerTtls, private readonly log: Logger) {
    this.claims = new Claims(redis);
    this.writer = new OutcomeWriter(redis);
  }

  /**
   * Claims every delivery key of `batch` on `channel` for attempt `attempt`
   * at `batchId` (one Redis call, before any provider call), taking over keys
   * this batch id's earlier release left held, and starts renewing the owned
   * claims every third of `claimTtlSec` (a failed renewal is logged, not
   * thrown). Rejects when the claim call fails; nothing is then renewed.
   */
  async claim(batch: SendBatch, channel: Channel, batchId: string, attempt: string): Promise<BatchLedger> {
    const n = batch.sends.length;
    // The batch's delivery keys: one hash per notification (most batches hold one), a field per send.
    const hashes: string[] = [];
    const slotOf = new Map<string, number>();
    /** Send `i`'s hash, as an index into `hashes`. */
    const at = new Uint32Array(n);
    const fields = new Array<string>(n);
    for (let i = 0; i < n; i++) {
      const s = batch.sends[i];
      let h = slotOf.get(s.nid);
      if (h === undefined) {
        slotOf.set(s.nid, (h = hashes.length));
        hashes.push(deliveredKey(batch.shard, s.nid, channel));
      }
      at[i] = h;
      fields[i] = deliveredField(s.user, s.device);
    }
    // Every hash has a field: `all.hashes` is `hashes`, in order.
    const all = byHash(hashes, at, fields, () => true);
    const mine = attemptMarker(batchId, attempt);
    const held = heldMarker(batchId);
    /** What every attempt's claim at this batch id starts with. */
    const sibling = attemptMarker(batchId, "");
    // Which batch wrote a record: 8 base64url characters of its id's hash (48 bits), not the id itself, since every delivered key carries it.
    const tag = createHash("sha1").update(batchId).digest("base64url").slice(0, 8);
    const { claims, writer, ttl } = this;
    const answer = await claims.claim(all, mine, ttl.claimTtlSec, held);
    // The script answers hash by hash: back to the sends' order.
    // `next[h]`: where hash h's next answer is (its fields' answers start where the previous hashes' end).
    let off = 0;
    const next = all.fields.map((f) => ((off += f.length), off - f.length));
    const prior = Array.from({ length: n }, (_, i) => answer[next[at[i]]++] ?? null);
    const owned = (i: number): boolean => prior[i] === null;
    const ownedKeys = byHash(hashes, at, fields, owned);
    // The live batch keeps its claims: renewed every third of the TTL until it ends (fields already recorded are left alone by the script).
    const renewal = setInterval(() => {
      claims.renew(ownedKeys, mine, ttl.claimTtlSec).catch((err) => this.log.warn({ err }, "claim renewal failed"));
    }, Math.max(1000, (ttl.claimTtlSec * 1000) / 3));
    // `rec` with the batch's tag appended (base64url: nothing to escape), without copying the object per send.
    const tagged = (rec: Recorded): string => `${JSON.stringify(rec).slice(0, -1)},"b":"${tag}"}`;
    const writes: Promise<void>[] = [];
    const queue = (p: Promise<void>): Promise<void> => (writes.push(p), p);
    /** The fields of sends `idx` that pass `keep`, grouped by hash: one write per hash. */
    const each = (idx: readonly number[], keep: (i: number) => boolean, write: (hash: string, fs: string[]) => Promise<void>): Promise<void> => {
      const g = byHash(hashes, at, fields, keep, idx);
      const all = Promise.all(g.hashes.map((h, k) => queue(write(h, g.fields[k] as string[])))).then(() => undefined);
      // Marked handled: a failure surfaces through `written()`; an unawaited hold must not crash the process.
      all.catch(() => undefined);
      return all;
    };
    return {
      state: (i) => {
        if (owned(i)) return MINE;
        if (isClaim(prior[i]!)) return prior[i]!.startsWith(sibling) ? SIBLING : CLAIMED;
        // `b`: the tag of the batch that recorded it (absent in records of older versions: treated as this batch's own).
        const { b, ...record } = JSON.parse(prior[i]!) as Recorded & { b?: string };
        return { kind: "recorded", record, echo: b !== undefined && b !== tag };
      },
      record: (i, rec) => queue(writer.set(hashes[at[i]], fields[i], tagged(rec), ttl.deliveredTtlSec)),
      recordAll: (idx, rec) => {
        const v = tagged(rec);
        return each(idx, () => true, (h, fs) => writer.setAll(h, fs, v, ttl.deliveredTtlSec));
      },
      hold: (idx, releaseId, due, now) => {
        const marker = heldMarker(releaseId);
        const ttlSec = Math.ceil((due - now) / 1000) + ttl.claimTtlSec;
        void each(idx, owned, (h, fs) => writer.hold(h, fs, marker, ttlSec));
      },
      release: (i) => writer.del(hashes[at[i]], fields[i]),
      written: () => Promise.all(writes).then(() => undefined),
      close: () => clearInterval(renewal),
    };
  }
}
