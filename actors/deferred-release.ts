// Deferred-release actor: holds chunks deferred by quiet hours and re-emits them to their shard when the quiet hours end.
import { policyClock } from "../lib/core/clock.js";
import { CONSUMER, MSGID, STREAM } from "../lib/core/subjects.js";
import type { DeferredChunk, FanChunk } from "../lib/core/types.js";
import { FanPublisher } from "../lib/flow/fan-publisher.js";
import { type HoldActorDeps, holdUntilDue, ReleasePacer } from "../lib/flow/hold-until-due.js";
import type { Redis } from "../lib/infra/redis.js";

export type DeferredReleaseDeps = HoldActorDeps & { redis: Redis };

/**
 * Consumes NFX_DEFER. A chunk waits until its release time
 * (lib/flow/hold-until-due.ts), then is re-emitted to `nfx.fan.<prio>.<shard>`
 * marked `release` (message id `rel:...`, so a crash before the ack re-emits
 * the same id and JetStream drops the copy). The shard actor decides its users
 * again: everything but quiet hours is re-checked at release. A campaign's releases are paced at its rate
 * (per process: {@link ReleasePacer}).
 */
export async function startDeferredRelease(d: DeferredReleaseDeps): Promise<{ stop(): Promise<void> }> {
  const log = d.log.child({ actor: "deferred-release" });
  // Release times are instants of the policy clock (the shard actor's decisions), wall time but in time-scaled tests.
  const clock = policyClock();
  const waves = new ReleasePacer();
  const fan = new FanPublisher(d.nats, d.redis, d.cfg, log);
  const held = await holdUntilDue<DeferredChunk>({
    nats: d.nats, log, stream: STREAM.defer, consumer: CONSUMER.deferred, type: "deferred_chunk", now: d.now ?? clock, scale: d.now ? 1 : clock.scale,
    dueAt: (h) => h.until,
    // A campaign's waves go out at its rate (`campaign.rate`, else `campaign.defaultRate`; users per second), like its expansion.
    pace: (h) => waves.wait(h.chunk.notification.id, h.chunk.users.length, h.chunk.notification.segment !== undefined ? (h.chunk.notification.campaign?.rate ?? d.cfg.campaign.defaultRate) : 0, Date.now()),
    release: (h) => {
      const c = h.chunk;
      const chunk: FanChunk = { ...c, release: h.until };
      return fan.publish(chunk, MSGID.released(c.notification.id, c.shard, c.chunk, h.until));
    },
  });
  log.info("deferred-release ready");
  return {
    async stop() {
      await held.stop();
      fan.stop();
    },
  };
}
