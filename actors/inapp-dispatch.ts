// In-app dispatcher: takes in-app send batches by priority, stores each item in the user's inbox, offers it live to the gateways presence names for the user (`nfx.live.<gateway>`), and falls back to push, once, when no client acknowledges it in time.
import type { JsMsg } from "@nats-io/jetstream";
import { headers } from "@nats-io/transport-node";

import { decodeJson, encode, encodeJson } from "../lib/core/codec.js";
import type { Config } from "../lib/core/config.js";
import type { Logger } from "../lib/core/log.js";
import { type Channel, CLASS_PRIORITIES, CONSUMER, GATEWAY_CHANNELS, LANE_CLASSES, type LaneClass, LIVE_USER_HEADER, liveSubject, MSGID, type Priority, sendSubject, STREAM } from "../lib/core/subjects.js";
import type { NotificationBrief, ReceiptEntry, Send, SendBatch } from "../lib/core/types.js";
import { Admission, LatencyReporter } from "../lib/flow/admission.js";
import { decodeAs, firstIdOf, type Lanes, PoisonMessage, runLanes } from "../lib/flow/lanes.js";
import { shedReason } from "../lib/flow/shedding.js";
import { watchWorkQueue } from "../lib/flow/stranded.js";
import { publishChecked } from "../lib/flow/stream-reconciler.js";
import { jsPublisher } from "../lib/flow/stream-reconciler.js";
import { markSendBatchDone, ReceiptCollector, receiptReconciler, sendBatchesChecked } from "../lib/gateway/receipts.js";
import { Inbox, type InboxItem, inboxItemOf, itemWithState, type StoredItem } from "../lib/inapp/inbox.js";
import { gatewaysOfAll } from "../lib/inapp/presence.js";
import { perLaneClass } from "../lib/infra/lane-connections.js";
import { shedTotal, stageItems } from "../lib/infra/metrics.js";
import type { Nats } from "../lib/infra/nats.js";
import type { Redis } from "../lib/infra/redis.js";
import { consumerConfigsOf } from "../lib/infra/topology.js";
import { takenKeys } from "../lib/shard/taken-keys.js";

export interface InAppDispatchDeps {
  cfg: Config;
  nats: Nats;
  redis: Redis;
  log: Logger;
  now?: () => number;
}

/** What a WebSocket gateway receives on `nfx.live.<gateway>` for a user: an item to show, answered with {@link LiveAck} once a client displayed it (`{ok: false}` at once if it holds no connection of the user). */
export interface LiveOffer {
  t: "n";
  /** The delivery id the client acknowledges: the notification id. */
  id: string;
  item: InboxItem;
}
/** A gateway's answer to a {@link LiveOffer}: the connection that displayed it. */
export interface LiveAck {
  ok: true;
  gateway: string;
  conn: number;
}

/** Resolves the first of `ps` to settle with a value `pick` accepts, or undefined once all settled without one. */
function firstOf<T>(ps: readonly Promise<T>[], pick: (v: T) => boolean): Promise<T | undefined> {
  return new Promise((res) => {
    let left = ps.length;
    for (const p of ps) {
      void p.then((v) => {
        if (pick(v)) res(v);
        else if (--left === 0) res(undefined);
      });
    }
  });
}

/** The fallback sends of an in-app send, one batch per channel, carrying the content the shard actor rendered. */
function fallbackBatches(batch: SendBatch, s: Send, n: NotificationBrief): SendBatch[] {
  const by = new Map<Channel, Send[]>();
  for (const f of s.fallback ?? []) {
    const l = by.get(f.channel) ?? [];
    l.push({
      nid: s.nid, user: s.user, device: f.device, token: f.token,
      ...(f.app ? { app: f.app } : {}),
      ...(s.push ? { push: s.push } : {}),
      ...(s.shedAfter !== undefined ? { shedAfter: s.shedAfter } : {}),
      ...(f.channel === "email" && s.email ? { email: s.email } : {}),
      ...(f.channel === "sms" && s.sms ? { sms: s.sms } : {}),
    });
    by.set(f.channel, l);
  }
  return [...by].map(([channel, sends]) => ({
    type: "send_batch", channel, shard: batch.shard, notifications: { [n.id]: n }, sends,
    ...(batch.decidedAt !== undefined ? { decidedAt: batch.decidedAt } : {}),
  }));
}

/**
 * Runs the dispatcher on every priority lane of NFX_SEND_INAPP, the urgent
 * lanes (critical, high) on connections and a batch budget of their own. Per send:
 * the item goes into the user's inbox (a replayed send finds it there), then
 * is offered live with a request on `nfx.live.<user>`: only gateways holding
 * one of the user's connections subscribe, so NATS's interest routing picks
 * them, and "no responders" means nobody is connected. The first client
 * acknowledgement within `ws.ackTimeoutMs` settles the item as delivered;
 * otherwise it settles as fallen back and its fallback sends (planned by the
 * shard actor: the route without in-app) are published with a message id per
 * (notification, user, channel). Settling is one atomic transition in Redis,
 * so a send is either acknowledged or falls back, never both, and falls back
 * at most once however often the batch is redelivered. Receipts: `sent` and
 * `delivered` for an acknowledged send, `fallback` plus `queued` per fallback device
 * otherwise, `shed` for a send past its shed deadline (not stored, not offered), then the batch is acked.
 */
export async function startInAppDispatch(d: InAppDispatchDeps): Promise<{ stop(): Promise<void> }> {
  // Urgent sends on connections and a batch budget of their own (lib/infra/lane-connections.ts).
  const run = await perLaneClass({ ...d, lanes: LANE_CLASSES, as: "ws-gateway", name: "nfx-inapp-dispatch" }, (c, cls) => dispatchLanes({ ...d, ...c }, cls));
  return { stop: run.stop };
}

/** The dispatcher of one lane class's lanes (see {@link startInAppDispatch}). */
async function dispatchLanes(d: InAppDispatchDeps, cls: LaneClass): Promise<{ stop(): Promise<void> }> {
  const log = d.log.child({ actor: "inapp-dispatch", lanes: cls });
  // Its receipts, and the push (or other) fallbacks it publishes, are checked on replicated streams.
  const rec = receiptReconciler({ ...d, log }, GATEWAY_CHANNELS.map((c) => STREAM.send(c)));
  const markDone = sendBatchesChecked(d.cfg);
  const pub = jsPublisher(d.nats);
  const now = d.now ?? Date.now;
  const w = d.cfg.ws;
  const inbox = new Inbox(d.redis, { shards: d.cfg.cluster.shards, cap: w.inboxCap, retentionMs: w.inboxRetentionDays * 86_400_000 });
  const nc = d.nats.nc;
  let lanesRef: Lanes | null = null;
  const latency = new LatencyReporter(d.nats, d.cfg, "delivered", "inapp-dispatch", cls === "urgent", () => lanesRef?.oldestWaitingMs() ?? 0);
  const admission = cls === "bulk" ? new Admission(d.nats, d.cfg, "inapp-dispatch", log) : null;

  /**
   * Offers one item live to every gateway presence names for the user (`gws`, read for the whole batch); acked when any of them answers that a client
   * displayed it. Offline: no gateway named, or every one answered that it holds no connection of the user (or has gone).
   */
  const offer = async (s: Send, item: StoredItem, gws: readonly string[]): Promise<{ acked: boolean; reason?: string }> => {
    const body: LiveOffer = { t: "n", id: s.nid, item: itemWithState(item) };
    let reason = "offline";
    if (gws.length > 0) {
      const h = headers();
      h.set(LIVE_USER_HEADER, s.user);
      const data = encodeJson(body);
      const answers = gws.map((g) =>
        nc.request(liveSubject(g), data, { timeout: w.ackTimeoutMs, headers: h }).then(
          (r) => ((decodeJson<{ ok?: boolean }>(r.data).ok ?? false) ? "acked" : "offline"),
          (err: Error & { cause?: Error }) => (err.name === "NoResponders" || err.cause?.name === "NoResponders" ? "offline" : "no_ack"),
        ),
      );
      const first = await firstOf(answers, (a) => a === "acked");
      if (first === "acked") {
        const was = await inbox.settle(s.user, s.nid, "acked");
        return { acked: was !== "fallback" };
      }
      reason = (await Promise.all(answers)).every((a) => a === "offline") ? "offline" : "no_ack";
    }
    const was = await inbox.settle(s.user, s.nid, "fallback");
    return was === "acked" ? { acked: true } : { acked: false, reason };
  };

  const handle = async (m: JsMsg, prio: Priority): Promise<void> => {
    const t0 = performance.now();
    await handleBatch(m, prio);
    if (admission) await admission.pace(performance.now() - t0);
  };

  const handleBatch = async (m: JsMsg, prio: Priority): Promise<void> => {
    const batch = decodeAs<SendBatch>(m.data, "send_batch");
    if (batch.channel !== "inapp") throw new PoisonMessage(`a ${batch.channel} batch on the inapp stream`);
    // A copy published again reports under the first id, as the first would have.
    const batchId = firstIdOf(m);
    const receipts = new ReceiptCollector();
    const note = (nid: string, e: ReceiptEntry): void => receipts.add(nid, e);
    const fallbacks: Promise<unknown>[] = [];
    const fallBack = (s: Send, n: NotificationBrief, reason: string): void => {
      // With no fallback route the item stays in the inbox only.
      note(s.nid, { user: s.user, outcome: "fallback", channel: "inapp", device: "inapp", reason: s.fallback?.length ? reason : `${reason}:inbox_only`, at: now() });
      for (const b of fallbackBatches(batch, s, n)) {
        const id = MSGID.inappFallback(s.nid, s.user, b.channel);
        fallbacks.push(publishChecked(pub, rec, sendSubject(b.channel, prio), id, encode(b), takenKeys(id)));
        for (const f of b.sends) note(s.nid, { user: s.user, outcome: "queued", channel: b.channel, device: f.device, at: now() });
      }
    };

    /** A client acknowledged the item: it was sent and, being in the client's hands, delivered. */
    const delivered = (s: Send): void => {
      latency.observe(prio, batch.notifications[s.nid].createdAt, now());
      note(s.nid, { user: s.user, outcome: "sent", channel: "inapp", device: "inapp", at: now() });
      note(s.nid, { user: s.user, outcome: "delivered", channel: "inapp", device: "inapp", at: now() });
    };

    // Which gateways hold each user: one pipeline per batch.
    const present = await gatewaysOfAll(d.redis, d.cfg.cluster.shards, [...new Set(batch.sends.map((s) => s.user))]);
    await Promise.all(
      batch.sends.map(async (s) => {
        const n = batch.notifications[s.nid];
        if (!n) throw new PoisonMessage(`send for ${s.nid} without its notification`);
        // Past its shed deadline (normal or bulk of a shedding category): shed, neither stored nor offered.
        const shed = s.shedAfter !== undefined ? shedReason(s.shedAfter, n.expiresAt, now()) : null;
        if (shed) {
          shedTotal.inc({ stage: "inapp", priority: n.priority, reason: shed });
          return note(s.nid, { user: s.user, outcome: "shed", channel: "inapp", device: "inapp", reason: shed, at: now() });
        }
        if (n.expiresAt <= now()) return note(s.nid, { user: s.user, outcome: "failed", channel: "inapp", device: "inapp", reason: "expired", at: now() });
        const item = inboxItemOf(n, s);
        const st = await inbox.add(s.user, item);
        if (st === "acked") return delivered(s);
        if (st === "fallback") return fallBack(s, n, "no_ack");
        const r = await offer(s, item, present.get(s.user) ?? []);
        if (r.acked) delivered(s);
        else fallBack(s, n, r.reason ?? "no_ack");
      }),
    );
    await Promise.all(fallbacks);
    await receipts.publish(d.nats, batchId, rec);
    if (markDone) await markSendBatchDone(d.redis, batchId);
    stageItems.inc({ stage: "inapp" }, batch.sends.length);
  };

  const lanes = (lanesRef = runLanes({
    js: d.nats.js, stream: STREAM.send("inapp"), consumer: (p) => CONSUMER.gateway("inapp", p), priorities: CLASS_PRIORITIES[cls],
    concurrency: w.batchConcurrency, prefetch: 4, ackWaitSec: d.cfg.streams.ackWaitSec, log, handle,
  }));
  const wq = watchWorkQueue({ jsm: d.nats.jsm, stream: STREAM.send("inapp"), configs: consumerConfigsOf(d.cfg, STREAM.send("inapp"), CLASS_PRIORITIES[cls].map((p) => CONSUMER.gateway("inapp", p))), log });
  await lanes.ready;
  log.info({ ackTimeoutMs: w.ackTimeoutMs }, "in-app dispatcher ready");
  return {
    stop: async () => {
      wq.stop();
      await lanes.stop();
      latency.close();
      admission?.close();
    },
  };
}
