// Publishes fan chunks on NFX_FAN and, on replicated streams, checks each one until its shard owner has decided it.
import { encode } from "../core/codec.js";
import type { Config } from "../core/config.js";
import { fanDecidedKey } from "../core/keys.js";
import type { Logger } from "../core/log.js";
import { fanSubject, MSGID, STREAM } from "../core/subjects.js";
import type { FanChunk } from "../core/types.js";
import type { Nats } from "../infra/nats.js";
import type { Redis } from "../infra/redis.js";
import type { PubAck } from "./js-publisher.js";
import { jsPublisher, publishChecked, type Publisher, reconcileWanted, StreamReconciler } from "./stream-reconciler.js";

/** Whether fan chunks are checked end to end under `cfg` (`shard.reconcileChunks`; auto: on replicated streams). */
export const chunksReconciled = (cfg: Config): boolean => reconcileWanted(cfg.shard.reconcileChunks, cfg.streams.replicas);

/**
 * The fan chunk publisher of one process (router, campaign actor, quiet-hours
 * release). {@link FanPublisher.publish} stores a chunk on its shard's lane of
 * NFX_FAN under a deterministic message id, as before. With
 * `shard.reconcileChunks` on, it also hands the chunk to a
 * {@link StreamReconciler}: the chunk is done with once its shard owner set
 * {@link fanDecidedKey} (actors/user-shard.ts, after the chunk's outputs are
 * published), and published again under `<id>~r1` (…`~r5`) when it is neither
 * decided nor in NFX_FAN (the stream lost it after a leader kill). A chunk
 * published again yields the same send, receipt and trail message ids as the
 * first, so a copy of one that was decided after all changes nothing.
 */
export class FanPublisher {
  private readonly pub: Publisher;
  /** The reconciler, or null when chunks are not checked. */
  readonly reconciler: StreamReconciler | null;

  constructor(nats: Nats, redis: Redis, cfg: Config, log: Logger, opts: { tickMs?: number; verifyAfterMs?: number } = {}) {
    this.pub = jsPublisher(nats);
    this.reconciler = chunksReconciled(cfg)
      ? new StreamReconciler({ jsm: nats.jsm, redis, pub: this.pub, log, streams: [STREAM.fan], maxBytes: cfg.shard.reconcileMaxMb * 1024 * 1024, ...opts })
      : null;
  }

  /** Publishes `chunk` under `msgId`; resolves with JetStream's ack (a duplicate's too), rejects as the publish does. */
  publish(chunk: FanChunk, msgId: string): Promise<PubAck> {
    const keys = this.reconciler ? [fanDecidedKey(chunk.shard, MSGID.original(msgId))] : null;
    return publishChecked(this.pub, this.reconciler, fanSubject(chunk.notification.priority, chunk.shard), msgId, encode(chunk), keys);
  }

  /** Stops checking (chunks held are let go). */
  stop(): void {
    this.reconciler?.stop();
  }
}
