// The loop every provider gateway shares: consumes send batches by priority and wires the delivery ledger, the send-time re-check, each app's bulkhead, answer outcomes and receipts together.
import { randomBytes } from "node:crypto";

import type { JsMsg } from "@nats-io/jetstream";

import { Cancellations } from "../campaign/cancellations.js";
import { encode } from "../core/codec.js";
import type { Config } from "../core/config.js";
import type { Logger } from "../core/log.js";
import { ownValue } from "../core/own-keys.js";
import { BUCKET, type Channel, CLASS_PRIORITIES, CONSUMER, LANE_CLASSES, type LaneClass, MSGID, type Priority, retrySubject, sendSubject, STREAM } from "../core/subjects.js";
import type { DeadLetter, ReceiptEntry, RetryBatch, Send, SendBatch } from "../core/types.js";
import { removeDeadToken } from "../directory/directory.js";
import { Admission, LatencyReporter } from "../flow/admission.js";
import { type BulkheadState, isRefusal, type SendResult } from "../flow/bulkhead.js";
import { holdUntilDue } from "../flow/hold-until-due.js";
import { decodeAs, firstIdOf, type Lanes, PoisonMessage, runLanes } from "../flow/lanes.js";
import { watchWorkQueue } from "../flow/stranded.js";
import { perLaneClass } from "../infra/lane-connections.js";
import { gatewayRetries, gatewaySends, shedTotal, stageItems, watchBreakers } from "../infra/metrics.js";
import type { Nats } from "../infra/nats.js";
import type { NatsIdentity } from "../infra/nats-auth.js";
import { type Redis, warnRedisSettings } from "../infra/redis.js";
import { consumerConfigsOf } from "../infra/topology.js";
import { type BatchLedger, DeliveryLedger } from "./delivery-ledger.js";
import { storeDeadLetter } from "./dlq.js";
import { answerOutcome, beforeSend, type Later, pushBackOutcome, type Recorded, releaseOf, tokenGone } from "./outcomes.js";
import { type ChannelClient, ProviderApps } from "./provider-apps.js";
import { markSendBatchDone, ReceiptCollector, receiptReconciler, sendBatchesChecked } from "./receipts.js";
import { changedSince } from "./send-recheck.js";

export { type ChannelClient, primaryWithFailovers, type ProviderApp, type SendResult } from "./provider-apps.js";

/** What a gateway runs on: configuration, connections, logger, and a clock (tests pass a fake one; defaults to `Date.now`). */
export interface GatewayDeps {
  cfg: Config;
  nats: Nats;
  redis: Redis;
  log: Logger;
  now?: () => number;
  /** The lane classes this process delivers (default both; `nfx run gateway-<channel> --lanes urgent|bulk` runs one). */
  lanes?: readonly LaneClass[];
}

/** A running gateway: stop it, and each of its apps' bulkhead state (per lane class it runs). */
export interface RunningGateway {
  stop(): Promise<void>;
  bulkheads(): BulkheadState[];
}

/** Send batches of `channel` a gateway process handles at once per lane: the channel's own setting, else `gateways.batchConcurrency`. */
export function batchConcurrencyOf(cfg: Config, channel: Channel): number {
  return (cfg.gateways as Partial<Record<Channel, { batchConcurrency?: number }>>)[channel]?.batchConcurrency ?? cfg.gateways.batchConcurrency;
}

/**
 * Runs a gateway for the lane classes in `d.lanes` (both by default), each
 * with a client of its own from `makeClient` (its own provider connections,
 * bulkheads and in-flight budget: {@link runGatewayLanes}). A process running
 * both classes gives the urgent one its own NATS and Redis connections too, so
 * urgent sends never queue behind bulk batches on a connection.
 */
export async function runGateway(d: GatewayDeps, makeClient: () => ChannelClient): Promise<RunningGateway> {
  let first: ChannelClient | null = makeClient();
  const channel = first.channel;
  // A notification's delivery keys in a user shard are one hash that expires whole: Redis should free it in the background.
  void warnRedisSettings(d.redis, d.log.child({ actor: `gateway-${channel}` }));
  const client = (): ChannelClient => {
    const c = first ?? makeClient();
    first = null;
    return c;
  };
  const run = await perLaneClass(
    { ...d, lanes: d.lanes ?? LANE_CLASSES, as: `gateway-${channel}` as NatsIdentity, name: `nfx-gateway-${channel}` },
    (c, cls) => runGatewayLanes({ ...d, ...c }, client(), cls),
  );
  return { bulkheads: () => run.parts.flatMap((p) => p.bulkheads()), stop: run.stop };
}

/**
 * Runs a gateway for `client` on the priority lanes of class `cls` of its
 * channel's send stream, and releases its pushed-back sends from NFX_RETRY when due.
 *
 * Per batch: every delivery key is claimed for this attempt in one Redis call
 * before any provider call ({@link DeliveryLedger}, taking over keys this
 * batch id's earlier release left held); a key already recorded re-emits its
 * recorded receipt, a key claimed by another attempt (live, or dead until its
 * claim lapses) is pushed back. While the batch runs its claims are renewed
 * every third of `claimTtlSec`, so a slow provider never loses one and a dead
 * process's lapse within `claimTtlSec`. Users whose opt-out or preferences
 * changed after the batch was decided are re-checked ({@link changedSince},
 * {@link beforeSend}), and sends past their shed deadline are shed, without a
 * provider call (docs/architecture.md, "Overload and shedding"). The rest go, grouped per notification and app, through
 * each app's bulkhead ({@link ProviderApps}, failing over to the app's
 * `failover` while its breaker is open). As each provider request answers,
 * its accepted and permanently failed sends are recorded at once (one
 * pipeline per event-loop turn; a gone token leaves the directory before its
 * failure is recorded); retryable failures go to NFX_RETRY with backoff
 * (never before Retry-After; at least a minute after a quota error; never
 * past expiry), or to the dead-letter stream after `retry.maxAttempts`
 * ({@link answerOutcome}); sends the bulkhead refused go back to NFX_RETRY
 * without using an attempt ({@link pushBackOutcome}, {@link releaseOf}).
 * Receipts are published ({@link ReceiptCollector}), then the batch is acked.
 * The one window for a duplicate is a provider call in flight — sent, its
 * answer not yet recorded — when the process dies (docs/architecture.md,
 * "Guarantees").
 */
async function runGatewayLanes(d: GatewayDeps, client: ChannelClient, cls: LaneClass): Promise<RunningGateway> {
  const channel = client.channel;
  const log = d.log.child({ actor: `gateway-${channel}`, lanes: cls });
  const now = d.now ?? Date.now;
  const g = d.cfg.gateways;
  const cancellations = await Cancellations.watch(await d.nats.kvm.open(BUCKET.campaigns));
  const ledger = new DeliveryLedger(d.redis, g, log);
  const rec = receiptReconciler({ ...d, log });
  /** Tells this process's attempts apart from another's at the same delivery of a batch. */
  const proc = randomBytes(4).toString("base64url");
  const apps = new ProviderApps(client, log);
  // Urgent lanes report their latency to admission control; bulk lanes are paced by it (lib/flow/admission.ts).
  let lanesRef: Lanes | null = null;
  const latency = new LatencyReporter(d.nats, d.cfg, "delivered", `gateway-${channel}`, cls === "urgent", () => lanesRef?.oldestWaitingMs() ?? 0);
  const admission = cls === "bulk" ? new Admission(d.nats, d.cfg, `gateway-${channel}`, log) : null;
  const markDone = sendBatchesChecked(d.cfg);

  const handle = async (m: JsMsg): Promise<void> => {
    const t0 = performance.now();
    await handleBatch(m);
    if (admission) await admission.pace(performance.now() - t0);
  };

  const handleBatch = async (m: JsMsg): Promise<void> => {
    const batch = decodeAs<SendBatch>(m.data, "send_batch");
    if (batch.channel !== channel) throw new PoisonMessage(`a ${batch.channel} batch on the ${channel} stream`);
    // A copy published again is the same batch: its first id keys its claims, records, releases and receipts, so what
    // the first delivery recorded is its own and is reported, not an echo.
    const batchId = firstIdOf(m);
    const prio = (m.subject.split(".")[3] ?? "normal") as Priority;
    const keys = await ledger.claim(batch, channel, batchId, `${m.info.deliveryCount}.${proc}`);
    try {
      await settleBatch(batch, batchId, prio, keys);
      if (markDone) await markSendBatchDone(d.redis, batchId);
    } finally {
      keys.close();
    }
  };

  /** Everything after the claim: sends, records each outcome as it is known, pushes back, dead-letters, publishes receipts. */
  const settleBatch = async (batch: SendBatch, batchId: string, prio: Priority, keys: BatchLedger): Promise<void> => {
    const receipts = new ReceiptCollector();
    const add = (s: Send, r: Recorded & { echo?: true }): void => {
      // Built field by field (no spreads): one entry per send, the hot path's most numerous object.
      const e: ReceiptEntry = { user: s.user, outcome: r.outcome, channel, device: s.device, at: r.at };
      if (r.reason !== undefined) e.reason = r.reason;
      if (r.providerId !== undefined) e.providerId = r.providerId;
      if (r.echo) e.echo = true;
      if (batch.replayOf) e.supersedes = batch.replayOf;
      receipts.add(s.nid, e);
    };
    /** Records send `i`'s outcome (in its event-loop turn's pipeline) and adds its receipt; the write is awaited through `keys.written()` before receipts and the ack. */
    const keep = (i: number, rec: Recorded): Promise<void> => {
      add(batch.sends[i], rec);
      return keys.record(i, rec);
    };
    /** Pushed-back sends by kind, with their indexes in the batch. */
    const retries: (Later & { i: number })[] = [];
    const waits: (Later & { i: number })[] = [];
    const dead: Promise<unknown>[] = [];

    /** Pushes back sends that were not attempted; they fail as expired when the wait would outlast the notification. */
    const pushBack = (idx: number[], retryInMs: number, why: string): void => {
      for (const i of idx) {
        const s = batch.sends[i];
        const n = batch.notifications[s.nid];
        const o = pushBackOutcome(s, retryInMs, why, { now: now(), expiresAt: n.expiresAt });
        if (o.kind === "shed") shedTotal.inc({ stage: `gateway-${channel}`, priority: n.priority, reason: o.record.reason ?? "" });
        if (o.kind === "expired" || o.kind === "shed") void keep(i, o.record);
        else waits.push({ i, send: o.send, at: o.at });
      }
    };

    // An earlier delivery of this same message still holds keys (running late, or dead until its claims lapse): the
    // whole batch waits for it. Pushed back on their own, those sends would find its records under another batch id and
    // report them as echoes, while that delivery may never publish its receipts (docs/architecture.md, "Guarantees").
    const states = batch.sends.map((_, i) => keys.state(i));
    if (states.some((k) => k.kind === "claimed" && k.sibling)) {
      throw new Error(`an earlier delivery of batch ${batchId} still holds its keys: this one waits (redelivered later)`);
    }
    const fresh: number[] = [];
    batch.sends.forEach((s, i) => {
      const k = states[i];
      if (k.kind === "mine") fresh.push(i);
      // Another attempt holds the key: look again soon (it records an outcome, or its claim lapses within claimTtlSec if it died).
      else if (k.kind === "claimed") pushBack([i], 2000, "claimed");
      // Already recorded: repeated for this copy's caller; an echo when another batch recorded it (that batch reports and counts it).
      else add(s, k.echo ? Object.assign({}, k.record, { echo: true }) : k.record);
    });
    const stale = await changedSince(d.redis, batch, [...new Set(fresh.map((i) => batch.sends[i].user))]);

    // Group what may go by notification and app; everything else is settled here
    // (suppressed when the user opted out or turned this channel off after the decision, recorded so a replay agrees).
    const groups = new Map<string, { nid: string; app: string; idx: number[] }>();
    for (const i of fresh) {
      const s = batch.sends[i];
      const n = batch.notifications[s.nid];
      // A pushed-back or retried send comes back through here too, so a send past its shed deadline never reaches the provider.
      const settled = beforeSend(n, stale.get(s.user), cancellations.has(s.nid), channel, now(), s.shedAfter, ownValue(d.cfg.categories, n.category)?.commercial ?? false);
      if (settled?.outcome === "shed") shedTotal.inc({ stage: `gateway-${channel}`, priority: n.priority, reason: settled.reason ?? "" });
      if (settled) void keep(i, settled);
      else {
        const app = apps.appOf(s);
        const k = `${s.nid}\u0000${app}`;
        let grp = groups.get(k);
        if (!grp) groups.set(k, (grp = { nid: s.nid, app, idx: [] }));
        grp.idx.push(i);
      }
    }

    const requests: Promise<void>[] = [];
    for (const grp of groups.values()) {
      const n = batch.notifications[grp.nid];
      const per = apps.perRequest(grp.app);
      for (let o = 0; o < grp.idx.length; o += per) {
        const idx = grp.idx.slice(o, o + per);
        const sends = idx.map((i) => batch.sends[i]);
        /** Settles send `j` of this request from its result; resolves the record's write, if the outcome has one. */
        const settle = (r: SendResult, j: number): Promise<void> | undefined => {
          const i = idx[j];
          const out = answerOutcome(sends[j], r, { retry: g.retry, now: now(), expiresAt: n.expiresAt });
          switch (out.kind) {
            case "sent":
              latency.observe(prio, n.createdAt, now());
              return keep(i, out.record);
            case "failed":
            case "expired":
              return keep(i, out.record);
            case "retry":
              gatewayRetries.inc({ channel });
              retries.push({ i, send: out.send, at: out.at });
              return undefined;
            case "dead": {
              // Attempts ran out: to the dead-letter stream with its context; once it is there the claim is dropped so a replay can send it.
              const dl: DeadLetter = { type: "dead_letter", channel, shard: batch.shard, notification: n, send: out.send, reason: out.reason, attempts: out.attempts, at: out.receipt.at };
              gatewaySends.inc({ channel, app: "-", outcome: "dead_letter" });
              dead.push(storeDeadLetter(d.nats, dl, batchId).then(() => keys.release(i)));
              add(out.send, out.receipt);
              return undefined;
            }
            default: {
              const never: never = out;
              throw new Error(`unhandled outcome ${JSON.stringify(never)}`);
            }
          }
        };
        /** Sends whose token the provider reported gone: settled after the directory lets go of the token. */
        const gone: number[] = [];
        /** `taken[j]` once send `j`'s answer was taken (as it arrived, from an app that answers send by send, or with the request's). */
        const taken: boolean[] = [];
        /** The record writes the request's answers started. */
        const writes: Promise<void>[] = [];
        /** Takes send `j`'s answer: settled now (its record write started), or, its token gone, after the directory lets go of it. */
        const take = (j: number, r: SendResult): void => {
          taken[j] = true;
          if (tokenGone(r)) gone.push(j);
          else {
            const w = settle(r, j);
            if (w) writes.push(w);
          }
        };
        // Called inside the bulkhead slot the moment the provider answers: outcomes recorded in this turn's pipeline, awaited before the slot is freed
        // (a failed write still fails the batch below, through `keys.written()`).
        const recordAnswer = (results: SendResult[]): Promise<void> => {
          // Columnar: every send of the request accepted under one provider id (an email request's recipients) is one
          // record, serialised and queued once for all their keys, and one latency observation per request.
          const r0 = results[0];
          if (taken.length === 0 && results.length > 1 && r0.ok && results.every((r) => r.ok && r.providerId === r0.providerId)) {
            const at = now();
            const rec: Recorded = r0.providerId === undefined ? { outcome: "sent", at } : { outcome: "sent", providerId: r0.providerId, at };
            latency.observe(prio, n.createdAt, at, results.length);
            for (const s of sends) add(s, rec);
            return keys.recordAll(idx, rec).then(() => undefined, () => undefined);
          }
          results.forEach((r, j) => {
            if (!taken[j]) take(j, r);
          });
          return Promise.all(writes).then(() => undefined, () => undefined);
        };
        requests.push(
          apps.dispatch(grp.app, n, sends, recordAnswer, take).then(async (results) => {
            if (isRefusal(results)) return pushBack(idx, results.retryInMs, results.refused);
            if (gone.length === 0) return;
            // A gone token leaves the directory before its failure is recorded, so a replay after a crash still removes it.
            await Promise.all(gone.map((j) => removeDeadToken(d.redis, d.nats.nc, d.cfg.cluster.shards, sends[j].user, sends[j].device, sends[j].token).catch((err) => log.warn({ err }, "token removal failed"))));
            for (const j of gone) void settle(results[j], j);
          }),
        );
      }
    }
    await Promise.all(requests);

    // Pushed-back sends: one held batch per kind; their keys stay claimed for the release, so nothing else sends them meanwhile.
    const later = async (list: (Later & { i: number })[], kind: "retry" | "wait"): Promise<void> => {
      if (list.length === 0) return;
      const rb = releaseOf(batch, batchId, prio, kind, list);
      const at = now();
      await d.nats.js.publish(retrySubject(channel, prio), encode(rb), { msgID: MSGID.held(rb.releaseId) });
      // Once the release is stored, its keys move from this attempt's claim to the release's hold (the release takes them over).
      keys.hold(list.map((l) => l.i), rb.releaseId, rb.due, at);
    };
    await Promise.all([later(retries, "retry"), later(waits, "wait"), ...dead]);
    await keys.written();

    await receipts.publish(d.nats, batchId, rec);
    stageItems.inc({ stage: `gateway-${channel}` }, batch.sends.length);
  };

  const lanes = (lanesRef = runLanes({
    js: d.nats.js, stream: STREAM.send(channel), consumer: (p) => CONSUMER.gateway(channel, p), priorities: CLASS_PRIORITIES[cls],
    concurrency: batchConcurrencyOf(d.cfg, channel), prefetch: 4, ackWaitSec: g.ackWaitSec, log, handle,
  }));
  const held = await holdUntilDue<RetryBatch>({
    nats: d.nats, log, stream: STREAM.retry, consumer: CONSUMER.retry(channel), type: "retry_batch", now,
    dueAt: (r) => r.due,
    release: (r) => d.nats.js.publish(sendSubject(channel, r.priority), encode(r.batch), { msgID: r.releaseId }),
  });
  const wq = watchWorkQueue({ jsm: d.nats.jsm, stream: STREAM.send(channel), configs: consumerConfigsOf(d.cfg, STREAM.send(channel), CLASS_PRIORITIES[cls].map((p) => CONSUMER.gateway(channel, p))), log });
  await lanes.ready;
  watchBreakers(channel, cls, () => apps.states());
  log.info({ apps: apps.names() }, "gateway ready");
  return {
    bulkheads: () => apps.states(),
    async stop() {
      wq.stop();
      rec?.stop();
      await lanes.stop();
      latency.close();
      admission?.close();
      await held.stop();
      cancellations.stop();
      await apps.close();
    },
  };
}
