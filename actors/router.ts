// Router actor: splits an accepted notification's explicit recipients by shard into fan chunks on NFX_FAN, and a topic notification's endpoints into webhook send batches.
import type { JsMsg } from "@nats-io/jetstream";

import { encode } from "../lib/core/codec.js";
import type { Config } from "../lib/core/config.js";
import type { Logger } from "../lib/core/log.js";
import { groupByShard } from "../lib/core/shard-hash.js";
import { CONSUMER, MSGID, STREAM, webhookSendSubject } from "../lib/core/subjects.js";
import { briefOf, type FanChunk, type Notification, type NotificationBrief, type SendBatch } from "../lib/core/types.js";
import { topicEndpoints } from "../lib/directory/topics.js";
import { FanPublisher } from "../lib/flow/fan-publisher.js";
import { decodeAs, runLanes } from "../lib/flow/lanes.js";
import { stageItems } from "../lib/infra/metrics.js";
import type { Nats } from "../lib/infra/nats.js";
import type { Redis } from "../lib/infra/redis.js";

export interface RouterDeps {
  cfg: Config;
  nats: Nats;
  redis: Redis;
  log: Logger;
}

/**
 * Groups `recipients` by shard and cuts each shard's list into chunks of at
 * most `chunkSize`, preserving input order within a shard. Pure; the chunk
 * numbering is deterministic so replays produce the same message ids.
 */
export function planChunks(recipients: readonly string[], shards: number, chunkSize: number): { shard: number; chunk: number; users: string[] }[] {
  const byShard = groupByShard(recipients, shards);
  const out: { shard: number; chunk: number; users: string[] }[] = [];
  for (const s of [...byShard.keys()].sort((a, b) => a - b)) {
    const users = byShard.get(s)!;
    for (let i = 0, c = 0; i < users.length; i += chunkSize, c++) out.push({ shard: s, chunk: c, users: users.slice(i, i + chunkSize) });
  }
  return out;
}

/**
 * Publishes notification `brief`'s deliveries to the endpoints `endpoints` (sorted) as send batches of at most
 * `batchSize` per endpoint partition (`shardOf(endpoint, partitions)`), on that partition's lane of
 * NFX_SEND_WEBHOOK (message ids `wh:<nid>:<partition>:<part>`). Resolves with the number of batches once JetStream
 * stored every one.
 */
export async function publishWebhookBatches(nats: Nats, brief: NotificationBrief, endpoints: readonly string[], batchSize: number, partitions: number): Promise<number> {
  const parts: Promise<unknown>[] = [];
  for (const [partition, eps] of [...groupByShard(endpoints, partitions)].sort(([a], [b]) => a - b)) {
    for (let i = 0, part = 0; i < eps.length; i += batchSize, part++) {
      const batch: SendBatch = {
        type: "send_batch", channel: "webhook", shard: 0, notifications: { [brief.id]: brief },
        sends: eps.slice(i, i + batchSize).map((ep) => ({ nid: brief.id, user: ep, device: ep, token: "" })),
      };
      parts.push(nats.js.publish(webhookSendSubject(brief.priority, partition), encode(batch), { msgID: MSGID.webhooks(brief.id, partition, part) }));
    }
  }
  await Promise.all(parts);
  return parts.length;
}

/**
 * Starts the router on every priority lane of NFX_INTAKE. For each
 * notification it publishes all fan chunks (deterministic message ids) and,
 * for a topic notification, the webhook batches of the topic's endpoints, and
 * acks the intake message only after every one is acknowledged by JetStream
 * (and, with `shard.reconcileChunks` on, checks each chunk until decided: lib/flow/fan-publisher.ts).
 * A topic's or segment's users are the campaign actor's.
 */
export async function startRouter(d: RouterDeps): Promise<{ stop(): Promise<void> }> {
  const log = d.log.child({ actor: "router" });
  const fan = new FanPublisher(d.nats, d.redis, d.cfg, log);
  const handle = async (m: JsMsg): Promise<void> => {
    const n = decodeAs<Notification>(m.data, "notification");
    const brief = briefOf(n);
    if (n.topic) {
      const eps = await topicEndpoints(d.redis, n.topic);
      const batches = await publishWebhookBatches(d.nats, brief, eps, d.cfg.endpoints.batchSize, d.cfg.endpoints.partitions);
      if (batches) log.debug({ nid: n.id, topic: n.topic, endpoints: eps.length, batches }, "topic endpoints routed");
    }
    if (n.segment) return; // segment targets (a topic's users too) are the campaign actor's
    const plan = planChunks(n.recipients, d.cfg.cluster.shards, d.cfg.router.chunkSize);
    await Promise.all(
      plan.map((p) => {
        const chunk: FanChunk = { type: "fan_chunk", shard: p.shard, chunk: p.chunk, notification: brief, users: p.users };
        return fan.publish(chunk, MSGID.fan(n.id, p.shard, p.chunk));
      }),
    );
    stageItems.inc({ stage: "router" }, plan.length);
    log.debug({ nid: n.id, chunks: plan.length }, "routed");
  };
  const lanes = runLanes({
    js: d.nats.js, stream: STREAM.intake, consumer: CONSUMER.router, concurrency: 8, prefetch: 32,
    ackWaitSec: d.cfg.streams.ackWaitSec, log, handle,
  });
  await lanes.ready;
  log.info("router ready");
  return {
    async stop() {
      await lanes.stop();
      fan.stop();
    },
  };
}
