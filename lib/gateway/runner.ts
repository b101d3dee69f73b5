// The loop every provider gateway shares: consume send batches by priority, claim delivery keys, call each app through its bulkhead, record, retry later or dead-letter, emit receipts.
import { createHash, randomBytes } from "node:crypto";
import type { JsMsg } from "@nats-io/jetstream";
import type { Config } from "../core/config.js";
import type { BulkheadConfig } from "../../config/schema.js";
import { encode } from "../core/codec.js";
import { Bulkhead, isRefusal, type BulkheadState, type Refusal, type SendResult } from "../flow/bulkhead.js";
import { deliveryKey } from "../core/ids.js";
import { readUsers, removeDeadToken } from "../directory/directory.js";
import { changedKey, deliveredKey } from "../core/keys.js";
import { contentOf } from "../shard/policy.js";
import { ownValue } from "../core/own-keys.js";
import { PoisonMessage, decodeAs, runLanes } from "../flow/lanes.js";
import type { Logger } from "../core/log.js";
import type { Nats } from "../infra/nats.js";
import type { Redis } from "../infra/redis.js";
import { Cancellations } from "../campaign/cancellations.js";
import { holdUntilDue } from "../flow/hold-until-due.js";
import { Claims, OutcomeWriter, attemptMarker, heldMarker, isClaim } from "./delivery-claims.js";
import { planRetry, planWait } from "./retry-policy.js";
import { gatewayLatency, gatewayRetries, gatewaySends, stageItems, watchBreakers } from "../infra/metrics.js";
import { BUCKET, CONSUMER, MSGID, STREAM, dlqSubject, receiptSubject, retrySubject, sendSubject, type Channel, type Priority } from "../core/subjects.js";
import type { DeadLetter, NotificationBrief, ReceiptBatch, ReceiptEntry, RetryBatch, Send, SendBatch, UserRecord } from "../core/types.js";

export type { SendResult };

/** One provider app of a channel (an APNs bundle id and key, an FCM project, a SendGrid or Twilio account): the SDK call, nothing else. */
export interface ProviderApp {
  readonly name: string;
  /** Sends per provider request: 1 for APNs, FCM and SMS; up to 1000 personalizations for email. */
  readonly perRequest: number;
  /**
   * One provider request for `sends` (at most `perRequest`) of notification
   * `n`. Resolves one result per send, in order; provider errors are results,
   * never throws.
   */
  request(n: NotificationBrief, sends: readonly Send[]): Promise<SendResult[]>;
  close(): Promise<void>;
}

/** What a gateway file builds for its channel: its apps with their bulkhead settings, and which app a send goes to. */
export interface ChannelClient {
  readonly channel: Channel;
  readonly apps: readonly { app: ProviderApp; cfg: BulkheadConfig }[];
  /** The name of the app that sends `s` (e.g. by the device's bundle id); the first app when nothing matches. */
  route(s: Send): string;
}

/** A channel whose first app sends everything and whose other apps act only as configured failovers (email and SMS accounts). */
export function primaryWithFailovers<A extends BulkheadConfig>(channel: Channel, cfgs: readonly A[], create: (a: A) => ProviderApp): ChannelClient {
  const apps = cfgs.map((a) => ({ app: create(a), cfg: a }));
  const first = apps[0]!.app.name;
  return { channel, apps, route: () => first };
}

export interface GatewayDeps {
  cfg: Config;
  nats: Nats;
  redis: Redis;
  log: Logger;
  now?: () => number;
}

/**
 * Users of `batch` (not yet delivered) whose opt-out or preferences changed
 * after the batch was decided, with their current records: one ZMSCORE on the
 * shard's change set, and a read of just those users.
 */
async function changedSince(redis: Redis, batch: SendBatch, users: readonly string[]): Promise<Map<string, UserRecord>> {
  const out = new Map<string, UserRecord>();
  if (batch.decidedAt === undefined || users.length === 0) return out;
  const scores = await redis.zmscore(changedKey(batch.shard), ...users);
  const changed = users.filter((_, i) => scores[i] !== null && Number(scores[i]) >= batch.decidedAt!);
  if (changed.length === 0) return out;
  const recs = await readUsers(redis, batch.shard, changed);
  changed.forEach((u, i) => out.set(u, recs[i] ?? { id: u, optedOut: true, devices: [] }));
  return out;
}

/** Why a user's current record forbids this send now, or null. A deleted user counts as opted out. */
function recheck(u: UserRecord, n: NotificationBrief, channel: Channel): string | null {
  if (u.optedOut) return "opted_out";
  if (ownValue(u.preferences?.categories, n.category)?.[contentOf(channel)] === false) return "preference_off";
  return null;
}

/** What is kept per delivered key: enough to re-emit the same receipt on a replay. */
type Recorded = Pick<ReceiptEntry, "outcome" | "reason" | "providerId" | "at">;

/** Publishes a send batch's outcomes, one receipt batch per notification, with message ids from the batch's id (a redelivered batch's receipts are dropped as duplicates). */
export function publishReceipts(nats: Nats, batchId: string, entries: ReadonlyMap<string, ReceiptEntry[]>): Promise<unknown> {
  return Promise.all(
    [...entries].map(([nid, list]) => {
      const rb: ReceiptBatch = { type: "receipts", nid, stage: "gateway", entries: list };
      return nats.js.publish(receiptSubject(nid), encode(rb), { msgID: MSGID.delivered(batchId, nid) });
    }),
  );
}

/** A send that goes back on NFX_RETRY: tried again after `at`. */
type Later = { s: Send; at: number };

/**
 * Runs a gateway for `client` on every priority lane of its channel's send
 * stream, and releases its pushed-back sends from NFX_RETRY when due.
 *
 * Per batch: every delivery key is claimed for this attempt in one Redis call
 * before any provider call (taking over keys this batch id's earlier release
 * left held); a key already recorded re-emits its recorded receipt, a key
 * claimed by another attempt (live, or dead until its claim lapses) is pushed
 * back. While the batch runs its claims are renewed every third of
 * `claimTtlSec`, so a slow provider never loses one and a dead process's
 * lapse within `claimTtlSec`. Users whose opt-out or preferences changed
 * after the batch was decided are re-checked. The rest go, grouped per
 * notification and app, through each app's {@link Bulkhead} (failing over to
 * the app's `failover` while its breaker is open). As each provider request
 * answers, its accepted and permanently failed sends are recorded at once
 * (one pipeline per event-loop turn, {@link OutcomeWriter}; a gone token
 * leaves the directory before its failure is recorded); retryable failures go
 * to NFX_RETRY with backoff (never before Retry-After; at least a minute
 * after a quota error; never past expiry), or to the dead-letter stream after
 * `retry.maxAttempts`; sends the bulkhead refused go back to NFX_RETRY
 * without using an attempt. Receipts are published, then the batch is
 * acked. The one window for a duplicate is a provider call in flight — sent,
 * its answer not yet recorded — when the process dies (docs/architecture.md, "Guarantees").
 */
export async function runGateway(d: GatewayDeps, client: ChannelClient): Promise<{ stop(): Promise<void>; bulkheads(): BulkheadState[] }> {
  const channel = client.channel;
  const log = d.log.child({ actor: `gateway-${channel}` });
  const now = d.now ?? Date.now;
  const g = d.cfg.gateways;
  const cancellations = await Cancellations.watch(await d.nats.kvm.open(BUCKET.campaigns));
  const claims = new Claims(d.redis);
  const writer = new OutcomeWriter(d.redis);
  /** Tells this process's attempts apart from another's at the same delivery of a batch. */
  const proc = randomBytes(4).toString("base64url");
  const apps = new Map(client.apps.map(({ app, cfg }) => [app.name, { app, cfg, bulkhead: new Bulkhead(app.name, cfg, log) }]));

  /**
   * Sends `sends` of `n` through app `name`, or its failover while its
   * breaker is open. `recordAnswer` runs as soon as the provider answers and
   * holds the bulkhead slot until the records it started are written: a send
   * is in flight from its request's start until its outcome is recorded, and
   * the app's `concurrency` bounds exactly those. Resolves the results, or the
   * refusal when no app took them.
   */
  const dispatch = async (name: string, n: NotificationBrief, sends: Send[], recordAnswer: (res: SendResult[]) => Promise<void>, tried: Set<string> = new Set()): Promise<SendResult[] | Refusal> => {
    const a = apps.get(name)!;
    tried.add(name);
    const r = await a.bulkhead.run(sends.length, async () => {
      const end = gatewayLatency.startTimer({ channel, app: name });
      const res = await a.app.request(n, sends);
      end({ result: res.every((x) => x.ok) ? "ok" : res.some((x) => x.ok) ? "partial" : "error" });
      await recordAnswer(res);
      return res;
    });
    if (!isRefusal(r)) {
      for (const x of r) gatewaySends.inc({ channel, app: name, outcome: x.ok ? "sent" : x.error.retryable ? "retryable" : "failed" });
      return r;
    }
    gatewaySends.inc({ channel, app: name, outcome: "refused" }, sends.length);
    const f = a.cfg.failover;
    if (f && !tried.has(f) && apps.has(f)) {
      log.debug({ app: name, failover: f, sends: sends.length }, "failing over");
      return dispatch(f, n, sends, recordAnswer, tried);
    }
    return r;
  };

  const handle = async (m: JsMsg): Promise<void> => {
    const batch = decodeAs<SendBatch>(m.data, "send_batch");
    if (batch.channel !== channel) throw new PoisonMessage(`a ${batch.channel} batch on the ${channel} stream`);
    const batchId = m.headers?.get("Nats-Msg-Id") || `seq:${m.seq}`;
    const prio = (m.subject.split(".")[3] ?? "normal") as Priority;
    const keys = batch.sends.map((s) => deliveredKey(batch.shard, deliveryKey(s.nid, s.user, channel, s.device)));
    const mine = attemptMarker(batchId, `${m.info.deliveryCount}.${proc}`);
    const held = heldMarker(batchId);
    const prior = await claims.claim(keys, mine, g.claimTtlSec, held);
    /** Keys this attempt holds: claimed free, or taken over from this batch id's hold. */
    const owned = (i: number): boolean => prior[i] === null || prior[i] === undefined || prior[i] === held;
    const ownedKeys = keys.filter((_, i) => owned(i));
    // The live batch keeps its claims: renewed every third of the TTL until it ends (keys already recorded are left alone by the script).
    const renewal = setInterval(() => {
      claims.renew(ownedKeys, mine, g.claimTtlSec).catch((err) => log.warn({ err }, "claim renewal failed"));
    }, Math.max(1000, (g.claimTtlSec * 1000) / 3));
    try {
      await settleBatch(batch, batchId, prio, keys, prior, owned);
    } finally {
      clearInterval(renewal);
    }
  };

  /** Everything after the claim: sends, records each outcome as it is known, pushes back, dead-letters, publishes receipts. */
  const settleBatch = async (batch: SendBatch, batchId: string, prio: Priority, keys: string[], prior: (string | null)[], owned: (i: number) => boolean): Promise<void> => {
    const entries = new Map<string, ReceiptEntry[]>();
    const add = (s: Send, r: Recorded): void => {
      let l = entries.get(s.nid);
      if (!l) entries.set(s.nid, (l = []));
      l.push({ user: s.user, channel, device: s.device, ...r, ...(batch.replayOf ? { supersedes: batch.replayOf } : {}) });
    };
    /** Redis writes of this batch, each sent with its event-loop turn's pipeline; all must succeed before receipts and the ack. */
    const writes: Promise<void>[] = [];
    const keep = (i: number, rec: Recorded): void => {
      add(batch.sends[i]!, rec);
      writes.push(writer.set(keys[i]!, JSON.stringify(rec), g.deliveredTtlSec));
    };
    const retries: Later[] = [];
    const waits: Later[] = [];
    const retryKeys: number[] = [];
    const waitKeys: number[] = [];
    const dead: Promise<unknown>[] = [];

    /** Pushes back sends that were not attempted; they fail as expired when the wait would outlast the notification. */
    const pushBack = (idx: number[], retryInMs: number, why: string): void => {
      for (const i of idx) {
        const s = batch.sends[i]!;
        const at = planWait(retryInMs, s.waits ?? 0, now(), batch.notifications[s.nid]!.expiresAt);
        if (at === null) keep(i, { outcome: "failed", reason: `expired:${why}`, at: now() });
        else {
          waits.push({ s: { ...s, waits: (s.waits ?? 0) + 1 }, at });
          if (owned(i)) waitKeys.push(i);
        }
      }
    };

    const fresh: number[] = [];
    batch.sends.forEach((s, i) => {
      const p = prior[i];
      if (owned(i)) fresh.push(i);
      // Another attempt holds the key: look again soon (it records an outcome, or its claim lapses within claimTtlSec if it died).
      else if (isClaim(p!)) pushBack([i], 2000, "claimed");
      else add(s, JSON.parse(p!) as Recorded);
    });
    const stale = await changedSince(d.redis, batch, [...new Set(fresh.map((i) => batch.sends[i]!.user))]);

    // Group what may go by notification and app; everything else is settled here.
    const groups = new Map<string, { nid: string; app: string; idx: number[] }>();
    for (const i of fresh) {
      const s = batch.sends[i]!;
      const n = batch.notifications[s.nid]!;
      const u = stale.get(s.user);
      const why = u && recheck(u, n, channel);
      // The user opted out or turned this channel off after the decision: not sent, and recorded so a replay agrees.
      if (why) keep(i, { outcome: "suppressed", reason: why, at: now() });
      else if (cancellations.has(s.nid)) keep(i, { outcome: "cancelled", at: now() });
      else if (n.expiresAt <= now()) keep(i, { outcome: "failed", reason: "expired", at: now() });
      else {
        const routed = client.route(s);
        const app = apps.has(routed) ? routed : client.apps[0]!.app.name;
        const k = `${s.nid}\u0000${app}`;
        let grp = groups.get(k);
        if (!grp) groups.set(k, (grp = { nid: s.nid, app, idx: [] }));
        grp.idx.push(i);
      }
    }

    const requests: Promise<void>[] = [];
    for (const grp of groups.values()) {
      const n = batch.notifications[grp.nid]!;
      const per = apps.get(grp.app)!.app.perRequest;
      for (let o = 0; o < grp.idx.length; o += per) {
        const idx = grp.idx.slice(o, o + per);
        const sends = idx.map((i) => batch.sends[i]!);
        const settle = (r: SendResult, j: number): void => {
          const i = idx[j]!;
          const s = sends[j]!;
          if (r.ok) return keep(i, { outcome: "sent", providerId: r.providerId, at: now() });
          if (!r.error.retryable) return keep(i, { outcome: "failed", reason: r.error.reason, at: now() });
          const attempt = (s.attempt ?? 0) + 1;
          const plan = planRetry(g.retry, attempt, r.error, now(), n.expiresAt);
          if (plan.kind === "retry") {
            gatewayRetries.inc({ channel });
            retries.push({ s: { ...s, attempt }, at: plan.at });
            retryKeys.push(i);
          } else if (plan.kind === "expired") {
            keep(i, { outcome: "failed", reason: `expired:${r.error.reason}`, at: now() });
          } else {
            // Attempts ran out: to the dead-letter stream with its context; once it is there the claim is dropped so a replay can send it.
            const dl: DeadLetter = { type: "dead_letter", channel, shard: batch.shard, notification: n, send: { ...s, attempt }, reason: r.error.reason, attempts: attempt, at: now() };
            gatewaySends.inc({ channel, app: "-", outcome: "dead_letter" });
            dead.push(d.nats.js.publish(dlqSubject(channel), encode(dl), { msgID: MSGID.dead(`${batchId}|${deliveryKey(s.nid, s.user, channel, s.device)}`) }).then(() => writer.del(keys[i]!)));
            add(s, { outcome: "failed", reason: `dead_letter:${r.error.reason}`, at: now() });
          }
        };
        /** Sends whose token the provider reported gone: settled after the directory lets go of the token. */
        const gone: number[] = [];
        // Called inside the bulkhead slot the moment the provider answers: outcomes recorded in this turn's pipeline, awaited before the slot is freed
        // (a failed write still fails the batch below, through `writes`).
        const recordAnswer = (results: SendResult[]): Promise<void> => {
          const from = writes.length;
          results.forEach((r, j) => (!r.ok && r.error.tokenInvalid ? gone.push(j) : settle(r, j)));
          return Promise.all(writes.slice(from)).then(() => undefined, () => undefined);
        };
        requests.push(
          dispatch(grp.app, n, sends, recordAnswer).then(async (results) => {
            if (isRefusal(results)) return pushBack(idx, results.retryInMs, results.refused);
            if (gone.length === 0) return;
            // A gone token leaves the directory before its failure is recorded, so a replay after a crash still removes it.
            await Promise.all(gone.map((j) => removeDeadToken(d.redis, d.nats.nc, d.cfg.cluster.shards, sends[j]!.user, sends[j]!.device, sends[j]!.token).catch((err) => log.warn({ err }, "token removal failed"))));
            for (const j of gone) settle(results[j]!, j);
          }),
        );
      }
    }
    await Promise.all(requests);

    // Pushed-back sends: one held batch per kind; their keys stay claimed for the release, so nothing else sends them meanwhile.
    const later = async (list: Later[], idx: number[], kind: string): Promise<void> => {
      if (list.length === 0) return;
      const due = Math.max(...list.map((l) => l.at));
      const attempt = Math.max(...list.map((l) => (l.s.attempt ?? 0) + (l.s.waits ?? 0)));
      const releaseId = MSGID.retry(createHash("sha1").update(batchId).digest("base64url").slice(0, 16), kind, attempt);
      const ttl = Math.ceil((due - now()) / 1000) + g.claimTtlSec;
      const sends = list.map((l) => l.s);
      const nids = new Set(sends.map((s) => s.nid));
      const rb: RetryBatch = {
        type: "retry_batch", due, priority: prio, releaseId,
        batch: { ...batch, sends, notifications: Object.fromEntries(Object.entries(batch.notifications).filter(([k]) => nids.has(k))) },
      };
      await d.nats.js.publish(retrySubject(channel, prio), encode(rb), { msgID: `q:${releaseId}` });
      // Once the release is stored, its keys move from this attempt's claim to the release's hold (the release takes them over).
      const hold = heldMarker(releaseId);
      for (const i of idx) writes.push(writer.set(keys[i]!, hold, ttl));
    };
    await Promise.all([later(retries, retryKeys, "retry"), later(waits, waitKeys, "wait"), ...dead]);
    await Promise.all(writes);

    await publishReceipts(d.nats, batchId, entries);
    stageItems.inc({ stage: `gateway-${channel}` }, batch.sends.length);
  };

  const lanes = runLanes({
    js: d.nats.js, stream: STREAM.send(channel), consumer: (p) => CONSUMER.gateway(channel, p),
    concurrency: g.batchConcurrency, prefetch: 4, ackWaitSec: g.ackWaitSec, log, handle,
  });
  const held = await holdUntilDue<RetryBatch>({
    nats: d.nats, log, stream: STREAM.retry, consumer: CONSUMER.retry(channel), type: "retry_batch", now,
    dueAt: (r) => r.due,
    release: (r) => d.nats.js.publish(sendSubject(channel, r.priority), encode(r.batch), { msgID: r.releaseId }),
  });
  await lanes.ready;
  watchBreakers(channel, () => [...apps.values()].map((a) => a.bulkhead.state()));
  log.info({ apps: [...apps.keys()] }, "gateway ready");
  return {
    bulkheads: () => [...apps.values()].map((a) => a.bulkhead.state()),
    async stop() {
      await lanes.stop();
      await held.stop();
      cancellations.stop();
      await Promise.all(client.apps.map((a) => a.app.close()));
    },
  };
}
