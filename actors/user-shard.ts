// Shard actor: per-recipient policy for a fan chunk: directory lookup, opt-out, channel choice per device; emits send batches and receipts.
import type { JsMsg } from "@nats-io/jetstream";
import type { Config } from "../lib/config.js";
import { encode } from "../lib/codec.js";
import { readUsers } from "../lib/directory.js";
import { decodeAs, runLanes } from "../lib/lanes.js";
import type { Logger } from "../lib/log.js";
import type { Nats } from "../lib/nats.js";
import type { Redis } from "../lib/redis.js";
import { Cancellations } from "../lib/cancellations.js";
import { BUCKET, CHANNELS, CONSUMER, MSGID, STREAM, receiptSubject, sendSubject, type Channel } from "../lib/subjects.js";
import { renderPush } from "../lib/templates.js";
import type { DeviceRecord, FanChunk, NotificationBrief, PushContent, ReceiptBatch, ReceiptEntry, Send, SendBatch, UserRecord } from "../lib/types.js";

export interface ShardDeps {
  cfg: Config;
  nats: Nats;
  redis: Redis;
  log: Logger;
  now?: () => number;
}

/** The channel a device is reached on. */
export function channelFor(d: DeviceRecord): Channel | null {
  switch (d.platform) {
    case "ios":
      return "apns";
    case "android":
      return "fcm";
    default:
      return null;
  }
}

/**
 * Returns the per-recipient push renderer of a notification: null content
 * for inline content (the gateway uses the notification's), the template
 * rendered with the recipient's locale and attributes otherwise. Templates
 * that never mention `user.` render once per locale.
 */
export function pushRenderer(n: NotificationBrief): (u: UserRecord) => PushContent | undefined {
  const use = n.template;
  if (!use) return () => undefined;
  const perUser = JSON.stringify(use.template.channels.push ?? {}).includes("user.");
  const byLocale = new Map<string, PushContent | undefined>();
  return (u) => {
    if (perUser) return renderPush(use, u) ?? undefined;
    const k = use.locale ?? u.locale ?? "";
    if (!byLocale.has(k)) byLocale.set(k, renderPush(use, { id: "", locale: u.locale }) ?? undefined);
    return byLocale.get(k);
  };
}

/** Whether rendering this notification reads recipients' profile attributes. */
export const usesUserFields = (n: NotificationBrief): boolean => n.template !== undefined && JSON.stringify(n.template.template.channels).includes("user.");

/** The decision for one chunk: sends per channel and one receipt entry per suppressed user or queued device. */
export interface ChunkDecision {
  sends: Record<Channel, Send[]>;
  receipts: ReceiptEntry[];
  /** Recipients decided (members of the target). */
  decided: number;
  /** Sends queued but not listed in `receipts` (campaign chunks). */
  queued: number;
}

/**
 * Decides a chunk, given the users' directory records in the same order as
 * `chunk.users`. Pure. A user outside the chunk's segment rule is skipped
 * (not a recipient). Then in order: cancelled campaign, unknown user, expired
 * notification, global opt-out, push not wanted, push turned off for the
 * category, no reachable device; then one send per
 * device on its channel, with content rendered for the recipient when the
 * notification uses a template.
 */
export function decideChunk(chunk: FanChunk, users: readonly (UserRecord | null)[], now: number, cancelled = false): ChunkDecision {
  // A campaign's queued sends are counted, not listed: status shows counters for campaigns, lines only for explicit recipients.
  const listQueued = chunk.filter === undefined && chunk.notification.segment === undefined;
  let queued = 0;
  const sends = Object.fromEntries(CHANNELS.map((c) => [c, [] as Send[]])) as Record<Channel, Send[]>;
  const receipts: ReceiptEntry[] = [];
  const n = chunk.notification;
  const nid = n.id;
  const expired = n.expiresAt <= now;
  const wantsPush = n.channels.includes("push");
  const render = pushRenderer(n);
  const activeSince = chunk.filter?.activeSince;
  let decided = 0;
  chunk.users.forEach((userId, i) => {
    const u = users[i];
    // Segment rule: a user who is not a member is not a recipient (no receipt).
    if (activeSince !== undefined && (!u || (u.lastActive ?? 0) < activeSince)) return;
    decided++;
    const suppress = (reason: string): void => void receipts.push({ user: userId, outcome: "suppressed", reason, at: now });
    if (cancelled) return void receipts.push({ user: userId, outcome: "cancelled", at: now });
    if (!u) return suppress("unknown_user");
    if (expired) return suppress("expired");
    if (u.optedOut) return suppress("opted_out");
    if (!wantsPush) return suppress("no_wanted_channel");
    if (u.preferences?.categories?.[n.category]?.push === false) return suppress("preference_off");
    let reachable = 0;
    const push = render(u);
    for (const dev of u.devices ?? []) {
      const ch = channelFor(dev);
      if (!ch || !dev.token) continue;
      reachable++;
      sends[ch].push({ nid, user: userId, device: dev.id, token: dev.token, ...(push ? { push } : {}) });
      queued++;
      if (listQueued) receipts.push({ user: userId, outcome: "queued", channel: ch, device: dev.id, at: now });
    }
    if (reachable === 0) suppress("no_devices");
  });
  return { sends, receipts, decided, queued: listQueued ? 0 : queued };
}

/**
 * Starts the shard actor on every priority lane of NFX_FAN. A chunk is acked
 * only after all its send batches and its receipt batch are acknowledged by
 * JetStream; all carry deterministic message ids derived from the chunk's own.
 */
export async function startUserShard(d: ShardDeps): Promise<{ stop(): Promise<void> }> {
  const log = d.log.child({ actor: "user-shard" });
  const now = d.now ?? Date.now;
  const batchSize = d.cfg.shard.sendBatchSize;
  const cancellations = await Cancellations.watch(await d.nats.kvm.open(BUCKET.campaigns));

  const handle = async (m: JsMsg): Promise<void> => {
    const chunk = decodeAs<FanChunk>(m.data, "fan_chunk");
    const n = chunk.notification;
    const fanId = MSGID.fan(n.id, chunk.shard, chunk.chunk);
    // Profiles (attributes) only when a template renders them per recipient.
    const users = await readUsers(d.redis, chunk.shard, chunk.users, { profile: usesUserFields(n) });
    const decision = decideChunk(chunk, users, now(), cancellations.has(n.id));
    const pubs: Promise<unknown>[] = [];
    for (const ch of CHANNELS) {
      const all = decision.sends[ch];
      for (let i = 0, part = 0; i < all.length; i += batchSize, part++) {
        const batch: SendBatch = { type: "send_batch", channel: ch, shard: chunk.shard, notifications: { [n.id]: n }, sends: all.slice(i, i + batchSize) };
        pubs.push(d.nats.js.publish(sendSubject(ch, n.priority), encode(batch), { msgID: MSGID.send(fanId, ch, part) }));
      }
    }
    if (decision.receipts.length > 0 || decision.decided > 0) {
      pubs.push(
        d.nats.js.publish(receiptSubject(n.id), encode({ type: "receipts", nid: n.id, stage: "shard", entries: decision.receipts, decided: decision.decided, ...(decision.queued ? { queued: decision.queued } : {}) } satisfies ReceiptBatch), {
          msgID: MSGID.decided(fanId),
        }),
      );
    }
    await Promise.all(pubs);
  };

  const lanes = runLanes({
    js: d.nats.js, stream: STREAM.fan, consumer: CONSUMER.shard, concurrency: d.cfg.shard.concurrency, prefetch: 16,
    ackWaitSec: d.cfg.streams.ackWaitSec, log, handle,
  });
  await lanes.ready;
  log.info("user-shard ready");
  return {
    async stop() {
      await lanes.stop();
      cancellations.stop();
    },
  };
}
