// Campaign actor: turns a segment notification into a campaign and expands it shard by shard in checkpointed chunks; pause, resume, cancel.
import { randomUUID } from "node:crypto";

import type { JsMsg } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";

import { addThrottle, type CampaignRecord, Campaigns, type Cursor } from "../lib/campaign/campaigns.js";
import { decodeJson, encodeJson } from "../lib/core/codec.js";
import type { Config } from "../lib/core/config.js";
import { SegmentUnknown, TopicUnknown } from "../lib/core/errors.js";
import type { Logger } from "../lib/core/log.js";
import { BROADCAST_LIVE_SUBJECT, BUCKET, CAMPAIGN_KEY, CONSUMER, laneClassOf, LEASE_KEY, MSGID, STREAM } from "../lib/core/subjects.js";
import type { FanChunk, Notification } from "../lib/core/types.js";
import { briefOf } from "../lib/core/types.js";
import { rangeIds, scanActive, scanIds, segmentSource } from "../lib/directory/segments.js";
import { Admission } from "../lib/flow/admission.js";
import { FanPublisher } from "../lib/flow/fan-publisher.js";
import { decodeAs, runLanes } from "../lib/flow/lanes.js";
import { Lease } from "../lib/flow/lease.js";
import { type Broadcast, broadcastsFor, isBroadcast } from "../lib/inapp/broadcasts.js";
import { inboxItemOf } from "../lib/inapp/inbox.js";
import type { Nats } from "../lib/infra/nats.js";
import type { Redis } from "../lib/infra/redis.js";

export interface CampaignDeps {
  cfg: Config;
  nats: Nats;
  redis: Redis;
  log: Logger;
  now?: () => number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Why an expansion stopped before the end. */
class Stop extends Error {}

/**
 * Starts the campaign actor.
 *
 * Intake: on every priority lane of NFX_INTAKE it takes segment notifications
 * (explicit ones are the router's), creates the campaign record in KV (once;
 * a redelivery finds it) and acks.
 *
 * Expansion: every campaign record that is running has one owner, the holder
 * of the lease `campaign.<id>` in nfx-leases. The owner walks each shard's
 * segment set in id order. Per chunk it first writes the shard's cursor with
 * the chunk's exact id range (compare-and-set on the cursor's revision, so a
 * stale owner's write fails), then publishes the chunk with message id
 * `fan:<id>:<shard>:<chunk>`. A restarted or new owner reads the cursor and
 * republishes the planned range under the same id (JetStream drops it if the
 * first got through), then goes on: no chunk lost, none doubled. With
 * `shard.reconcileChunks` on, each chunk is also checked until its shard
 * owner decided it, and published again if NFX_FAN lost it
 * (lib/flow/fan-publisher.ts). Pause stops
 * expansion within ~100 ms; cancel ends it (queued sends are dropped
 * downstream).
 */
export async function startCampaign(d: CampaignDeps): Promise<{ stop(): Promise<void> }> {
  const log = d.log.child({ actor: "campaign" });
  const now = d.now ?? Date.now;
  const owner = `${process.pid}-${randomUUID().slice(0, 8)}`;
  const campaigns = new Campaigns(await d.nats.kvm.open(BUCKET.campaigns), await d.nats.kvm.open(BUCKET.counters), now);
  const leases: KV = await d.nats.kvm.open(BUCKET.leases);
  const states = new Map<string, CampaignRecord>();
  const running = new Map<string, Promise<void>>();
  let stopping = false;
  const chunkSize = d.cfg.campaign.chunkSize;
  const admission = new Admission(d.nats, d.cfg, "campaign", log);
  const leaseMs = d.cfg.campaign.leaseMs;
  const broadcasts = broadcastsFor(d.cfg, d.redis);
  const fan = new FanPublisher(d.nats, d.redis, d.cfg, log);

  // 1. Intake: segment notifications become campaign records.
  const handle = async (m: JsMsg): Promise<void> => {
    const n = decodeAs<Notification>(m.data, "notification");
    if (!n.segment) return; // explicit recipients: the router's
    // A segment (or topic) deleted between acceptance and now: the campaign is recorded as cancelled, not retried forever.
    const src = await segmentSource(d.redis, n.segment, n.createdAt).catch((err: unknown) => {
      if (err instanceof SegmentUnknown || err instanceof TopicUnknown) return null;
      throw err;
    });
    let total = 0;
    if (src) for (let s = 0; s < d.cfg.cluster.shards; s++) total += await d.redis.zcard(src.key(s));
    if (!src) log.error({ campaign: n.id, segment: n.segment }, "segment no longer exists; campaign cancelled");
    // A large in-app-only audience: stored once as a broadcast (fan-out on read), nothing expanded. Stored before the record, so a redelivery after a crash finds both.
    const broadcast = src !== null && isBroadcast(n, total, d.cfg.ws.broadcastMinAudience);
    const b: Broadcast | null = broadcast ? { id: n.id, at: n.createdAt, expiresAt: n.expiresAt, category: n.category, segment: n.segment, item: inboxItemOf(n) } : null;
    if (b) await broadcasts.store(b);
    const rec = await campaigns.create({
      id: n.id, segment: n.segment, state: !src ? "cancelled" : b ? "expanded" : "running", createdAt: n.createdAt, asOf: n.createdAt,
      rate: n.campaign?.rate ?? d.cfg.campaign.defaultRate, shards: d.cfg.cluster.shards, total,
      brief: briefOf(n), ...(src?.filter ? { filter: src.filter } : {}), ...(b ? { path: "read" as const } : {}), updatedAt: now(),
    });
    // Every WebSocket gateway shows it live to the members it holds (core NATS: a gateway that misses it shows it at the next inbox read).
    if (b) d.nats.nc.publish(BROADCAST_LIVE_SUBJECT, encodeJson(b));
    log.info({ campaign: rec.id, segment: rec.segment, total: rec.total, path: rec.path ?? "write" }, b ? "broadcast stored" : "campaign created");
    states.set(rec.id, rec);
    void claim(rec.id);
  };

  // 2. Expansion of one campaign by the lease holder.
  const expand = async (id: string, lease: Lease): Promise<void> => {
    const state = (): CampaignRecord | undefined => states.get(id);
    const rec = state()!;
    const src = await segmentSource(d.redis, rec.segment, rec.asOf);
    // Token bucket over users/s: a chunk waits until the campaign has credit for it.
    let credit = 0;
    let last = now();
    const gate = async (): Promise<void> => {
      for (;;) {
        if (stopping || !lease.valid) throw new Stop("lease lost or stopping");
        const s = state()?.state;
        if (s === "cancelled") throw new Stop("cancelled");
        if (s === "paused") {
          await sleep(100);
          last = now();
          continue;
        }
        if (rec.rate <= 0) return;
        const t = now();
        credit = Math.min(rec.rate, credit + ((t - last) / 1000) * rec.rate);
        last = t;
        if (credit > 0) return;
        await sleep(Math.min(100, (-credit / rec.rate) * 1000 + 5));
      }
    };
    const shardQueue = Array.from({ length: rec.shards }, (_, s) => s);
    const paced = laneClassOf(rec.brief.priority) === "bulk";
    const worker = async (): Promise<void> => {
      for (let s = shardQueue.shift(); s !== undefined; s = shardQueue.shift()) {
        let { cur, rev } = await campaigns.cursor(id, s);
        while (!cur.done) {
          await gate();
          const t0 = performance.now();
          let users: string[];
          let planned: Cursor;
          let listed: number;
          const since = rec.filter?.activeSince;
          if (cur.to !== null) {
            // Replay the planned chunk exactly.
            users = since === undefined ? await rangeIds(d.redis, src.key(s), cur.after, cur.to) : (await scanActive(d.redis, s, cur.after, cur.to, 1_000_000, since)).ids;
            listed = users.length;
            planned = cur;
          } else {
            // "Active within N days" is filtered in Redis (one call), so shard actors read only members' records.
            let last: string | null;
            if (since === undefined) {
              users = await scanIds(d.redis, src.key(s), cur.after, chunkSize);
              last = users[users.length - 1] ?? null;
              listed = users.length;
            } else {
              const r = await scanActive(d.redis, s, cur.after, null, chunkSize, since);
              users = r.ids;
              last = r.last;
              listed = r.listed;
            }
            if (last === null) {
              rev = await campaigns.writeCursor(id, s, { ...cur, done: true }, rev);
              cur = { ...cur, done: true };
              break;
            }
            planned = { ...cur, to: last, scanned: cur.scanned + listed };
            rev = await campaigns.writeCursor(id, s, planned, rev);
          }
          credit -= listed;
          if (users.length > 0) {
            const chunk: FanChunk = { type: "fan_chunk", shard: s, chunk: planned.chunk, notification: rec.brief, users, ...(rec.filter ? { filter: rec.filter } : {}) };
            await fan.publish(chunk, MSGID.fan(id, s, planned.chunk));
          }
          // Bulk-class campaigns wait as admission control says while urgent latency is high; the hold is kept in the cursor for status.
          let throttle = cur.throttle;
          if (paced) {
            const factor = admission.factor;
            const waited = await admission.pace(performance.now() - t0);
            if (waited > 0) throttle = addThrottle(throttle, waited, factor, now());
          }
          cur = { chunk: planned.chunk + 1, after: planned.to, to: null, done: false, scanned: planned.scanned, members: (cur.members ?? 0) + users.length, ...(throttle ? { throttle } : {}) };
          rev = await campaigns.writeCursor(id, s, cur, rev);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(d.cfg.campaign.shardConcurrency, rec.shards) }, worker));
    await campaigns.setState(id, "expanded", "running");
    log.info({ campaign: id }, "campaign expanded");
  };

  // 3. Ownership: take the lease of a running campaign and expand it; give it back at the end.
  const claim = async (id: string): Promise<void> => {
    if (stopping || running.has(id)) return;
    const rec = states.get(id);
    if (!rec || (rec.state !== "running" && rec.state !== "paused")) return;
    const lease = await Lease.acquire(leases, LEASE_KEY.campaign(id), owner, leaseMs, now).catch(() => null);
    if (!lease) return;
    const task = expand(id, lease)
      .catch((err) => {
        if (err instanceof Stop) log.info({ campaign: id, why: err.message }, "expansion stopped");
        else log.warn({ err, campaign: id }, "expansion failed; will retry");
      })
      .finally(async () => {
        await lease.release();
        running.delete(id);
      });
    running.set(id, task);
  };

  // Every campaign record (not cursors: keys with one token), live.
  const watch = await campaigns.kv.watch({ key: CAMPAIGN_KEY.records });
  void (async () => {
    for await (const e of watch) {
      if (e.operation !== "PUT") {
        states.delete(e.key);
        continue;
      }
      const rec = decodeJson<CampaignRecord>(e.value);
      states.set(rec.id, rec);
      // A cancelled broadcast leaves every inbox.
      if (rec.path === "read" && rec.state === "cancelled") void broadcasts.withdraw(rec.id).catch((err) => log.warn({ err, campaign: rec.id }, "broadcast withdrawal failed"));
      void claim(rec.id);
    }
  })();
  // Campaigns whose owner died: their lease expires, somebody claims them.
  const sweeper = setInterval(() => {
    for (const id of states.keys()) void claim(id);
  }, Math.max(250, leaseMs / 2));
  // Expired broadcasts are deleted (inbox reads already skip them).
  const pruner = setInterval(() => void broadcasts.prune(now()).catch((err) => log.warn({ err }, "broadcast pruning failed")), 60_000);
  pruner.unref();

  const lanes = runLanes({
    js: d.nats.js, stream: STREAM.intake, consumer: CONSUMER.campaign, concurrency: 4, prefetch: 16,
    ackWaitSec: d.cfg.streams.ackWaitSec, log, handle,
  });
  await lanes.ready;
  log.info({ owner }, "campaign ready");
  return {
    async stop() {
      stopping = true;
      clearInterval(sweeper);
      clearInterval(pruner);
      admission.close();
      await lanes.stop();
      watch.stop();
      await Promise.all(running.values());
      fan.stop();
    },
  };
}
