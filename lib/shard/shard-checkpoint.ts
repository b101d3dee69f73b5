// Shard checkpoints in JetStream KV: consumer positions, dedup window and token buckets, written by compare-and-set so a stale owner's write fails.
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";

import { decode, encodePlain } from "../core/codec.js";
import { Fenced } from "../core/errors.js";
import { checkpointKey, checkpointPartKey, checkpointPartsOf, CLASS_PRIORITIES, type LaneClass, legacyCheckpointKey, PRIORITIES, type Priority } from "../core/subjects.js";
import { checkpointBytes } from "../infra/metrics.js";

/** Packed state: the dedup window (DedupWindow.pack: key hash, expiry ms) and the token buckets (RateBuckets.pack: key hash, ms until full) as of wall time `at`. */
export interface StateSection {
  at: number;
  dedup: Buffer;
  buckets: Buffer;
}

/** A shard's state as of stream positions `pos` (last fan-chunk sequence fully handled, per lane). */
export interface Checkpoint {
  owner: string;
  /** Lease revision of the owner that wrote it. */
  epoch: number;
  /** Wall time of the last write. */
  at: number;
  pos: Record<Priority, number>;
  /** When the stream stored the chunk at each lane's `pos` (µs; 0: not known, a checkpoint older than this field). */
  posAt: Record<Priority, number>;
  /** The full state, then each change written since, oldest first: restore them in this order (a later entry replaces an earlier one). */
  sections: StateSection[];
  /** The held digests as of `pos` (DigestBook.pack), written whole with every write. */
  digests?: Uint8Array;
}

/** One checkpoint write: the full state (`full`), or only what changed since the last write (packChanges). */
export interface CheckpointWrite extends StateSection {
  owner: string;
  epoch: number;
  pos: Record<Priority, number>;
  posAt: Record<Priority, number>;
  full: boolean;
  /** The held digests, whole (small: notifications waiting for their window), kept in the manifest with the positions. */
  digests?: Buffer;
}

/** What an owner keeps between writes: the revision its next write names (0: none yet) and the stored parts it references. */
export interface CheckpointHead {
  rev: number;
  /** Where the full state is stored in parts (absent when inline: a small state, always written whole). */
  base?: { gen: string; parts: number; at: number };
  /** Bytes of the full state. */
  baseBytes: number;
  /** Changes written since the full state, oldest first. */
  deltas: DeltaRef[];
}

interface DeltaRef {
  gen: string;
  parts: number;
  at: number;
  bytes: number;
}

/** Parts are at most this large (a KV value is one NATS message). */
const PART_BYTES = 512 * 1024;
/** At most this many change parts on top of a full state (each is one more read at a takeover). */
const MAX_DELTAS = 32;

interface Manifest {
  owner: string;
  epoch: number;
  at: number;
  pos: Record<Priority, number>;
  posAt?: Record<Priority, number>;
  /** Inline body (small checkpoints) or the part keys' generation and count. */
  body?: Uint8Array;
  gen?: string;
  parts?: number;
  /** When the full state was written (`at` of the first section; `at` when absent). */
  baseAt?: number;
  /** Changes written since the full state, oldest first. */
  deltas?: { gen: string; parts: number; at: number }[];
  /** The held digests (written whole every time, with the positions they belong to). */
  digests?: Uint8Array;
}

/** The positions of a shard no owner has checkpointed: from the start of every lane. */
export const startPositions = (): Record<Priority, number> => Object.fromEntries(PRIORITIES.map((p) => [p, 0])) as Record<Priority, number>;

/** A head with nothing stored yet. */
export const emptyHead = (): CheckpointHead => ({ rev: 0, baseBytes: 0, deltas: [] });

/** Splits a stored body into its two packed sections: dedup window, then buckets. */
function sectionOf(body: Buffer, at: number): StateSection {
  const split = 4 + body.readUInt32LE(0) * 16;
  return { at, dedup: body.subarray(0, split), buckets: body.subarray(split) };
}

/**
 * Reads and writes one bucket's shard checkpoints. A write names the
 * revision its owner last read or wrote; any other write in between (a new
 * owner's takeover) makes it fail with {@link Fenced}. Large states are split
 * into parts written first under a fresh generation, then published by the
 * manifest's compare-and-set; a failed manifest leaves its parts to be deleted.
 *
 * Incremental: a write may carry only what changed since the last one; it is
 * stored as parts of its own and listed in the manifest after the full state.
 * {@link wantsFull} says when the next write should be whole again (a small
 * state, 32 changes, or changes as large as the full state), which drops the
 * older parts. So a shard holding millions of entries writes per second what
 * it changed, not everything it holds.
 */
export class CheckpointStore {
  /**
   * `cls`: the lane class whose checkpoints this store reads and writes (each class of a shard has its own owner and
   * checkpoint). `inlineBytes` (`shard.checkpointInlineKb`): a state up to this size is written whole, inline in the
   * manifest (one KV write); larger ones go in parts, with changes on top.
   */
  constructor(private readonly kv: KV, private readonly cls: LaneClass, private readonly inlineBytes = 64 * 1024) {}

  /**
   * The checkpoint of this class's lanes of `shard` and the head to write on from. A shard checkpointed before shards
   * were owned per lane class is read from its old key once: this class takes its own lanes' positions and the dedup
   * window (its keys name notifications, each of one class).
   */
  async load(shard: number): Promise<{ cp: Checkpoint | null; head: CheckpointHead }> {
    const e = await this.kv.get(checkpointKey(this.cls, shard));
    if (e && e.operation === "PUT") {
      const { cp, head } = await this.read(checkpointKey(this.cls, shard), e.value);
      return { cp, head: { ...head, rev: e.revision } };
    }
    const head = { ...emptyHead(), rev: e?.revision ?? 0 };
    const old = await this.kv.get(legacyCheckpointKey(shard));
    if (!old || old.operation !== "PUT") return { cp: null, head };
    const { cp } = await this.read(legacyCheckpointKey(shard), old.value);
    const own = new Set(CLASS_PRIORITIES[this.cls]);
    for (const p of PRIORITIES) if (!own.has(p)) cp.pos[p] = cp.posAt[p] = 0;
    return { cp, head };
  }

  /** Whether the next write from `head` should be the full state (a write of changes on a head without a full state in parts is written whole anyway). */
  static wantsFull(head: CheckpointHead): boolean {
    const deltaBytes = head.deltas.reduce((a, d) => a + d.bytes, 0);
    return !head.base || head.deltas.length >= MAX_DELTAS || deltaBytes >= head.baseBytes;
  }

  private async readParts(key: string, gen: string, parts: number): Promise<Buffer> {
    const out = await Promise.all(
      Array.from({ length: parts }, async (_, i) => {
        const p = await this.kv.get(checkpointPartKey(key, gen, i));
        if (!p || p.operation !== "PUT") throw new Error(`checkpoint ${key}: part ${i} of ${gen} is missing`);
        return Buffer.from(p.value);
      }),
    );
    return Buffer.concat(out);
  }

  private async read(key: string, value: Uint8Array): Promise<{ cp: Checkpoint; head: CheckpointHead }> {
    const m = decode<Manifest>(value);
    const body = m.body ? Buffer.from(m.body) : await this.readParts(key, m.gen!, m.parts ?? 0);
    const sections = [sectionOf(body, m.baseAt ?? m.at)];
    const deltas: DeltaRef[] = [];
    for (const d of m.deltas ?? []) {
      const b = await this.readParts(key, d.gen, d.parts);
      sections.push(sectionOf(b, d.at));
      deltas.push({ ...d, bytes: b.length });
    }
    const cp: Checkpoint = { owner: m.owner, epoch: m.epoch, at: m.at, pos: { ...startPositions(), ...m.pos }, posAt: { ...startPositions(), ...m.posAt }, sections, ...(m.digests ? { digests: m.digests } : {}) };
    return { cp, head: { rev: 0, ...(m.gen ? { base: { gen: m.gen, parts: m.parts ?? 0, at: m.baseAt ?? m.at } } : {}), baseBytes: body.length, deltas } };
  }

  /** Stores `body` as parts under a new generation (`kind` g: full state, d: changes); resolves the generation and part count. */
  private async writeParts(key: string, kind: "g" | "d", epoch: number, body: Buffer): Promise<{ gen: string; parts: number }> {
    const n = Math.max(1, Math.ceil(body.length / PART_BYTES));
    // The generation names its part count, so dropping them needs no key listing (a consumer created through the meta leader).
    const gen = `${kind}${epoch}x${Date.now().toString(36)}${Math.floor(Math.random() * 1296).toString(36)}p${n}`;
    await Promise.all(Array.from({ length: n }, (_, i) => this.kv.put(checkpointPartKey(key, gen, i), body.subarray(i * PART_BYTES, (i + 1) * PART_BYTES))));
    return { gen, parts: n };
  }

  /**
   * Writes `w` if the key is still at `head.rev`: the full state (dropping the parts `head` referenced once the new
   * manifest is in), or the changes on top of `head`'s full state. Resolves the new head. Throws {@link Fenced} if
   * someone else wrote since (the parts this write stored are dropped); any other failure is thrown as it is, leaving
   * the parts (whether the manifest was written is not known).
   */
  async write(shard: number, w: CheckpointWrite, head: CheckpointHead): Promise<CheckpointHead> {
    const body = Buffer.concat([w.dedup, w.buckets]);
    const key = checkpointKey(this.cls, shard);
    const m: Manifest = { owner: w.owner, epoch: w.epoch, at: w.at, pos: w.pos, posAt: w.posAt, ...(w.digests && w.digests.length > 1 ? { digests: w.digests } : {}) };
    let written: string | undefined;
    let next: Omit<CheckpointHead, "rev">;
    if (!w.full && !head.base) throw new Error(`checkpoint ${key}: changes written without a full state in parts (ask wantsFull first)`);
    if (w.full) {
      if (body.length <= this.inlineBytes) m.body = body;
      else {
        const p = await this.writeParts(key, "g", w.epoch, body);
        written = m.gen = p.gen;
        m.parts = p.parts;
      }
      next = { ...(m.gen ? { base: { gen: m.gen, parts: m.parts!, at: w.at } } : {}), baseBytes: body.length, deltas: [] };
    } else {
      const base = head.base!;
      const p = await this.writeParts(key, "d", w.epoch, body);
      written = p.gen;
      const deltas = [...head.deltas, { gen: p.gen, parts: p.parts, at: w.at, bytes: body.length }];
      Object.assign(m, { gen: base.gen, parts: base.parts, baseAt: base.at, deltas: deltas.map(({ gen, parts, at }) => ({ gen, parts, at })) });
      next = { base, baseBytes: head.baseBytes, deltas };
    }
    let rev: number;
    try {
      rev = head.rev === 0 ? await this.kv.create(key, encodePlain(m)) : await this.kv.update(key, encodePlain(m), head.rev);
    } catch (err) {
      // Only a revision conflict says the manifest was not written: then this write's parts are dropped. Any other failure
      // (a reply lost in a leader election) leaves them, as the manifest may have been written and name them.
      const conflict = err instanceof JetStreamApiError && (err.code === JetStreamApiCodes.StreamWrongLastSequence || err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown);
      if (!conflict) throw err;
      if (written) void this.dropParts(key, written);
      throw new Fenced(`checkpoint ${key} was written by another owner (expected revision ${head.rev})`, { cause: err });
    }
    checkpointBytes.inc({ kind: w.full ? "full" : "changes" }, body.length);
    if (next.deltas.length === 0) for (const g of [head.base?.gen, ...head.deltas.map((d) => d.gen)]) if (g && g !== m.gen) void this.dropParts(key, g);
    return { rev, ...next };
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
