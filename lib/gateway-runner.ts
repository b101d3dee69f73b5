// The loop every channel gateway shares: consume send batches by priority, skip keys already delivered, call the provider, record, emit receipts.
import type { JsMsg } from "@nats-io/jetstream";
import type { Config } from "./config.js";
import { encode } from "./codec.js";
import type { ProviderError } from "./errors.js";
import { deliveryKey } from "./ids.js";
import { readUsers, removeDeadToken } from "./directory.js";
import { changedKey, deliveredKey } from "./keys.js";
import { contentOf } from "./policy.js";
import { PoisonMessage, decodeAs, runLanes } from "./lanes.js";
import type { Logger } from "./log.js";
import type { Nats } from "./nats.js";
import type { Redis } from "./redis.js";
import { Cancellations } from "./cancellations.js";
import { BUCKET, CONSUMER, MSGID, STREAM, dlqSubject, receiptSubject, type Channel } from "./subjects.js";
import type { DeadLetter, NotificationBrief, ReceiptBatch, ReceiptEntry, Send, SendBatch, UserRecord } from "./types.js";

/** The result of one send: accepted by the provider, or its error. */
export type SendResult = { ok: true; providerId?: string } | { ok: false; error: ProviderError };

/** What a gateway file implements for its provider: the SDK call, nothing else. */
export interface ProviderClient {
  readonly channel: Channel;
  /**
   * Sends the sends of one notification. Resolves one result per send, in
   * order; per-send provider errors are results, never throws.
   */
  sendGroup(n: NotificationBrief, sends: readonly Send[]): Promise<SendResult[]>;
  close(): Promise<void>;
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
async function changedSince(redis: Redis, batch: SendBatch, prior: (string | null)[]): Promise<Map<string, UserRecord>> {
  const out = new Map<string, UserRecord>();
  if (batch.decidedAt === undefined) return out;
  const users = [...new Set(batch.sends.filter((_, i) => !prior[i]).map((s) => s.user))];
  if (users.length === 0) return out;
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
  if (u.preferences?.categories?.[n.category]?.[contentOf(channel)] === false) return "preference_off";
  return null;
}

/** Attempts for a send whose error is retryable, with doubling backoff from 200 ms. Full retry policy: issue 6. */
const ATTEMPTS = 3;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** What is kept per delivered key: enough to re-emit the same receipt on a replay. */
type Recorded = Pick<ReceiptEntry, "outcome" | "reason" | "providerId" | "at">;

/**
 * Runs a gateway for `client` on every priority lane of its channel's send
 * stream. Per batch: keys already recorded as delivered are not sent again
 * (their recorded outcome is re-emitted); users whose opt-out or preferences
 * changed after the batch was decided are re-checked and suppressed if the
 * send is no longer allowed; the rest go to the provider, their
 * outcomes are recorded in Redis, then receipts are published, then the batch
 * is acked. A process dying after a provider accepted a send but before the
 * record is written is the one window for a duplicate (DESIGN.md). A token
 * the provider reports gone (APNs 410, FCM UNREGISTERED) is removed from the
 * directory.
 */
export async function runGateway(d: GatewayDeps, client: ProviderClient): Promise<{ stop(): Promise<void> }> {
  const log = d.log.child({ actor: `gateway-${client.channel}` });
  const now = d.now ?? Date.now;
  const ttl = d.cfg.gateways.deliveredTtlSec;
  const cancellations = await Cancellations.watch(await d.nats.kvm.open(BUCKET.campaigns));

  const sendWithRetry = async (n: NotificationBrief, sends: readonly Send[]): Promise<SendResult[]> => {
    const results: (SendResult | undefined)[] = new Array(sends.length);
    let todo = sends.map((_, i) => i);
    for (let attempt = 1; todo.length > 0; attempt++) {
      const got = await client.sendGroup(n, todo.map((i) => sends[i]!));
      const again: number[] = [];
      got.forEach((r, j) => {
        const i = todo[j]!;
        results[i] = r;
        if (!r.ok && r.error.retryable && attempt < ATTEMPTS && n.expiresAt > now()) again.push(i);
      });
      todo = again;
      if (todo.length > 0) await sleep(200 * 2 ** (attempt - 1));
    }
    return results as SendResult[];
  };

  const handle = async (m: JsMsg): Promise<void> => {
    const batch = decodeAs<SendBatch>(m.data, "send_batch");
    if (batch.channel !== client.channel) throw new PoisonMessage(`a ${batch.channel} batch on the ${client.channel} stream`);
    const batchId = m.headers?.get("Nats-Msg-Id") || `seq:${m.seq}`;
    const keys = batch.sends.map((s) => deliveredKey(batch.shard, deliveryKey(s.nid, s.user, client.channel, s.device)));
    const prior = keys.length ? await d.redis.mget(keys) : [];

    const entries = new Map<string, ReceiptEntry[]>();
    const add = (s: Send, r: Recorded): void => {
      let l = entries.get(s.nid);
      if (!l) entries.set(s.nid, (l = []));
      l.push({ user: s.user, channel: client.channel, device: s.device, ...r, ...(batch.replayOf ? { supersedes: batch.replayOf } : {}) });
    };

    const stale = await changedSince(d.redis, batch, prior);
    const record = d.redis.pipeline();
    let recorded = 0;
    const groups = new Map<string, number[]>();
    batch.sends.forEach((s, i) => {
      const p = prior[i];
      if (p) return add(s, JSON.parse(p) as Recorded);
      const why = stale.get(s.user) && recheck(stale.get(s.user)!, batch.notifications[s.nid]!, client.channel);
      if (why) {
        // The user opted out or turned this channel off after the decision: not sent, and recorded so a replay agrees.
        const rec: Recorded = { outcome: "suppressed", reason: why, at: now() };
        add(s, rec);
        record.set(keys[i]!, JSON.stringify(rec), "EX", ttl);
        recorded++;
        return;
      }
      let g = groups.get(s.nid);
      if (!g) groups.set(s.nid, (g = []));
      g.push(i);
    });

    await Promise.all(
      [...groups].map(async ([nid, idx]) => {
        const n = batch.notifications[nid]!;
        const sends = idx.map((i) => batch.sends[i]!);
        if (cancellations.has(nid)) {
          for (const s of sends) add(s, { outcome: "cancelled", at: now() });
          return;
        }
        if (n.expiresAt <= now()) {
          for (const s of sends) add(s, { outcome: "failed", reason: "expired", at: now() });
          return;
        }
        const results = await sendWithRetry(n, sends);
        // Tokens the provider says are gone for good leave the directory (and are never retried).
        await Promise.all(
          results.map((r, j) =>
            !r.ok && r.error.tokenInvalid
              ? removeDeadToken(d.redis, d.nats.nc, d.cfg.cluster.shards, sends[j]!.user, sends[j]!.device, sends[j]!.token).catch((err) => log.warn({ err }, "token removal failed"))
              : undefined,
          ),
        );
        const dead: Promise<unknown>[] = [];
        results.forEach((r, j) => {
          const s = sends[j]!;
          if (!r.ok && r.error.retryable) {
            // Retries ran out: to the dead-letter stream with its context; not recorded as delivered, so a replay can send it.
            const dl: DeadLetter = { type: "dead_letter", channel: client.channel, shard: batch.shard, notification: n, send: s, reason: r.error.reason, attempts: ATTEMPTS, at: now() };
            dead.push(d.nats.js.publish(dlqSubject(client.channel), encode(dl), { msgID: MSGID.dead(`${batchId}|${deliveryKey(s.nid, s.user, client.channel, s.device)}`) }));
            add(s, { outcome: "failed", reason: `dead_letter:${r.error.reason}`, at: now() });
            return;
          }
          const rec: Recorded = r.ok
            ? { outcome: "sent", providerId: r.providerId, at: now() }
            : { outcome: "failed", reason: r.error.reason, at: now() };
          add(s, rec);
          record.set(keys[idx[j]!]!, JSON.stringify(rec), "EX", ttl);
          recorded++;
        });
        await Promise.all(dead);
      }),
    );
    if (recorded > 0) await record.exec();

    await Promise.all(
      [...entries].map(([nid, list]) => {
        const rb: ReceiptBatch = { type: "receipts", nid, stage: "gateway", entries: list };
        return d.nats.js.publish(receiptSubject(nid), encode(rb), { msgID: MSGID.delivered(batchId, nid) });
      }),
    );
  };

  const lanes = runLanes({
    js: d.nats.js, stream: STREAM.send(client.channel), consumer: (p) => CONSUMER.gateway(client.channel, p),
    concurrency: d.cfg.gateways.batchConcurrency, prefetch: 4, ackWaitSec: d.cfg.streams.ackWaitSec, log, handle,
  });
  await lanes.ready;
  log.info("gateway ready");
  return {
    async stop() {
      await lanes.stop();
      cancellations.stop();
      await client.close();
    },
  };
}
