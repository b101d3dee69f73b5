// A decided chunk's outputs: send batches per channel, deferrals, receipts and trail records, each with its subject and deterministic message id.
import { CHANNELS, deferSubject, MSGID, receiptSubject, sendSubject, trailSubject } from "../core/subjects.js";
import type { DeferredChunk, FanChunk, ReceiptBatch, SendBatch } from "../core/types.js";
import type { ChunkDecision } from "./chunk-decision.js";
import type { ChunkTrails } from "./trails.js";

/** One message to publish: where, under which message id, and what (encoded by the publisher). */
export interface ChunkOutput {
  subject: string;
  /** Derived from the chunk's fan id only, so a replayed chunk republishes the same ids (docs/architecture.md, "Acks, ordering and ownership", rule 2). */
  msgId: string;
  body: SendBatch | DeferredChunk | ReceiptBatch | ChunkTrails;
}

/** What the outputs carry besides the chunk and its decision. */
export interface OutputContext {
  /** When the chunk was decided on the policy clock (lib/core/clock.ts): what its trails show. */
  decidedAt: number;
  /**
   * The same moment on the wall clock, written on every send batch: gateways re-check the users whose preferences
   * changed at or after it (their changes are stamped with wall time). Equal to `decidedAt` unless a test clock runs.
   */
  stampedAt: number;
  /** The shard owner and its lease revision, written on every send batch. */
  owner: string;
  epoch: number;
  /** Sends per send batch (`shard.sendBatchSize`). */
  sendBatchSize: number;
}

/** The fan message id of a chunk: its own for a release after quiet hours (`MSGID.released`), else `MSGID.fan`. */
export const fanIdOf = (c: FanChunk): string =>
  c.release !== undefined ? MSGID.released(c.notification.id, c.shard, c.chunk, c.release) : MSGID.fan(c.notification.id, c.shard, c.chunk);

/**
 * Everything a decided chunk publishes, in publishing order: for each channel
 * (in `CHANNELS` order) its sends cut into batches of `sendBatchSize`
 * (`snd:<fan id>:<channel>:<part>`); one deferred chunk per release time
 * (`dfr:<fan id>:<until>`); one receipt batch when there is anything to count
 * (`dec:<fan id>`); and the trails when the decision kept them
 * (`trl:<fan id>`). Pure: the same chunk, decision and context give the same
 * outputs, which is what lets a failed publish be retried with the same
 * decision. Never throws; the caller fences and publishes.
 */
export function chunkOutputs(chunk: FanChunk, dec: ChunkDecision, o: OutputContext): ChunkOutput[] {
  const n = chunk.notification;
  const fanId = fanIdOf(chunk);
  const out: ChunkOutput[] = [];
  for (const ch of CHANNELS) {
    const all = dec.sends[ch];
    for (let i = 0, part = 0; i < all.length; i += o.sendBatchSize, part++) {
      const batch: SendBatch = {
        type: "send_batch", channel: ch, shard: chunk.shard, notifications: { [n.id]: n }, sends: all.slice(i, i + o.sendBatchSize),
        decidedAt: o.stampedAt, owner: o.owner, epoch: o.epoch,
      };
      out.push({ subject: sendSubject(ch, n.priority), msgId: MSGID.send(fanId, ch, part), body: batch });
    }
  }
  for (const [until, users] of dec.deferred) {
    const held: DeferredChunk = { type: "deferred_chunk", until, chunk: { type: "fan_chunk", shard: chunk.shard, chunk: chunk.chunk, notification: n, users } };
    out.push({ subject: deferSubject(n.priority, chunk.shard), msgId: MSGID.deferred(fanId, until), body: held });
  }
  const released = chunk.release !== undefined ? chunk.users.length : 0;
  if (dec.receipts.length > 0 || dec.decided > 0 || released > 0 || dec.deferred.size > 0) {
    const rb: ReceiptBatch = {
      type: "receipts", nid: n.id, stage: "shard", entries: dec.receipts, decided: dec.decided,
      ...(dec.queued ? { queued: dec.queued } : {}), ...(dec.deferredCount ? { deferred: dec.deferredCount } : {}), ...(released ? { released, releasedAt: chunk.release } : {}),
      ...(dec.deferred.size ? { waves: Object.fromEntries([...dec.deferred].map(([until, users]) => [String(until), users.length])) } : {}),
    };
    out.push({ subject: receiptSubject(n.id), msgId: MSGID.decided(fanId), body: rb });
  }
  if (dec.trails) {
    const t: ChunkTrails = { type: "trails", nid: n.id, shard: chunk.shard, fan: fanId, at: o.decidedAt, users: chunk.users, idx: dec.trails.idx, trails: dec.trails.trails };
    out.push({ subject: trailSubject(n.id, chunk.shard), msgId: MSGID.trail(fanId), body: t });
  }
  return out;
}
