// Shard checkpoints in JetStream KV: consumer positions, dedup window and token buckets, written by compare-and-set so a stale owner's write fails.
import type { KV } from "@nats-io/kv";

import { decode, encodePlain } from "../core/codec.js";
import { Fenced } from "../core/errors.js";
import { checkpointKey, checkpointPartKey, checkpointPartsOf, CLASS_PRIORITIES, type LaneClass, legacyCheckpointKey, PRIORITIES, type Priority } from "../core/subjects.js";

/** A shard's state as of stream positions `pos` (last fan-chunk sequence fully handled, per lane). */
export interface Checkpoint {
  owner: string;
  /** Lease revision of the owner that wrote it. */
  epoch: number;
  /** Wall time of the snapshot (buckets refill by the time passed since). */
  at: number;
  pos: Record<Priority, number>;
  /** The dedup window, packed by DedupWindow.pack (key hash, expiry ms). */
  dedup: Buffer;
  /** The token buckets, packed by RateBuckets.pack (key hash, ms until full). */
  buckets: Buffer;
}

/** Values larger than this are stored in parts (a KV value is one NATS message). */
const PART_BYTES = 512 * 1024;

interface Manifest {
  owner: string;
  epoch: number;
  at: number;
  pos: Record<Priority, number>;
  /** Inline body (small checkpoints) or the part keys' generation and count. */
  body?: Uint8Array;
  gen?: string;
  parts?: number;
}

/** The positions of a shard no owner has checkpointed: from the start of every lane. */
export const startPositions = (): Record<Priority, number> => Object.fromEntries(PRIORITIES.map((p) => [p, 0])) as Record<Priority, number>;

/**
 * Reads and writes one bucket's shard checkpoints. A write names the
 * revision its owner last read or wrote; any other write in between (a new
 * owner's takeover) makes it fail with {@link Fenced}. Large states are split
 * into parts written first under a fresh generation, then published by the
 * manifest's compare-and-set; a failed manifest leaves its parts to be deleted.
 */
export class CheckpointStore {
  /** `cls`: the lane class whose checkpoints this store reads and writes (each class of a shard has its own owner and checkpoint). */
  constructor(private readonly kv: KV, private readonly cls: LaneClass) {}

  /**
   * The checkpoint of this class's lanes of `shard`, the revision to name on the next write (0: none yet), and its parts'
   * generation. A shard checkpointed before shards were owned per lane class is read from its old key once: this
   * class takes its own lanes' positions and the dedup window (its keys name notifications, each of one class).
   */
  async load(shard: number): Promise<{ cp: Checkpoint | null; rev: number; gen?: string }> {
    const e = await this.kv.get(checkpointKey(this.cls, shard));
    if (e && e.operation === "PUT") {
      const cp = await this.read(checkpointKey(this.cls, shard), e.value);
      return { cp: cp.cp, rev: e.revision, ...(cp.gen ? { gen: cp.gen } : {}) };
    }
    const old = await this.kv.get(legacyCheckpointKey(shard));
    if (!old || old.operation !== "PUT") return { cp: null, rev: e?.revision ?? 0 };
    const { cp } = await this.read(legacyCheckpointKey(shard), old.value);
    const own = new Set(CLASS_PRIORITIES[this.cls]);
    for (const p of PRIORITIES) if (!own.has(p)) cp.pos[p] = 0;
    return { cp, rev: e?.revision ?? 0 };
  }

  private async read(key: string, value: Uint8Array): Promise<{ cp: Checkpoint; gen?: string }> {
    const m = decode<Manifest>(value);
    let body: Buffer;
    if (m.body) body = Buffer.from(m.body);
    else {
      const parts: Buffer[] = [];
      for (let i = 0; i < (m.parts ?? 0); i++) {
        const p = await this.kv.get(checkpointPartKey(key, m.gen!, i));
        if (!p || p.operation !== "PUT") throw new Error(`checkpoint ${key}: part ${i} of ${m.gen} is missing`);
        parts.push(Buffer.from(p.value));
      }
      body = Buffer.concat(parts);
    }
    // Two packed sections back to back: dedup window, then buckets.
    const split = 4 + body.readUInt32LE(0) * 16;
    return { cp: { owner: m.owner, epoch: m.epoch, at: m.at, pos: { ...startPositions(), ...m.pos }, dedup: body.subarray(0, split), buckets: body.subarray(split) }, ...(m.gen ? { gen: m.gen } : {}) };
  }

  /** Writes `cp` if the key is still at `rev`; resolves the new revision. Throws {@link Fenced} if someone else wrote since. */
  async write(shard: number, cp: Checkpoint, rev: number, prevGen?: string): Promise<{ rev: number; gen?: string }> {
    const body = Buffer.concat([cp.dedup, cp.buckets]);
    const key = checkpointKey(this.cls, shard);
    const m: Manifest = { owner: cp.owner, epoch: cp.epoch, at: cp.at, pos: cp.pos };
    let gen: string | undefined;
    if (body.length <= PART_BYTES) m.body = body;
    else {
      const n = Math.ceil(body.length / PART_BYTES);
      // The generation names its part count, so dropping them needs no key listing (a consumer created through the meta leader).
      gen = `g${cp.epoch}x${Date.now().toString(36)}p${n}`;
      await Promise.all(Array.from({ length: n }, (_, i) => this.kv.put(checkpointPartKey(key, gen!, i), body.subarray(i * PART_BYTES, (i + 1) * PART_BYTES))));
      m.gen = gen;
      m.parts = n;
    }
    let next: number;
    try {
      next = rev === 0 ? await this.kv.create(key, encodePlain(m)) : await this.kv.update(key, encodePlain(m), rev);
    } catch (err) {
      if (gen) void this.dropParts(key, gen);
      throw new Fenced(`checkpoint ${key} was written by another owner (expected revision ${rev})`, { cause: err });
    }
    if (prevGen && prevGen !== gen) void this.dropParts(key, prevGen);
    return { rev: next, ...(gen ? { gen } : {}) };
  }

  /** Deletes the parts of generation `gen` (best effort): by the count it names, or listed for a generation written before it did. */
  private async dropParts(key: string, gen: string): Promise<void> {
    const n = /p(\d+)$/.exec(gen);
    if (n) {
      await Promise.all(Array.from({ length: Number(n[1]) }, (_, i) => this.kv.purge(checkpointPartKey(key, gen, i)).catch(() => undefined)));
      return;
    }
    const keys = await this.kv.keys(checkpointPartsOf(key, gen));
    for await (const k of keys) await this.kv.purge(k).catch(() => undefined);
  }
}
