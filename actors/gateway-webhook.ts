// Webhook gateway: takes topic deliveries off NFX_SEND_WEBHOOK and delivers each endpoint's in order, signed, directly while it is healthy and through its Redis queue otherwise, with retries, pausing and dead letters.
import { randomUUID } from "node:crypto";

import type { JsMsg } from "@nats-io/jetstream";
import { Agent } from "undici";

import type { Config } from "../lib/core/config.js";
import { endpointAnsweredKey, webhookAnsweredKey } from "../lib/core/keys.js";
import type { Logger } from "../lib/core/log.js";
import { MSGID, PRIORITIES, type Priority, STREAM, webhookDeliveryId } from "../lib/core/subjects.js";
import type { NotificationBrief, ReceiptEntry, SendBatch } from "../lib/core/types.js";
import { activeSecrets, type Endpoint, findEndpoint } from "../lib/directory/endpoints.js";
import { changeEndpointSubscriptions } from "../lib/directory/topics.js";
import { EndpointQueues, type HistoryEntry, type QueuedDelivery, type WebhookPayload } from "../lib/flow/endpoint-queues.js";
import { JsPublisher } from "../lib/flow/js-publisher.js";
import { decodeAs, firstIdOf, type Later } from "../lib/flow/lanes.js";
import { Semaphore } from "../lib/flow/semaphore.js";
import { watchWorkQueue } from "../lib/flow/stranded.js";
import { storeDeadLetter } from "../lib/gateway/dlq.js";
import { type OutboxItem, ReceiptOutbox } from "../lib/gateway/receipt-outbox.js";
import { markSendBatchDone, ReceiptCollector, receiptReconciler, sendBatchDone, sendBatchesChecked } from "../lib/gateway/receipts.js";
import { AnsweredDeliveries, type AnsweredNote } from "../lib/gateway/webhook-answered.js";
import { startEventStreams } from "../lib/gateway/webhook-events.js";
import { endpointPartitions } from "../lib/gateway/webhook-partitions.js";
import { type PostAnswer, WebhookPoster } from "../lib/gateway/webhook-post.js";
import { secretKey, signatureHeaders } from "../lib/gateway/webhook-sign.js";
import { addressPolicy, guardedLookup } from "../lib/infra/address-policy.js";
import { gatewayRetries, gatewaySends, stageItems } from "../lib/infra/metrics.js";
import type { Nats } from "../lib/infra/nats.js";
import type { Redis } from "../lib/infra/redis.js";
import { consumerConfigsOf } from "../lib/infra/topology.js";

export interface GatewayWebhookDeps {
  cfg: Config;
  nats: Nats;
  redis: Redis;
  log: Logger;
}

/** How often the set of active endpoints is read (endpoints queued by this process are taken at once, without it). */
const SCAN_MS = 250;
/** How long a worker whose queue ran empty keeps its endpoint, waiting for this process to queue more, before it lets go. */
const LINGER_MS = 1000;
/** How long a send batch delivered directly is remembered after it finished, so that a copy of it is only acked. */
const SEEN_MS = 60_000;

/**
 * The body every endpoint receives for a delivery of notification `n` (Standard Webhooks layout):
 * `{type, timestamp, data}`, from the notification's `content.webhook`, or, without it, type `notification` and
 * data naming the notification, its topic and category and its content for people.
 */
export function webhookBody(n: NotificationBrief): { type: string; body: string } {
  const w = n.content?.webhook;
  const type = w?.type ?? "notification";
  const { webhook: _w, ...people } = n.content ?? {};
  const data = w?.data ?? { notification: n.id, topic: n.topic, category: n.category, content: people };
  return { type, body: JSON.stringify({ type, timestamp: new Date(n.createdAt).toISOString(), data }) };
}

/** How an answer (or its absence) settles an attempt: delivered, gone (410: unsubscribe), refused for good (other 4xx), or retried. */
export function classifyAnswer(status: number): "delivered" | "gone" | "refused" | "retry" {
  if (status >= 200 && status < 300) return "delivered";
  if (status === 410) return "gone";
  if (status >= 400 && status < 500 && status !== 408 && status !== 425 && status !== 429) return "refused";
  return "retry";
}

/** The delay before attempt `attempts + 1`: exponential from `baseMs`, full jitter, capped at `maxMs`, never below `retryAfter`. */
export function backoffMs(attempts: number, baseMs: number, maxMs: number, retryAfter: number | undefined, rand = Math.random): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempts - 1));
  const jittered = Math.max(Math.min(baseMs, ceiling) / 2, ceiling * rand());
  return Math.max(jittered, retryAfter ?? 0);
}

/**
 * Starts the webhook gateway. Intake: every priority lane of NFX_SEND_WEBHOOK. An endpoint is delivered to by one
 * gateway process at a time (a lease in Redis), in publish order, one request at a time, signed per Standard
 * Webhooks. While it is healthy (nothing queued, not paused, not backing off) the process that takes a send batch
 * posts its deliveries directly, and acks the batch once each is delivered, failed for good or queued: receipts
 * published under the batch's id, then the endpoints' records and the batch's done mark (a redelivered batch marked
 * done sends nothing). Otherwise, and from a failed attempt, an answer slower than `endpoints.directSlowMs` or a
 * backlog on, its deliveries are queued in Redis (idempotently per delivery id) and sent from the queue's head; a
 * slow or failing endpoint holds only its own deliveries. 2xx: delivered. 410: the endpoint is unsubscribed from the
 * delivery's topic. Other 4xx (but 408, 425, 429): failed, dead-lettered, not retried. Anything else: retried with
 * exponential backoff and jitter, honouring `Retry-After`; after `endpoints.maxAttempts`, dead-lettered. An endpoint
 * failing `endpoints.pauseAfterFailures` times in a row for at least `endpoints.pauseAfterMs` is paused until
 * resumed (`nfx endpoints resume`). Every outcome is a receipt on NFX_RECEIPTS (channel `webhook`), counted once:
 * a queued delivery's is published before the queue forgets it, under a message id of the delivery and outcome.
 */
export async function startGatewayWebhook(d: GatewayWebhookDeps): Promise<{ stop(): Promise<void> }> {
  const log = d.log.child({ actor: "gateway-webhook" });
  const c = d.cfg.endpoints;
  const queues = new EndpointQueues(d.redis, c);
  const policy = addressPolicy(c.allowNetworks);
  const agent = new Agent({ connections: c.socketsPerHost, pipelining: 1, keepAliveTimeout: 30_000, connect: { lookup: guardedLookup(policy), timeout: c.timeoutMs } });
  const owner = `${process.pid}-${randomUUID().slice(0, 8)}`;
  let stopping = false;

  // Endpoint records, re-read at most every 5 s (URL, secrets, filter and rate limit changes apply within that), with
  // what each request needs of them: the URL parsed and the signing keys of the secrets active when read.
  type Cached = { ep: Endpoint | null; at: number; origin: string; path: string; keys: Buffer[] };
  const epCache = new Map<string, Cached>();
  const freshHit = (id: string): Cached | undefined => {
    const hit = epCache.get(id);
    return hit && Date.now() - hit.at < 5000 ? hit : undefined;
  };
  const cachedOf = async (id: string): Promise<Cached> => {
    const hit = freshHit(id);
    if (hit) return hit;
    const ep = await findEndpoint(d.redis, id);
    const u = ep ? new URL(ep.url) : null;
    const c: Cached = { ep, at: Date.now(), origin: u?.origin ?? "", path: u ? u.pathname + u.search : "", keys: ep ? activeSecrets(ep, Date.now()).map(secretKey) : [] };
    epCache.set(id, c);
    return c;
  };
  /** The endpoint record (cached): synchronous when the cache holds it fresh, so a batch of a thousand endpoints does not wait a turn per send. */
  const endpointOf = (id: string): Endpoint | null | Promise<Endpoint | null> => {
    const hit = freshHit(id);
    return hit ? hit.ep : cachedOf(id).then((c) => c.ep);
  };
  // Receipts on pipelined publishes (lib/flow/js-publisher.ts): one per delivery outcome, without a request subscription each.
  const pub = new JsPublisher(d.nats.nc);
  const payloadTtlSec = d.cfg.streams.retentionHours * 3600;

  /** The receipt entry of endpoint `ep`'s delivery outcome (a replayed dead letter's supersedes the failure it counted). */
  const entryOf = (ep: string, outcome: "sent" | "failed" | "suppressed", at: number, reason?: string, replayOf?: string): ReceiptEntry => ({
    user: ep, channel: "webhook", device: ep, outcome, at, ...(reason ? { reason } : {}), ...(replayOf ? { supersedes: replayOf } : {}),
  });
  // Outcomes go through the receipt outbox (lib/gateway/receipt-outbox.ts): recorded in Redis once per delivery and
  // outcome, published many to a receipt batch. On replicated streams its batches are checked, and published again if
  // NFX_RECEIPTS lost them (lib/flow/stream-reconciler.ts).
  const rec = receiptReconciler({ ...d, log });
  const outbox = new ReceiptOutbox(d.redis, pub, rec, log);
  const markDone = sendBatchesChecked(d.cfg);
  const receiptOf = (nid: string, id: string, e: ReceiptEntry): OutboxItem => ({ id: MSGID.webhookOutcome(id, e.outcome), nid, entry: e });
  const recordReceipt = (nid: string, id: string, e: ReceiptEntry): Promise<unknown> => outbox.add([receiptOf(nid, id, e)]);

  // 1. Intake. A send batch's deliveries go out directly (posted from memory, in order per endpoint) to endpoints this
  // process holds for it: nothing of theirs queued, not paused, not backing off. The others', and those that fail or
  // wait behind too many, go into their endpoints' Redis queues (2, below).
  /** A send batch's deliveries grouped by endpoint, with what each notification sends. */
  type Planned = { byEndpoint: Map<string, { id: string; d: QueuedDelivery }[]>; payloads: Map<string, WebhookPayload>; skipped: Promise<unknown>[] };
  const plan = async (batch: SendBatch): Promise<Planned> => {
    const byEndpoint = new Map<string, { id: string; d: QueuedDelivery }[]>();
    const now = Date.now();
    const skipped: Promise<unknown>[] = [];
    // One queued item per notification of the batch, shared by its endpoints (the queues serialize it once); what
    // it sends (type, body, brief) is stored once per notification, not once per endpoint.
    const itemOf = new Map<string, QueuedDelivery>();
    const payloads = new Map<string, WebhookPayload>();
    for (const s of batch.sends) {
      const brief = batch.notifications[s.nid];
      const got = endpointOf(s.user);
      const ep = got instanceof Promise ? await got : got;
      const id = webhookDeliveryId(s.nid, s.user);
      if (!ep) {
        skipped.push(recordReceipt(s.nid, id, entryOf(s.user, "failed", now, "endpoint_deleted")));
        continue;
      }
      let q = itemOf.get(s.nid);
      if (!q) {
        const { type, body } = webhookBody(brief);
        q = { nid: s.nid, type, shard: batch.shard, at: now, ...(batch.replayOf ? { replayOf: batch.replayOf } : {}) };
        itemOf.set(s.nid, q);
        payloads.set(s.nid, { type, body, brief });
      }
      if (ep.types && !ep.types.includes(q.type)) {
        skipped.push(recordReceipt(s.nid, id, entryOf(s.user, "suppressed", now, "type_filtered")));
        continue;
      }
      const l = byEndpoint.get(s.user);
      if (l) l.push({ id, d: q });
      else byEndpoint.set(s.user, [{ id, d: q }]);
    }
    return { byEndpoint, payloads, skipped };
  };
  /** Queues `byEndpoint`'s deliveries (`front`: ahead of what their queues hold). The payloads first: a deliverer never reads an item whose payload is not stored yet. */
  const enqueue = async (byEndpoint: ReadonlyMap<string, readonly { id: string; d: QueuedDelivery }[]>, payloads: ReadonlyMap<string, WebhookPayload>, force: boolean, front = false): Promise<void> => {
    if (byEndpoint.size === 0) return;
    const nids = new Set([...byEndpoint.values()].flatMap((l) => l.map((x) => x.d.nid)));
    await queues.putPayloads(new Map([...payloads].filter(([nid]) => nids.has(nid))), payloadTtlSec);
    await queues.enqueueMany(byEndpoint, force, front);
    queued(byEndpoint.keys());
  };

  /**
   * An endpoint this process delivers to directly, holding its lease. Its groups (its deliveries of one send batch
   * each) post one after the other, in the order their batches came (`busy`: one is posting; `pending`: the rest, to
   * start in order), one request at a time. Once it is `spilled` (an attempt failed, one has taken longer than
   * `endpoints.directSlowMs` since `postingSince`, too many groups wait, its hold was lost, or the process is stopping),
   * what has not been posted goes into its Redis queue instead, in order (`qtail`), without waiting for the request in
   * flight; what that request's group had left goes to the front. When no group is left, a spilled endpoint goes to a
   * queue worker (the queue is delivered after everything posted directly); another is let go after LINGER_MS without
   * deliveries.
   */
  type Direct = { busy: boolean; pending: (() => void)[]; waiting: number; spilled: boolean; postingSince: number; qtail: Promise<void>; lastStart: number; idle: NodeJS.Timeout | null };
  const newDirect = (): Direct => ({ busy: false, pending: [], waiting: 0, spilled: false, postingSince: 0, qtail: Promise.resolve(), lastStart: 0, idle: null });
  /** Spills `st`: the groups waiting start now, in order, and queue what they hold. */
  const spillAll = (st: Direct): void => {
    st.spilled = true;
    const waiting = st.pending;
    st.pending = [];
    for (const start of waiting) start();
  };
  const direct = new Map<string, Direct>();
  /** Endpoints being let go of (their lease released): not taken again before that is through. */
  const releasing = new Map<string, Promise<void>>();
  /** What one endpoint's group of a send batch came to: delivered and failed-for-good deliveries (the rest was queued). */
  type GroupResult = { endpoint: string; delivered: HistoryEntry[]; failed: (HistoryEntry & { reason: string; replayOf?: string })[]; lastStatus: number };
  /** Deliveries answered for good, noted as they are: a send batch's direct ones, an endpoint queue's (lib/gateway/webhook-answered.ts). */
  const answered = new AnsweredDeliveries(d.redis, log);
  /**
   * Takes the deliveries an earlier attempt at a batch answered (`notes`) out of `byEndpoint`, and returns them as one
   * group per endpoint, as if answered now (an endpoint left with nothing is dropped from `byEndpoint`).
   */
  const answeredGroups = (byEndpoint: Map<string, { id: string; d: QueuedDelivery }[]>, notes: ReadonlyMap<string, AnsweredNote>): GroupResult[] => {
    if (notes.size === 0) return [];
    const out: GroupResult[] = [];
    for (const [id, items] of byEndpoint) {
      const rest: { id: string; d: QueuedDelivery }[] = [];
      const g: GroupResult = { endpoint: id, delivered: [], failed: [], lastStatus: 0 };
      for (const it of items) {
        const n = notes.get(it.id);
        if (!n) {
          rest.push(it);
          continue;
        }
        const h: HistoryEntry = { id: it.id, nid: it.d.nid, type: it.d.type, outcome: n.outcome, status: n.status, attempts: 1, at: n.at };
        if (n.outcome === "delivered") g.delivered.push(h);
        else g.failed.push({ ...h, reason: n.reason ?? `http_${n.status}`, ...(it.d.replayOf ? { replayOf: it.d.replayOf } : {}) });
        g.lastStatus = n.status;
      }
      if (rest.length === items.length) continue;
      out.push(g);
      if (rest.length) byEndpoint.set(id, rest);
      else byEndpoint.delete(id);
    }
    return out;
  };
  const letGo = (id: string, st: Direct): void => {
    if (direct.get(id) !== st) return;
    direct.delete(id);
    if (st.spilled && !stopping) {
      // What it queued (and what other processes queued meanwhile) is delivered by a worker, in order, after what was posted.
      fresh.add(id);
      wake();
      return;
    }
    const p = (async () => {
      // Stopping: its queue is another process's to deliver, at once rather than when this hold lapses.
      if (st.spilled) return void (await queues.lease(id, owner, "release"));
      const idleNow = await queues.deactivateIfEmpty(id, owner);
      if (idleNow.active) {
        fresh.add(id);
        wake();
      } else if (!idleNow.released) await queues.lease(id, owner, "release");
    })()
      .catch((err) => log.warn({ err, endpoint: id }, "letting go of a direct endpoint failed; its lease lapses"))
      .finally(() => releasing.delete(id));
    releasing.set(id, p);
  };
  /** Queues `items` of endpoint `id` on its queue's turn (`front`: ahead of what it holds). */
  const spill = (st: Direct, id: string, items: readonly { id: string; d: QueuedDelivery }[], payloads: ReadonlyMap<string, WebhookPayload>, front = false): Promise<void> => {
    const p = st.qtail.then(() => enqueue(new Map([[id, items]]), payloads, false, front));
    st.qtail = p.catch(() => undefined);
    return p;
  };
  /** Waits until a request to an endpoint allowed `rateLimit` requests a second may start, its last one having started at `lastStart`. */
  const paced = async (rateLimit: number | null | undefined, lastStart: number): Promise<void> => {
    const wait = rateLimit ? lastStart + 1000 / rateLimit - Date.now() : 0;
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  };
  /** Why an attempt to be retried failed: its HTTP status, or no answer. */
  const retryReason = (r: PostAnswer): string => (r.status ? `http_${r.status}` : "no_answer");
  /** 410 Gone from endpoint `id`: the receiver ends its subscription to the delivery's topic. */
  const unsubscribeGone = async (id: string, brief: NotificationBrief): Promise<void> => {
    if (brief.topic) await changeEndpointSubscriptions(d.redis, brief.topic, [id], true).catch(() => 0);
    log.info({ endpoint: id, topic: brief.topic }, "endpoint answered 410: unsubscribed from the topic");
  };
  /** Stores endpoint `id`'s delivery `did` (of `q`, notification `brief`) on the dead-letter stream. */
  const deadLetter = (id: string, did: string, q: QueuedDelivery, brief: NotificationBrief, reason: string, attempts: number, at: number): Promise<unknown> =>
    storeDeadLetter(d.nats, { type: "dead_letter", channel: "webhook", shard: q.shard, notification: brief, send: { nid: q.nid, user: id, device: id, token: "" }, reason, attempts, at }, did);
  /** Posts endpoint `id`'s deliveries `items` of one batch in order; from the first it cannot post (spilled) or that fails to be answered, queues the rest. */
  const deliverGroup = async (id: string, st: Direct, items: readonly { id: string; d: QueuedDelivery }[], payloads: ReadonlyMap<string, WebhookPayload>, batchId: string): Promise<GroupResult> => {
    const res: GroupResult = { endpoint: id, delivered: [], failed: [], lastStatus: 0 };
    const notesKey = webhookAnsweredKey(batchId);
    let posted = false;
    for (let k = 0; k < items.length; k++) {
      // Checked before anything is awaited, so groups set off by the same spill queue in their order.
      const cep = st.spilled || stopping ? null : (freshHit(id) ?? (await cachedOf(id)));
      if (!cep?.ep) {
        // Its rest is put on the queue's turn before the groups behind it start (spillAll): they queue after it. Once this
        // group has posted some, it was spilled meanwhile and the groups behind it queued then: its rest goes ahead of them.
        const queuing = spill(st, id, items.slice(k), payloads, posted);
        spillAll(st);
        await queuing;
        break;
      }
      const { id: did, d: q } = items[k];
      const p = payloads.get(q.nid)!;
      await paced(cep.ep.rateLimit, st.lastStart);
      st.lastStart = Date.now();
      posted = true;
      st.postingSince = st.lastStart;
      const r = await attempt(cep, did, p.body);
      st.postingSince = 0;
      const kind = r.status ? classifyAnswer(r.status) : "retry";
      const at = Date.now();
      if (r.status) res.lastStatus = r.status;
      if (kind === "delivered") {
        res.delivered.push({ id: did, nid: q.nid, type: q.type, outcome: "delivered", status: r.status, attempts: 1, at });
        answered.note(notesKey, did, { outcome: "delivered", status: r.status, at });
        continue;
      }
      if (kind === "retry") {
        // The endpoint failed to answer: this delivery and what follows go through its queue (ahead of what was queued meanwhile), this attempt counted.
        spillAll(st);
        await spill(st, id, items.slice(k), payloads, true);
        const delay = backoffMs(1, c.backoffBaseMs, c.backoffMaxMs, r.retryAfter);
        await queues.fail(id, at, at + delay, r.status, r.error ?? retryReason(r), 1);
        notBefore.set(id, at + delay);
        gatewayRetries.inc({ channel: "webhook" });
        break;
      }
      const reason = kind === "gone" ? "gone" : `http_${r.status}`;
      if (kind === "gone") await unsubscribeGone(id, p.brief);
      else await deadLetter(id, did, q, p.brief, reason, 1, at);
      res.failed.push({ id: did, nid: q.nid, type: q.type, outcome: "failed", status: r.status, attempts: 1, reason, at, ...(q.replayOf ? { replayOf: q.replayOf } : {}) });
      answered.note(notesKey, did, { outcome: "failed", status: r.status, at, reason });
    }
    return res;
  };
  /**
   * Puts endpoint `id`'s group of a batch on its chain (synchronously, so groups keep their batches' order): it posts
   * when the groups before it are through, or queues at once when the endpoint is (or becomes) spilled. Resolves what it came to.
   */
  const chain = (id: string, st: Direct, items: readonly { id: string; d: QueuedDelivery }[], payloads: ReadonlyMap<string, WebhookPayload>, batchId: string): Promise<GroupResult> => {
    if (st.idle) clearTimeout(st.idle);
    st.idle = null;
    if (st.waiting >= c.directBacklog) spillAll(st);
    st.waiting++;
    return new Promise<GroupResult>((resolve, reject) => {
      const start = (): void => {
        const head = !st.spilled;
        deliverGroup(id, st, items, payloads, batchId)
          .then(resolve, (err: unknown) => (spillAll(st), reject(err as Error)))
          .finally(() => {
            if (head) {
              // The next group posts (none when the endpoint spilled meanwhile: they started then).
              const next = st.pending.shift();
              if (next) next();
              else st.busy = false;
            }
            if (--st.waiting > 0 || direct.get(id) !== st) return;
            if (st.spilled || stopping) letGo(id, st);
            else st.idle = setTimeout(() => st.waiting === 0 && letGo(id, st), LINGER_MS);
          });
      };
      if (st.spilled) start();
      else if (st.busy) st.pending.push(start);
      else {
        st.busy = true;
        start();
      }
    });
  };
  // An endpoint whose answer is slower than `endpoints.directSlowMs` is spilled: its later groups queue instead of holding their batches.
  const slowSweep = setInterval(() => {
    const now = Date.now();
    for (const st of direct.values()) if (st.postingSince && !st.spilled && now - st.postingSince > c.directSlowMs) spillAll(st);
  }, Math.max(10, c.directSlowMs / 4));
  // The holds of direct endpoints are renewed together; one lost, paused by an operator or with deliveries queued sends its deliveries to its queue.
  const directRenewal = setInterval(() => {
    const ids = [...direct.keys()];
    void queues.direct(ids, owner, "renew", Date.now()).then(
      (held) => ids.forEach((id, k) => {
        const st = direct.get(id);
        if (!held[k] && st) spillAll(st);
      }),
      (err) => log.warn({ err }, "renewing direct endpoints failed"),
    );
  }, Math.max(500, c.leaseMs / 3));

  /** Send batches being delivered directly, at most `endpoints.directBatches` (the most urgent lane first). */
  const slots = new Semaphore(c.directBatches);
  /** Direct deliveries in flight, each batch's in its partition's set too (a partition handed over waits for its own). */
  const inflight = new Set<Promise<void>>();
  /** Batches' intake one after another, so the groups of an endpoint join its chain in the order their batches came. */
  let intakeTurn: Promise<unknown> = Promise.resolve();
  /** Runs `fn` in the intake turn: once every batch taken before has taken its place (or failed). */
  const inTurn = <T>(fn: () => Promise<T>): Promise<T> => {
    const turn = intakeTurn.then(fn);
    intakeTurn = turn.catch(() => undefined);
    return turn;
  };

  /**
   * Send batches delivered directly here, by first id, while in hand and for {@link SEEN_MS} after they finished: a
   * copy of one that comes meanwhile is settled with it (acked when it is; one that failed is forgotten at once).
   */
  const inHand = new Map<string, { later: Promise<void>; doneAt: number }>();
  const inHandSweep = setInterval(() => {
    const old = Date.now() - SEEN_MS;
    for (const [id, h] of inHand) if (h.doneAt && h.doneAt < old) inHand.delete(id);
  }, SEEN_MS / 6);
  inHandSweep.unref();
  const handle = async (m: JsMsg, prio: Priority, ofPartition: Set<Promise<void>>): Promise<void | Later> => {
    const batch = decodeAs<SendBatch>(m.data, "send_batch");
    const firstId = firstIdOf(m);
    if (c.directBacklog === 0 || batch.replayOf !== undefined) {
      // Every delivery through the queues (replayed dead letters too: queued again although delivered before), in the
      // intake turn: a batch's deliveries join their endpoints' queues after those of the batches that came before it.
      await inTurn(async () => {
        const { byEndpoint, payloads, skipped } = await plan(batch);
        await Promise.all([...skipped, enqueue(byEndpoint, payloads, batch.replayOf !== undefined)]);
      });
      stageItems.inc({ stage: "gateway-webhook" }, batch.sends.length);
      if (markDone) await markSendBatchDone(d.redis, firstId);
      return;
    }
    /** This copy settled with the one in hand: acked when it is; redelivered when it fails, or failed already (forgotten). */
    const withFirst = (): Later => {
      const first = inHand.get(firstId);
      if (!first) throw new Error(`send batch ${firstId}: its other copy failed`);
      return { later: first.later };
    };
    // A batch this process is delivering now, come again (nats-server 2.9.10 can deliver a handed-back batch a second
    // time, as new: docs/topics.md, "Several gateway-webhook processes"): acked or redelivered with the first copy.
    if (inHand.has(firstId)) return withFirst();
    const again = m.info.deliveryCount > 1 || m.headers?.get("Nats-Msg-Id") !== firstId;
    // Every batch is checked against the finished-batch marks, not only those delivered before by their count (for the
    // same reason); asked now, read in its turn.
    const doneBefore = sendBatchDone(d.redis, firstId);
    doneBefore.catch(() => undefined);
    let freeSlot!: () => void;
    const held = new Promise<void>((r) => (freeSlot = r));
    await new Promise<void>((go) => void slots.run(() => (go(), held), PRIORITIES.indexOf(prio)));
    let groups: Promise<GroupResult>[] | null | "copy";
    try {
      groups = await inTurn(async () => {
        // A batch handled before (redelivered, published again, or delivered again as new) and finished then (its receipts
        // published, its direct deliveries recorded): nothing more to do. Read in its turn, so a redelivered batch is not
        // overtaken by newer ones meanwhile (a partition handed over gets its previous holder's unfinished batches first).
        if (inHand.has(firstId)) return "copy";
        if (await doneBefore) return null;
        const { byEndpoint, payloads, skipped } = await plan(batch);
        // Redelivered unfinished (its gateway died, or it was published again): what an earlier attempt had answered is
        // not posted again, only reported and recorded with the rest.
        const answeredBefore = again ? answeredGroups(byEndpoint, await answered.of(webhookAnsweredKey(firstId))) : [];
        const mine: [string, Direct, { id: string; d: QueuedDelivery }[]][] = [];
        const toQueue = new Map<string, { id: string; d: QueuedDelivery }[]>();
        const candidates: string[] = [];
        for (const [id, items] of byEndpoint) {
          const st = direct.get(id);
          if (st) mine.push([id, st, items]);
          else if (running.has(id)) toQueue.set(id, items);
          else candidates.push(id);
        }
        if (candidates.length) {
          await Promise.all(candidates.map((id) => releasing.get(id) ?? Promise.resolve()));
          const held = await queues.direct(candidates, owner, "take", Date.now());
          for (const [k, id] of candidates.entries()) {
            const items = byEndpoint.get(id)!;
            if (!held[k] || direct.has(id) || running.has(id)) {
              toQueue.set(id, items);
              continue;
            }
            const st = newDirect();
            direct.set(id, st);
            mine.push([id, st, items]);
          }
        }
        // The earlier attempt's groups first: an endpoint's last answer is then its newest.
        const chained = [...answeredBefore.map((g) => Promise.resolve(g)), ...mine.map(([id, st, items]) => chain(id, st, items, payloads, firstId))];
        log.debug({ batch: firstId, direct: mine.length, queued: toQueue.size, redelivery: m.info.deliveryCount }, "send batch taken");
        await Promise.all([...skipped, enqueue(toQueue, payloads, false)]);
        return chained;
      });
    } catch (err) {
      freeSlot();
      throw err;
    }
    if (!groups) return freeSlot();
    if (groups === "copy") {
      freeSlot();
      return withFirst();
    }
    stageItems.inc({ stage: "gateway-webhook" }, batch.sends.length);
    const later = Promise.all(groups).then((results) => finishDirect(firstId, results)).finally(freeSlot);
    const mine = { later, doneAt: 0 };
    inHand.set(firstId, mine);
    inflight.add(later);
    ofPartition.add(later);
    void later.then(
      () => void (mine.doneAt = Date.now()),
      () => void (inHand.get(firstId) === mine && inHand.delete(firstId)),
    ).finally(() => (inflight.delete(later), ofPartition.delete(later)));
    return { later };
  };
  /**
   * Ends a batch's direct deliveries: publishes their receipts (one receipt batch per notification, under the batch's
   * id: a redelivery publishing them again is dropped), then records them per endpoint (counts, last answer, history)
   * and marks the batch done (a redelivery then sends nothing).
   */
  const finishDirect = async (firstId: string, results: readonly GroupResult[]): Promise<void> => {
    const now = Date.now();
    const receipts = new ReceiptCollector();
    const record = new Map<string, { delivered: number; failed: number; lastStatus: number; history: HistoryEntry[] }>();
    let sent = 0;
    let failed = 0;
    for (const g of results) {
      for (const h of g.delivered) receipts.add(h.nid, entryOf(g.endpoint, "sent", h.at));
      for (const { replayOf, ...h } of g.failed) receipts.add(h.nid, entryOf(g.endpoint, "failed", h.at, h.reason, replayOf));
      if (g.delivered.length + g.failed.length === 0) continue;
      sent += g.delivered.length;
      failed += g.failed.length;
      const prev = record.get(g.endpoint);
      // An endpoint's deliveries answered by an earlier attempt come as a group of their own: merged, in time order.
      const history = g.failed.length || prev ? [...(prev?.history ?? []), ...g.delivered, ...g.failed].sort((a, b) => a.at - b.at) : g.delivered;
      const lastStatus = g.lastStatus || (prev?.lastStatus ?? 0);
      record.set(g.endpoint, { delivered: g.delivered.length + (prev?.delivered ?? 0), failed: g.failed.length + (prev?.failed ?? 0), lastStatus, history });
    }
    await receipts.publish(d.nats, firstId, rec, pub);
    await Promise.all([queues.recordDirect(record, now), markSendBatchDone(d.redis, firstId)]);
    await answered.forget(webhookAnsweredKey(firstId));
    log.debug({ batch: firstId, sent, failed }, "send batch done");
    if (sent) gatewaySends.inc({ channel: "webhook", app: "webhook", outcome: "sent" }, sent);
    if (failed) gatewaySends.inc({ channel: "webhook", app: "webhook", outcome: "failed" }, failed);
  };
  // Endpoint partitions: each held by one process at a time, so every delivery of an endpoint comes to one process,
  // in publish order. Handed over, a partition's lanes stop and the direct deliveries of its batches finish (or queue)
  // before the lease goes.
  const ownership = await endpointPartitions({ cfg: d.cfg, nats: d.nats, log, owner, stopping: () => stopping, handle });

  // 1b. Event streams: nfx's own lifecycle events, from receipts and accepted requests, to the endpoints that subscribe to them.
  const eventStreams = startEventStreams({ nats: d.nats, redis: d.redis, queues, log, queued });

  // 2. Delivery: one worker per endpoint this process holds.
  const running = new Map<string, Promise<void>>();
  /** Endpoints not to look at again before a time (backing off, or held by another process). */
  const notBefore = new Map<string, number>();
  /** Endpoints this process queued deliveries for since the scheduler last ran, and whether the active set is to be read at once. */
  const fresh = new Set<string>();
  let scanNow = true;
  /** Workers whose queue ran empty, waiting for more ({@link LINGER_MS}): called with true when this process queued some. */
  const idle = new Map<string, (more: boolean) => void>();
  let wakeUp: (() => void) | null = null;
  function wake(): void {
    const w = wakeUp;
    wakeUp = null;
    w?.();
  }
  /**
   * This process queued deliveries for `ids`: a worker waiting on one goes on at once; the others are taken by the
   * scheduler. One delivered directly here is spilled: its queue is delivered after what it posted, in order.
   */
  function queued(ids: Iterable<string>): void {
    for (const id of ids) {
      const st = direct.get(id);
      if (st && !st.spilled) spillAll(st);
      const w = idle.get(id);
      if (w) {
        idle.delete(id);
        w(true);
      } else fresh.add(id);
    }
    if (fresh.size) wake();
  }
  /** Waits up to LINGER_MS for this process to queue more for `id` (only while there is room for other endpoints' workers). */
  const linger = (id: string): Promise<boolean> =>
    stopping || running.size >= c.maxEndpointsPerProcess ? Promise.resolve(false) : new Promise((res) => {
      const t = setTimeout(() => (idle.delete(id), res(false)), LINGER_MS);
      idle.set(id, (more) => (clearTimeout(t), res(more)));
    });

  /** A delivery with what it sends. */
  type Ready = QueuedDelivery & WebhookPayload;
  // Payloads by notification, read once per process (a notification goes to many endpoints); the oldest let go past 4,096.
  const payloadCache = new Map<string, WebhookPayload>();
  /** Payloads being read: a notification's first worker reads it, the others (its other endpoints') wait for that read. */
  const payloadReads = new Map<string, Promise<void>>();
  const readPayloads = async (nids: string[]): Promise<void> => {
    try {
      for (const [nid, p] of await queues.payloads(nids)) {
        if (!p) continue;
        payloadCache.set(nid, p);
        if (payloadCache.size > 4096) payloadCache.delete(payloadCache.keys().next().value!);
      }
    } finally {
      for (const nid of nids) payloadReads.delete(nid);
    }
  };
  /** `items` with their payloads (null: the payload expired, after `streams.retentionHours` in the queue). */
  const withPayloads = async (items: readonly { id: string; d: QueuedDelivery }[]): Promise<{ id: string; q: Ready | null; raw: QueuedDelivery }[]> => {
    const wanted = new Set(items.filter((x) => x.d.body === undefined && !payloadCache.has(x.d.nid)).map((x) => x.d.nid));
    if (wanted.size) {
      const missing = [...wanted].filter((nid) => !payloadReads.has(nid));
      if (missing.length) {
        const read = readPayloads(missing);
        for (const nid of missing) payloadReads.set(nid, read);
      }
      await Promise.all([...wanted].map((nid) => payloadReads.get(nid) ?? Promise.resolve()));
    }
    return items.map(({ id, d }) => {
      if (d.body !== undefined) return { id, q: { ...d, body: d.body, brief: d.brief ?? ({ id: d.nid } as NotificationBrief) }, raw: d };
      const p = payloadCache.get(d.nid);
      return { id, q: p ? { ...d, ...p } : null, raw: d };
    });
  };

  const poster = new WebhookPoster(agent, c.timeoutMs);
  const attempt = (cep: Cached, id: string, body: string): Promise<PostAnswer> =>
    poster.post(cep.origin, cep.path, { "content-type": "application/json", "user-agent": "nfx-webhooks/1", ...signatureHeaders(id, Math.floor(Date.now() / 1000), body, cep.keys) }, body);

  /**
   * Delivers `endpointId`'s queue from the head while this process holds its lease; returns when it is empty (after
   * waiting LINGER_MS for more), paused, backing off or lost. Each step is one Redis call (lib/flow/endpoint-queues.ts
   * `next`): it finishes the deliveries made since the last (their receipts already stored) and reads the gate and
   * the next `endpoints.headRead` deliveries. Delivered ones are recorded and finished when the read is through, or
   * every `endpoints.recordEveryMs` while it is not.
   */
  const work = async (endpointId: string): Promise<void> => {
    const renew = setInterval(() => void queues.lease(endpointId, owner, "renew").catch(() => undefined), Math.max(500, c.leaseMs / 3));
    let lastStart = 0;
    /** The lease was released with the endpoint's deactivation (one redis-server): nothing to release at the end. */
    let released = false;
    /** Delivered, receipts stored, not yet finished in the queue: the next step finishes them (or the end of the work). */
    let settled: HistoryEntry[] = [];
    // Delivered but not yet finished: noted as they are answered, dropped once finished. What a previous holder noted
    // (it died before finishing them) is read once: those at the head are finished as delivered, not posted again.
    const notesKey = endpointAnsweredKey(endpointId);
    let prior: Map<string, AnsweredNote> | null = null;
    const finished = (list: readonly HistoryEntry[]): void => answered.drop(notesKey, list.filter((e) => e.outcome === "delivered").map((e) => e.id));
    const countSent = (n: number): void => void (n && gatewaySends.inc({ channel: "webhook", app: "webhook", outcome: "sent" }, n));
    const finish = async (): Promise<void> => {
      if (settled.length === 0) return;
      const list = settled;
      settled = [];
      countSent(await queues.settleMany(endpointId, list, Date.now()));
      finished(list);
    };
    /** Settles the head delivery `id` as failed for good, after its receipt (none for an event-stream delivery: not a send of its notification). */
    const settleFailed = async (id: string, q: QueuedDelivery, reason: string, status: number, attempts: number): Promise<void> => {
      if (!q.event) await recordReceipt(q.nid, id, entryOf(endpointId, "failed", Date.now(), reason, q.replayOf));
      await queues.settle(endpointId, { id, nid: q.nid, type: q.type, outcome: "failed", status, attempts, reason, at: Date.now() }, Date.now());
      gatewaySends.inc({ channel: "webhook", app: "webhook", outcome: "failed" });
    };
    try {
      prior = await answered.of(notesKey);
      for (;;) {
        if (stopping) return;
        const cep = await cachedOf(endpointId);
        const ep = cep.ep;
        if (!ep) {
          await queues.drop(endpointId);
          return;
        }
        const step = await queues.next(endpointId, settled, c.headRead, Date.now());
        countSent(step.finished);
        finished(settled);
        settled = [];
        if (step.paused) return;
        const now = Date.now();
        if (step.nextAt > now) {
          notBefore.set(endpointId, step.nextAt);
          return;
        }
        if (step.items.length === 0) {
          if (await linger(endpointId)) continue;
          const idleNow = await queues.deactivateIfEmpty(endpointId, owner);
          released = idleNow.released;
          if (!idleNow.active) return;
          continue;
        }
        const ready = await withPayloads(step.items);
        // The previous holder's unfinished deliveries are at the head, within one read.
        const noted = prior;
        prior = null;
        let attempts = step.attempts;
        let recordedAt = Date.now();
        // Delivered items: their receipts are stored together, then they are finished head first (by the next step, before anything else is settled, or every `endpoints.recordEveryMs` during a long read).
        let delivered: { id: string; q: Ready; status: number; made: number; at: number }[] = [];
        const storeDelivered = async (): Promise<void> => {
          if (delivered.length === 0) return;
          const list = delivered;
          delivered = [];
          await outbox.add(list.filter((x) => !x.q.event).map((x) => receiptOf(x.q.nid, x.id, entryOf(endpointId, "sent", x.at, undefined, x.q.replayOf))));
          for (const x of list) settled.push({ id: x.id, nid: x.q.nid, type: x.q.type, outcome: "delivered", status: x.status, attempts: x.made, at: x.at });
        };
        for (const { id, q: ready1, raw } of ready) {
          if (stopping) return void (await storeDelivered());
          if (!ready1) {
            // Its payload outlived `streams.retentionHours` in the queue (an endpoint paused that long): failed, nothing to send.
            await storeDelivered();
            await finish();
            await settleFailed(id, raw, "expired", 0, 0);
            continue;
          }
          const q = ready1;
          const before = noted?.get(id);
          if (before?.outcome === "delivered") {
            delivered.push({ id, q, status: before.status, made: attempts + 1, at: before.at });
            attempts = 0;
            continue;
          }
          await paced(ep.rateLimit, lastStart);
          lastStart = Date.now();
          const r = await attempt(cep, id, q.body);
          const made = attempts + 1;
          attempts = 0;
          const kind = r.status ? classifyAnswer(r.status) : "retry";
          /** This delivery failed for good (delivered ones are finished together: storeDelivered, finish). */
          const failed = (reason: string): Promise<void> => settleFailed(id, q, reason, r.status, made);
          if (kind === "delivered") {
            const at = Date.now();
            delivered.push({ id, q, status: r.status, made, at });
            answered.note(notesKey, id, { outcome: "delivered", status: r.status, at });
            if (at - recordedAt >= c.recordEveryMs) {
              await storeDelivered();
              await finish();
              recordedAt = Date.now();
            }
            continue;
          }
          await storeDelivered();
          await finish();
          if (kind === "gone") {
            await unsubscribeGone(endpointId, q.brief);
            await failed("gone");
            continue;
          }
          const reason = retryReason(r);
          /** Dead-letters this delivery (an event-stream delivery is not a send: only failed) and settles it failed. */
          const failedForGood = async (): Promise<void> => {
            if (!q.event) await deadLetter(endpointId, id, q, q.brief, reason, made, Date.now());
            await failed(reason);
          };
          if (kind === "refused") {
            await failedForGood();
            continue;
          }
          // Retryable: the head waits (later deliveries stay behind it: order), or it has had its attempts.
          const now2 = Date.now();
          const delay = backoffMs(made, c.backoffBaseMs, c.backoffMaxMs, r.retryAfter);
          const streak = await queues.fail(endpointId, now2, now2 + delay, r.status, r.error ?? reason, made);
          gatewayRetries.inc({ channel: "webhook" });
          if (streak.consecutive >= c.pauseAfterFailures && now2 - streak.failingSince >= c.pauseAfterMs) {
            const why = `${streak.consecutive} failed attempts in a row since ${new Date(streak.failingSince).toISOString()} (last: ${r.error ?? `HTTP ${r.status}`})`;
            await queues.pause(endpointId, why, now2);
            log.warn({ endpoint: endpointId, url: ep.url, reason: why }, "endpoint paused");
            return;
          }
          if (made >= c.maxAttempts) {
            await failedForGood();
            break;
          }
          notBefore.set(endpointId, now2 + delay);
          return;
        }
        await storeDelivered();
      }
    } finally {
      clearInterval(renew);
      idle.delete(endpointId);
      await finish().catch((err) => log.warn({ err, endpoint: endpointId }, "finishing delivered webhooks failed; they are sent again (same webhook-id)"));
      if (!released) await queues.lease(endpointId, owner, "release").catch(() => undefined);
    }
  };

  let lastScan = 0;
  /** Takes the endpoints this process queued for, and every SCAN_MS (or when a worker's place came free) those of the active set. */
  const schedule = async (): Promise<void> => {
    const now = Date.now();
    const ids = new Set(fresh);
    fresh.clear();
    if (scanNow || now - lastScan >= SCAN_MS) {
      scanNow = false;
      lastScan = now;
      for (const id of await queues.active()) {
        // Deliveries queued by another process for an endpoint delivered directly here: it goes to its queue now, not at the next renewal.
        const st = direct.get(id);
        if (st && !st.spilled) spillAll(st);
        ids.add(id);
      }
    }
    // The leases of every endpoint there is room for, taken at once (one round trip on one redis-server).
    const wanted: string[] = [];
    for (const id of ids) {
      if (wanted.length + running.size >= c.maxEndpointsPerProcess) break;
      if (!running.has(id) && !direct.has(id) && (notBefore.get(id) ?? 0) <= now) wanted.push(id);
    }
    const held = await Promise.all(wanted.map((id) => queues.lease(id, owner, "take").catch((err) => (log.warn({ err, endpoint: id }, "endpoint lease not taken"), false))));
    for (const [k, id] of wanted.entries()) {
      if (!held[k]) {
        notBefore.set(id, now + 1000);
        continue;
      }
      notBefore.delete(id);
      const w = work(id)
        .catch((err) => {
          log.warn({ err, endpoint: id }, "endpoint delivery failed; tried again shortly");
          notBefore.set(id, Date.now() + 1000);
        })
        .finally(() => {
          // A place came free: look at the active set again (endpoints may have waited for one).
          if (running.size >= c.maxEndpointsPerProcess) scanNow = true;
          running.delete(id);
          if (scanNow) wake();
        });
      running.set(id, w);
    }
  };
  const loop = (async () => {
    while (!stopping) {
      await schedule().catch((err) => log.warn({ err }, "webhook scheduling failed"));
      if (fresh.size || scanNow) continue;
      await new Promise<void>((r) => {
        const t = setTimeout(r, SCAN_MS);
        wakeUp = () => (clearTimeout(t), r());
      });
    }
  })();

  // Every consumer of the webhook send stream is a lane of this role's (one per priority and partition).
  const wq = watchWorkQueue({ jsm: d.nats.jsm, stream: STREAM.send("webhook"), configs: consumerConfigsOf(d.cfg, STREAM.send("webhook")), log });
  await ownership.start();
  log.info({ owner, partitions: ownership.owned() }, "webhook gateway ready");
  return {
    async stop() {
      stopping = true;
      wq.stop();
      rec?.stop();
      for (const w of idle.values()) w(false);
      idle.clear();
      wake();
      // Partitions handed over: their lanes stopped, direct deliveries in progress ended (what is left of them queued),
      // their batches acked; their endpoints let go.
      await ownership.stop();
      await Promise.allSettled([...inflight]);
      await Promise.allSettled([...releasing.values()]);
      clearInterval(directRenewal);
      clearInterval(slowSweep);
      clearInterval(inHandSweep);
      await Promise.allSettled([...direct.keys()].map((id) => queues.lease(id, owner, "release")));
      await eventStreams.stop();
      await loop;
      await Promise.allSettled(running.values());
      poster.close();
      await agent.close();
      await outbox.stop();
      await answered.flush();
      pub.close();
    },
  };
}
