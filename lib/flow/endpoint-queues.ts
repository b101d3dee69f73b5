// Per-endpoint webhook delivery queues in Redis: deliveries of one endpoint in publish order, its state (pending, attempts, next attempt, paused), its recent history, and the lease of the process delivering to it.
import type { Config } from "../core/config.js";
import {
endpointDoneKey, endpointHistoryKey, endpointItemsKey, endpointLeaseKey, endpointQueueKey,   ENDPOINTS_ACTIVE_KEY, endpointStateKey, webhookPayloadKey,
} from "../core/keys.js";
import type { NotificationBrief } from "../core/types.js";
import { isCluster, type Redis } from "../infra/redis.js";
import { type ScriptRedis, withScripts } from "../infra/scripts.js";

/** What every endpoint's delivery of one notification sends: stored once per notification, not per endpoint ({@link EndpointQueues.putPayloads}). */
export interface WebhookPayload {
  type: string;
  /** The exact body to send (signed as is). */
  body: string;
  brief: NotificationBrief;
}

/**
 * One queued delivery: the notification it comes from and the event type; the body and brief inline for an
 * event-stream delivery (its own), else in the notification's {@link WebhookPayload} (filled in by the deliverer).
 */
export interface QueuedDelivery {
  nid: string;
  type: string;
  body?: string;
  /** The send batch's shard (dead letters keep it). */
  shard: number;
  brief?: NotificationBrief;
  /** When it was queued (ms). */
  at: number;
  /** A replayed dead letter: the failure reason its receipt counted, which the new outcome replaces. */
  replayOf?: string;
  /** An event-stream delivery (nfx's lifecycle events): no receipt, no dead letter (its notification's counters are not its own). */
  event?: true;
}

/** An endpoint's delivery state, as `nfx endpoints state` and `GET /v1/endpoints/{id}/state` show it. */
export interface EndpointState {
  /** Deliveries waiting, the one being attempted included. */
  pending: number;
  /** Whether a gateway process is delivering to it now (holds its lease). */
  in_flight: boolean;
  delivered: number;
  failed: number;
  /** Attempts made of the delivery at the head of the queue (0: none failed yet). */
  attempts: number;
  /** When that delivery is tried next (ms), when it failed before. */
  next_attempt?: number;
  /** HTTP status of the last attempt (0: no answer). */
  last_status?: number;
  last_error?: string;
  last_at?: number;
  /** Failed attempts in a row, and since when (ms). */
  consecutive_failures: number;
  failing_since?: number;
  paused: boolean;
  paused_reason?: string;
  paused_at?: number;
}

/** A finished delivery in an endpoint's recent history. */
export interface HistoryEntry {
  id: string;
  nid: string;
  type: string;
  outcome: "delivered" | "failed";
  status: number;
  attempts: number;
  reason?: string;
  at: number;
}

/** The Redis side of webhook delivery: one per gateway process (and per API surface that shows state). */
export class EndpointQueues {
  private readonly r: ScriptRedis;

  constructor(private readonly redis: Redis, private readonly cfg: Config["endpoints"]) {
    this.r = withScripts(redis);
  }

  /**
   * Queues `items` (id, delivery) on `endpoint` in order, skipping ids already queued or finished (unless `force`:
   * a replayed dead letter), then marks the endpoint active. Returns how many were queued. Rejects when Redis failed
   * (the caller's batch is redelivered; queuing again is harmless).
   */
  async enqueue(endpoint: string, items: readonly { id: string; d: QueuedDelivery }[], force = false): Promise<number> {
    return this.enqueueMany(new Map([[endpoint, items]]), force);
  }

  /**
   * {@link enqueue} for several endpoints at once: their queues in parallel, then one update of the active set.
   * `front`: each endpoint's items go ahead of what its queue holds, in the order given (deliveries handed back by a
   * process that was posting them directly, ahead of the later ones it queued meanwhile).
   */
  async enqueueMany(byEndpoint: ReadonlyMap<string, readonly { id: string; d: QueuedDelivery }[]>, force = false, front = false): Promise<number> {
    const eps = [...byEndpoint].filter(([, items]) => items.length > 0);
    if (eps.length === 0) return 0;
    // One script call for all of them on one redis-server; one per endpoint on a Redis Cluster (each its own hash slot).
    const groups = this.perCall(eps);
    // An item shared by several endpoints (one notification's delivery) is serialized once, and sent once per call, named by its number.
    const serialized = new Map<QueuedDelivery, string>();
    const added = await Promise.all(groups.map((g) => {
      const number = new Map<QueuedDelivery, number>();
      const json: string[] = [];
      const keys: string[] = [];
      const refs: (string | number)[] = [];
      for (const [ep, items] of g) {
        keys.push(endpointQueueKey(ep), endpointItemsKey(ep), endpointDoneKey(ep));
        refs.push(items.length);
        for (const i of items) {
          let k = number.get(i.d);
          if (k === undefined) {
            let j = serialized.get(i.d);
            if (j === undefined) serialized.set(i.d, (j = JSON.stringify(i.d)));
            number.set(i.d, (k = json.push(j)));
          }
          refs.push(i.id, k);
        }
      }
      return this.r.nfxEndpointEnqueue(keys.length, ...keys, `${force ? "r" : ""}${front ? "f" : ""}-`, json.length, ...json, ...refs);
    }));
    await this.r.sadd(ENDPOINTS_ACTIVE_KEY, ...eps.map(([ep]) => ep));
    return added.reduce((a, n) => a + n, 0);
  }

  /** Endpoints with deliveries waiting (or that had some when last looked at). */
  active(): Promise<string[]> {
    return this.r.smembers(ENDPOINTS_ACTIVE_KEY);
  }

  /** Stores each notification's payload once for all its endpoints, for `ttlSec` (refreshed by every batch that queues it). Call before queuing its deliveries. */
  async putPayloads(payloads: ReadonlyMap<string, WebhookPayload>, ttlSec: number): Promise<void> {
    await Promise.all([...payloads].map(([nid, p]) => this.r.set(webhookPayloadKey(nid), JSON.stringify(p), "EX", ttlSec)));
  }

  /** The payloads of `nids` (null: expired or never stored). */
  async payloads(nids: readonly string[]): Promise<Map<string, WebhookPayload | null>> {
    const got = await Promise.all(nids.map((nid) => this.r.get(webhookPayloadKey(nid))));
    return new Map(nids.map((nid, i) => [nid, got[i] === null ? null : (JSON.parse(got[i]) as WebhookPayload)]));
  }

  /** The first `max` deliveries of `endpoint`'s queue, in order. */
  async head(endpoint: string, max: number): Promise<{ id: string; d: QueuedDelivery }[]> {
    return (await this.next(endpoint, [], max, Date.now())).items;
  }

  /**
   * One step of delivery in one call: finishes `settled` (the queue's head first and in order; it stops at one that
   * is not the head), then, when `max` > 0, reads the endpoint's gate (paused, next attempt due, attempts made of the
   * head) and the first `max` deliveries of its queue.
   */
  async next(endpoint: string, settled: readonly HistoryEntry[], max: number, now: number): Promise<{ finished: number; paused: boolean; nextAt: number; attempts: number; items: { id: string; d: QueuedDelivery }[] }> {
    const r = await this.r.nfxEndpointNext(
      endpointQueueKey(endpoint), endpointItemsKey(endpoint), endpointDoneKey(endpoint), endpointStateKey(endpoint), endpointHistoryKey(endpoint),
      now, this.cfg.doneTtlSec * 1000, this.cfg.historyPerEndpoint, max, ...settled.flatMap((e) => [e.id, e.outcome, e.status, JSON.stringify(e)]),
    );
    const items: { id: string; d: QueuedDelivery }[] = [];
    for (let i = 4; i < r.length; i += 2) items.push({ id: String(r[i]), d: JSON.parse(String(r[i + 1])) as QueuedDelivery });
    return { finished: Number(r[0]), paused: r[1] === 1, nextAt: Number(r[2]), attempts: Number(r[3]), items };
  }

  /**
   * Lets go of `endpoint` when its queue is empty: clears it from the active set and, on one redis-server, releases
   * `owner`'s lease in the same call (`released`; on a Redis Cluster the caller releases it). The set is cleared
   * before the queue is read, so a delivery queued meanwhile (which marks the endpoint active after queuing) is never
   * left unnoticed. `active`: deliveries are waiting, and the endpoint stays active and leased.
   */
  async deactivateIfEmpty(endpoint: string, owner: string): Promise<{ active: boolean; released: boolean }> {
    if (!isCluster(this.redis)) {
      const active = (await this.r.nfxEndpointIdle(ENDPOINTS_ACTIVE_KEY, endpointQueueKey(endpoint), endpointLeaseKey(endpoint), endpoint, owner)) === 1;
      return { active, released: !active };
    }
    await this.r.srem(ENDPOINTS_ACTIVE_KEY, endpoint);
    if ((await this.r.llen(endpointQueueKey(endpoint))) === 0) return { active: false, released: false };
    await this.r.sadd(ENDPOINTS_ACTIVE_KEY, endpoint);
    return { active: true, released: false };
  }

  /** Finishes the head delivery `e.id` (delivered or failed for good). Returns false when it was no longer the head. */
  async settle(endpoint: string, e: HistoryEntry, now: number): Promise<boolean> {
    return (await this.settleMany(endpoint, [e], now)) === 1;
  }

  /** Finishes the deliveries `list`, the queue's head first and in order, in one call. Returns how many were settled (it stops at one that is not the head). */
  async settleMany(endpoint: string, list: readonly HistoryEntry[], now: number): Promise<number> {
    return list.length === 0 ? 0 : (await this.next(endpoint, list, 0, now)).finished;
  }

  /** Records a failed attempt of the head delivery, retried at `nextAt`. Returns the endpoint's failure streak. */
  async fail(endpoint: string, now: number, nextAt: number, status: number, error: string, attempts: number): Promise<{ consecutive: number; failingSince: number }> {
    const [consecutive, failingSince] = await this.r.nfxEndpointFail(endpointStateKey(endpoint), now, nextAt, status, error.slice(0, 300), attempts);
    return { consecutive, failingSince };
  }

  /** Pauses `endpoint`: nothing is delivered to it until {@link resume}; what arrives meanwhile is queued. */
  async pause(endpoint: string, reason: string, now: number): Promise<void> {
    await this.r.hset(endpointStateKey(endpoint), "paused", "1", "pausedReason", reason, "pausedAt", String(now));
  }

  /** Resumes a paused endpoint: its failure streak is forgotten and its queue delivered in order from the head. Returns whether it was paused. */
  async resume(endpoint: string): Promise<boolean> {
    const was = await this.r.hdel(endpointStateKey(endpoint), "paused", "pausedReason", "pausedAt");
    await this.r.hdel(endpointStateKey(endpoint), "failingSince", "nextAt", "attempts");
    await this.r.hset(endpointStateKey(endpoint), "consecutive", "0");
    await this.r.sadd(ENDPOINTS_ACTIVE_KEY, endpoint);
    return was > 0;
  }

  /** `endpoint`'s delivery state. */
  async state(endpoint: string): Promise<EndpointState> {
    const [h, pending, lease] = await Promise.all([this.r.hgetall(endpointStateKey(endpoint)), this.r.llen(endpointQueueKey(endpoint)), this.r.exists(endpointLeaseKey(endpoint))]);
    const num = (k: string): number | undefined => (h[k] !== undefined ? Number(h[k]) : undefined);
    return {
      pending,
      in_flight: lease === 1 && pending > 0,
      delivered: num("delivered") ?? 0,
      failed: num("failed") ?? 0,
      attempts: num("attempts") ?? 0,
      ...(h.nextAt ? { next_attempt: Number(h.nextAt) } : {}),
      ...(h.lastStatus !== undefined ? { last_status: Number(h.lastStatus) } : {}),
      ...(h.lastError ? { last_error: h.lastError } : {}),
      ...(h.lastAt ? { last_at: Number(h.lastAt) } : {}),
      consecutive_failures: num("consecutive") ?? 0,
      ...(h.failingSince ? { failing_since: Number(h.failingSince) } : {}),
      paused: h.paused === "1",
      ...(h.pausedReason ? { paused_reason: h.pausedReason } : {}),
      ...(h.pausedAt ? { paused_at: Number(h.pausedAt) } : {}),
    };
  }

  /**
   * The last `limit` finished deliveries of `endpoint` (at most `historyPerEndpoint`), newest first (by when each
   * finished: deliveries posted directly are recorded per send batch, and batches may finish in another order than
   * their deliveries did).
   */
  async history(endpoint: string, limit: number): Promise<HistoryEntry[]> {
    // Redis may hold a few more than the setting between trims (the scripts trim once a quarter over it).
    const n = Math.min(limit, this.cfg.historyPerEndpoint);
    if (n <= 0) return [];
    return (await this.r.lrange(endpointHistoryKey(endpoint), -n, -1)).map((s) => JSON.parse(s) as HistoryEntry).reverse().sort((a, b) => b.at - a.at);
  }

  /** The queued deliveries of `endpoint` (ids and notification ids), head first, at most `limit`. */
  async pending(endpoint: string, limit: number): Promise<{ id: string; nid: string; type: string; at: number }[]> {
    return (await this.head(endpoint, limit)).map(({ id, d }) => ({ id, nid: d.nid, type: d.type, at: d.at }));
  }

  /** Takes, renews or releases `owner`'s lease on `endpoint`. Resolves whether it holds (held) it. */
  async lease(endpoint: string, owner: string, mode: "take" | "renew" | "release"): Promise<boolean> {
    return (await this.r.nfxEndpointLease(endpointLeaseKey(endpoint), owner, this.cfg.leaseMs, mode)) === 1;
  }

  /**
   * Takes (`take`) or renews (`renew`) `owner`'s hold on `endpoints` for direct delivery (endpointDirect-n.lua): taken
   * only with nothing queued, not paused, no retry due later and the lease free or `owner`'s; a renewal extends the
   * lease while it is `owner`'s and says whether direct delivery may go on (not paused, nothing queued). Resolves, per
   * endpoint in order, whether `owner` holds it (and may go on).
   * One call on one redis-server; one per endpoint on a Redis Cluster.
   */
  async direct(endpoints: readonly string[], owner: string, mode: "take" | "renew", now: number): Promise<boolean[]> {
    if (endpoints.length === 0) return [];
    const call = (eps: readonly string[]): Promise<number[]> =>
      this.r.nfxEndpointDirect(eps.length * 3, ...eps.flatMap((e) => [endpointLeaseKey(e), endpointQueueKey(e), endpointStateKey(e)]), owner, this.cfg.leaseMs, now, mode);
    return (await Promise.all(this.perCall(endpoints).map(call))).flat().map((v) => v === 1);
  }

  /**
   * Records what was posted directly to endpoints (endpointDirectDone-n.lua): per endpoint, how many were delivered and
   * failed for good, the last answer's status and their history entries, oldest first. One call on one redis-server;
   * one per endpoint on a Redis Cluster.
   */
  async recordDirect(done: ReadonlyMap<string, { delivered: number; failed: number; lastStatus: number; history: readonly HistoryEntry[] }>, now: number): Promise<void> {
    const call = (eps: readonly string[]): Promise<number> => {
      const keys: string[] = [];
      const args: (string | number)[] = [now, this.cfg.historyPerEndpoint];
      for (const e of eps) {
        const x = done.get(e)!;
        keys.push(endpointStateKey(e), endpointHistoryKey(e));
        const hist = this.cfg.historyPerEndpoint > 0 ? x.history.slice(-this.cfg.historyPerEndpoint) : [];
        args.push(x.delivered, x.failed, x.lastStatus, hist.length, ...hist.map((h) => JSON.stringify(h)));
      }
      return this.r.nfxEndpointDirectDone(keys.length, ...keys, ...args);
    };
    if (done.size) await Promise.all(this.perCall([...done.keys()]).map(call));
  }

  /** `items` (endpoints, or entries led by one) as the script calls take them: all in one on one redis-server, one each on a Redis Cluster (an endpoint's keys share a hash slot, different endpoints' do not). */
  private perCall<T>(items: readonly T[]): (readonly T[])[] {
    return isCluster(this.redis) ? items.map((i) => [i]) : [items];
  }

  /** Deletes everything kept for `endpoint` (it was deleted). */
  async drop(endpoint: string): Promise<void> {
    await this.r.srem(ENDPOINTS_ACTIVE_KEY, endpoint);
    await this.r.unlink(endpointQueueKey(endpoint), endpointItemsKey(endpoint), endpointDoneKey(endpoint), endpointStateKey(endpoint), endpointHistoryKey(endpoint));
  }
}
