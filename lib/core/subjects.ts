// Every NATS subject, stream, consumer and KV bucket name, KV key and message id nfx uses, each family as a wildcard beside its builder; and the priorities and channels they are built from.
import { createHash } from "node:crypto";

import { shardOf } from "./shard-hash.js";

/** Priority lanes, most urgent first. Every stage drains them in this order. */
export const PRIORITIES = ["critical", "high", "normal", "bulk"] as const;
export type Priority = (typeof PRIORITIES)[number];

/**
 * Lane classes: `urgent` (critical, high) and `bulk` (normal, bulk). A shard is owned per class, so
 * urgent lanes can be decided in processes that never run bulk work (docs/priorities.md).
 */
export const LANE_CLASSES = ["urgent", "bulk"] as const;
export type LaneClass = (typeof LANE_CLASSES)[number];
/** The priorities of each lane class, most urgent first. */
export const CLASS_PRIORITIES: Readonly<Record<LaneClass, readonly Priority[]>> = { urgent: ["critical", "high"], bulk: ["normal", "bulk"] };
/** The lane class of a priority. */
export const laneClassOf = (p: Priority): LaneClass => (p === "critical" || p === "high" ? "urgent" : "bulk");

/**
 * Delivery channels, each with its own send stream. apns, fcm, email and sms have provider gateways; inapp sends
 * wait in their stream for the WebSocket gateway; webhook sends go to the endpoints subscribed to a topic
 * (gateway-webhook), never to users' devices.
 */
export const CHANNELS = ["apns", "fcm", "email", "sms", "inapp", "webhook"] as const;
export type Channel = (typeof CHANNELS)[number];
/** Channels with a gateway in this version; only they get gateway consumers. */
export const GATEWAY_CHANNELS = ["apns", "fcm", "email", "sms"] as const satisfies readonly Channel[];

/** Content channels a request can carry content for, and the channels of preferences, fallbacks and `ingest.channels`. Device channels map onto them (apns, fcm → push). */
export const CONTENT_CHANNELS = ["push", "email", "sms", "inapp"] as const;
export type ContentChannel = (typeof CONTENT_CHANNELS)[number];
/** Channels an app may report engagement on (`POST /v1/events`): "push" when it does not know whether APNs or FCM carried it, or a delivery channel. */
export const REPORTED_CHANNELS = ["push", ...CHANNELS] as const;

/** Request/reply API subjects (queue group {@link QUEUE_INGEST}). */
export const API = {
  notify: "nfx.api.notify",
  status: "nfx.api.status",
  campaign: "nfx.api.campaign",
  preferences: "nfx.api.preferences",
  /** Delivery log of a notification or a user (`{notification|user, outcome?, limit?, after?, before?}`). */
  log: "nfx.api.log",
  /** App-reported engagement (`{events:[…]}`, as `POST /v1/events`). */
  events: "nfx.api.events",
  /** Topics and their subscribers (`{action, …}`: docs/topics.md). */
  topics: "nfx.api.topics",
  /** Webhook endpoints (`{action, …}`: docs/topics.md). */
  endpoints: "nfx.api.endpoints",
  all: "nfx.api.>",
} as const;
export const QUEUE_INGEST = "nfx-ingest";

/**
 * True when `reply` has the form of a requester's inbox: `_INBOX.…` or a
 * private prefix `_INBOX_<name>.…` (lib/infra/nats-auth.ts), or `_R_.…`, the reply
 * subject nats-server makes for a request that came through a service import.
 * Request handlers answer nothing else.
 */
export const isInboxReply = (reply: string): boolean => /^(_INBOX(_[A-Za-z0-9_-]+)?|_R_)\.[^\s>*]+$/.test(reply);

/** The operations of the request/reply API: the last token of an `nfx.api.<op>` or `nfx.ext.api.<op>` subject. */
export const API_OPS = ["notify", "status", "campaign", "preferences", "log", "events", "topics", "endpoints"] as const satisfies readonly (keyof typeof API)[];
export type ApiOp = (typeof API_OPS)[number];

/**
 * The external API family, `nfx.ext.api.<op>`: the same operations as {@link API}, reached by
 * producers from their own NATS account through service imports. Unlike `nfx.api.*` (nfx's own
 * users, trusted as admin), every request here must carry an API key in the `Nfx-Api-Key`
 * header and is checked against its scopes like an HTTP call. Same queue group, {@link QUEUE_INGEST}.
 */
export const extApiSubject = (op: ApiOp): string => `nfx.ext.api.${op}`;
export const extApiAll = "nfx.ext.api.*";
/** The last token of an `nfx.ext.api.<op>` subject: an {@link ApiOp} if the caller asked for one that exists. */
export const extApiOp = (subject: string): string => subject.slice("nfx.ext.api.".length);

/** Accepted requests: `nfx.intake.<prio>.<notificationId>`. The id in the subject lets status fetch a request directly. */
export const intakeSubject = (prio: Priority, nid: string): string => `nfx.intake.${prio}.${nid}`;
export const intakeLane = (prio: Priority): string => `nfx.intake.${prio}.*`;
export const intakeAll = "nfx.intake.>";
/** Accepted requests with a future send-at time, held by the scheduler: `nfx.intake.scheduled.<notificationId>`. */
export const scheduledSubject = (nid: string): string => `nfx.intake.scheduled.${nid}`;
export const scheduledAll = "nfx.intake.scheduled.*";

/** Per-shard fan chunks: `nfx.fan.<prio>.<shard>`. */
export const fanSubject = (prio: Priority, shard: number): string => `nfx.fan.${prio}.${shard}`;
export const fanLane = (prio: Priority): string => `nfx.fan.${prio}.*`;
export const fanAll = "nfx.fan.>";

/** Fan chunks deferred by quiet hours, held until their release time: `nfx.defer.<prio>.<shard>`. */
export const deferSubject = (prio: Priority, shard: number): string => `nfx.defer.${prio}.${shard}`;
export const deferAll = "nfx.defer.>";

/** Decision trails of one notification in one shard (kept for `nfx explain`): `nfx.trail.<notificationId>.<shard>`. */
export const trailSubject = (nid: string, shard: number): string => `nfx.trail.${nid}.${shard}`;
export const trailAll = "nfx.trail.>";

/** Per-channel send batches: `nfx.send.<channel>.<prio>` (webhook batches: {@link webhookSendSubject}). */
export const sendSubject = (channel: Channel, prio: Priority): string => `nfx.send.${channel}.${prio}`;
/** Every send batch of `channel` (webhook batches have one token more: their endpoint partition). */
export const sendAll = (channel: Channel): string => `nfx.send.${channel}.>`;
/**
 * Webhook send batches of endpoint partition `part` (`shardOf(endpoint id, endpoints.partitions)`, lib/core/shard-hash.ts):
 * `nfx.send.webhook.<prio>.<part>`. One gateway-webhook process at a time takes a partition's batches, so each
 * endpoint's deliveries reach one process in publish order.
 */
export const webhookSendSubject = (prio: Priority, part: number): string => `nfx.send.webhook.${prio}.${part}`;
/**
 * The send-stream subject of one send of `channel` at `prio`: {@link sendSubject}, or for a webhook delivery (`user`:
 * its endpoint) the lane of its endpoint's partition out of `partitions` (`endpoints.partitions`), as the router
 * publishes it.
 */
export const sendSubjectOf = (channel: Channel, prio: Priority, user: string, partitions: number): string =>
  channel === "webhook" ? webhookSendSubject(prio, shardOf(user, partitions)) : sendSubject(channel, prio);

/** Receipts of one notification: `nfx.rcpt.<notificationId>`. */
export const receiptSubject = (nid: string): string => `nfx.rcpt.${nid}`;
export const receiptAll = "nfx.rcpt.>";

/** Directory changes of one shard (core NATS, not stored): `nfx.dir.changed.<shard>`, body `{user, fields}`. Caches drop the user. */
export const dirChangedSubject = (shard: number): string => `nfx.dir.changed.${shard}`;
export const dirChangedAll = "nfx.dir.changed.*";

/** Dead letters: `nfx.dlq.<channel>`. */
export const dlqSubject = (channel: Channel): string => `nfx.dlq.${channel}`;
export const dlqAll = "nfx.dlq.>";

/** Sends a gateway pushed back (retry after backoff, breaker open, bulkhead full), held until due: `nfx.retry.<channel>.<prio>`. */
export const retrySubject = (channel: Channel, prio: Priority): string => `nfx.retry.${channel}.${prio}`;
export const retryOf = (channel: Channel): string => `nfx.retry.${channel}.*`;
export const retryAll = "nfx.retry.>";

/**
 * Live in-app delivery to one WebSocket gateway, for the user its {@link LIVE_USER_HEADER} header names (core NATS
 * request/reply): `nfx.live.<gateway>`. One subscription per gateway, not per user; which gateways hold a user's
 * connections is in presence (lib/inapp/presence.ts). Characters a subject token cannot hold become `_`.
 */
export const liveSubject = (gateway: string): string => `nfx.live.${gateway.replace(/[^A-Za-z0-9_-]/g, "_")}`;
/**
 * A new broadcast, announced to every WebSocket gateway (core NATS, no reply): each shows it live to the connections it
 * holds of users the broadcast reaches (lib/inapp/broadcasts.ts). Not under `nfx.live.` so no gateway name can match it.
 */
export const BROADCAST_LIVE_SUBJECT = "nfx.bcast";
/** The header naming the user a live message is for. */
export const LIVE_USER_HEADER = "Nfx-User";

/** Admission control (core NATS): urgent-lane latency reports, `nfx.ctl.latency.<stage>` (lib/flow/admission.ts). */
export const ADMISSION = {
  latency: (stage: string): string => `nfx.ctl.latency.${stage}`,
  all: "nfx.ctl.latency.*",
} as const;

/** Presence changes and refreshes of one shard's users (core NATS): `nfx.presence.<shard>`. */
export const presenceSubject = (shard: number): string => `nfx.presence.${shard}`;
export const presenceAll = "nfx.presence.*";

/** Stream names. */
export const STREAM = {
  intake: "NFX_INTAKE",
  fan: "NFX_FAN",
  receipts: "NFX_RECEIPTS",
  dlq: "NFX_DLQ",
  defer: "NFX_DEFER",
  retry: "NFX_RETRY",
  trails: "NFX_TRAILS",
  send: (channel: Channel): string => `NFX_SEND_${channel.toUpperCase()}`,
} as const;

/** Durable consumer names, one per stage and priority lane. */
export const CONSUMER = {
  router: (prio: Priority): string => `router-${prio}`,
  campaign: (prio: Priority): string => `campaign-${prio}`,
  scheduler: "scheduler",
  tracker: "tracker",
  /** The webhook gateway's read of receipts and accepted requests for endpoints' event streams (docs/topics.md). */
  events: "webhook-events",
  eventsIntake: "webhook-events-intake",
  /** The tracker's read of accepted requests (recipient counts). */
  trackerIntake: "tracker-intake",
  /** Releases quiet-hours deferrals when due (scheduler role). */
  deferred: "deferred-release",
  gateway: (channel: Channel, prio: Priority): string => `gw-${channel}-${prio}`,
  /** The webhook gateway's lane `prio` of endpoint partition `part` ({@link webhookSendSubject}). */
  webhook: (prio: Priority, part: number): string => `gw-webhook-${prio}-p${part}`,
  /** Releases a channel's pushed-back sends when due (its gateway role). */
  retry: (channel: Channel): string => `retry-${channel}`,
} as const;

/** Keys in the templates bucket: a template under its id. */
export const templateKey = (id: string): string => id;

/** Keys in the campaigns bucket: a campaign's record under its id, its expansion cursor per shard beside it. */
export const CAMPAIGN_KEY = {
  record: (id: string): string => id,
  cursor: (id: string, shard: number): string => `${id}.c.${shard}`,
  /** Every campaign record (one token: cursors, two tokens deeper, are not matched). */
  records: "*",
} as const;

/** Keys in the counters bucket: a notification's counters under its id, and the per-channel totals (a key with a dot, which notification ids never have). */
export const COUNTERS_KEY = {
  notification: (nid: string): string => nid,
  totals: "_totals.channels",
} as const;

/** Keys in the procs bucket: `p.<host>.<pid>`, the host squeezed into what KV keys allow (`[-/_=.a-zA-Z0-9]`). */
export const PROCESS_KEY = {
  of: (host: string, pid: number): string => `p.${host.replace(/[^-_=a-zA-Z0-9]/g, "_")}.${pid}`,
  all: "p.>",
} as const;

/** The key in the idempotency bucket of a producer's idempotency key: a hash, so any key the producer chose fits the KV key alphabet. */
export const idempotencyKvKey = (producer: string, idempotencyKey: string): string => createHash("sha256").update(`${producer}\u0000${idempotencyKey}`).digest("hex");

/** KV bucket names. */
export const BUCKET = {
  idempotency: "nfx-idempotency",
  templates: "nfx-templates",
  leases: "nfx-leases",
  /** Shard-actor checkpoints (`shard.<n>`): consumer positions, dedup window, token buckets. */
  checkpoints: "nfx-checkpoints",
  campaigns: "nfx-campaigns",
  /** Per-notification counters folded by the tracker. */
  counters: "nfx-counters",
  /** Live processes (`p.<host>.<pid>`): role, metrics URL; each entry lapses 15 s after its process stops refreshing it. */
  procs: "nfx-procs",
} as const;

/** How nats KV stores bucket `b`: its stream, and the subject of key `key` (a key pattern gives a subject filter). */
export const KV_STORE = {
  stream: (b: string): string => `KV_${b}`,
  subject: (b: string, key: string): string => `$KV.${b}.${key}`,
} as const;

/** Message-id builders: deterministic, so JetStream's duplicate window drops a replayed publish. */
export const MSGID = {
  intake: (nid: string): string => `in:${nid}`,
  due: (nid: string): string => `due:${nid}`,
  fan: (nid: string, shard: number, chunk: number): string => `fan:${nid}:${shard}:${chunk}`,
  send: (fanMsgId: string, channel: Channel, part: number): string => `snd:${fanMsgId}:${channel}:${part}`,
  decided: (fanMsgId: string): string => `dec:${fanMsgId}`,
  /** A re-emitted chunk after quiet hours: its own fan id, so its sends do not collide with the original chunk's. */
  released: (nid: string, shard: number, chunk: number, until: number): string => `rel:${nid}:${shard}:${chunk}:${until}`,
  deferred: (fanMsgId: string, until: number): string => `dfr:${fanMsgId}:${until}`,
  trail: (fanMsgId: string): string => `trl:${fanMsgId}`,
  dead: (deliveryKey: string): string => `dlq:${deliveryKey}`,
  replay: (dlqSeq: number): string => `rpl:${dlqSeq}`,
  delivered: (sendMsgId: string, nid: string): string => `dlv:${sendMsgId}:${nid}`,
  /** A pushed-back part of a send batch, released to its send stream: `kind` is "retry" (attempt failed) or "wait" (not attempted). */
  retry: (sendMsgId: string, kind: string, attempt: number): string => `rty:${sendMsgId}:${kind}:${attempt}`,
  /** The push fallback on `channel` of an in-app send that no client acknowledged: one per (notification, user, channel), ever. */
  inappFallback: (nid: string, user: string, channel: string): string => `fb:${nid}:${user}:${channel}`,
  /** The seen/read receipt of one inbox item: an item changes to seen or read once. */
  inboxAction: (user: string, action: string, nid: string): string => `ibx:${user}:${action}:${nid}`,
  /** Receipts of one notification from a stage outside the pipeline (engagement, webhooks), named by a hash of their entries: a retried publish of the same entries is dropped. */
  receipts: (stage: string, nid: string, entriesHash: string): string => `${stage}:${nid}:${entriesHash}`,
  /** A pushed-back part of a send batch, held on NFX_RETRY until due (`releaseId`: its {@link MSGID.retry} id). */
  held: (releaseId: string): string => `q:${releaseId}`,
  /** A topic notification's endpoint deliveries in endpoint partition `partition`, batch `part` of it (the router). */
  webhooks: (nid: string, partition: number, part: number): string => `wh:${nid}:${partition}:${part}`,
  /** The receipt of one endpoint delivery's outcome (`deliveryId`: {@link webhookDeliveryId}). */
  webhookOutcome: (deliveryId: string, outcome: string): string => `whr:${deliveryId}:${outcome}`,
  /** One notification's entries of a batch taken from the webhook gateways' receipt outbox (`batch`: a random id given when it was taken). */
  webhookReceipts: (batch: string, nid: string): string => `whb:${batch}:${nid}`,
  /** The `n`th publication again of message `msgId` that its stream lost (a new id: the duplicate window would drop the old one). */
  republished: (msgId: string, n: number): string => `${msgId.replace(/~r\d+$/, "")}~r${n}`,
  /** The id a message was first published under: `msgId` without the suffix of {@link MSGID.republished}. */
  original: (msgId: string): string => msgId.replace(/~r\d+$/, ""),
} as const;

/**
 * Who shares out a set of partitions by lease (lib/flow/shard-ownership.ts): the shard actors of one lane class (user
 * shards), or the webhook gateways (endpoint partitions, `endpoints.partitions`).
 */
export type OwnershipGroup = LaneClass | "webhook";

/** Keys in the leases bucket: one lease per partition of a group (a user shard's lanes of one class, an endpoint partition), one liveness record per member process. */
export const LEASE_KEY = {
  /** The lease of partition `shard` of `group`: `shard.<group>.<shard>`. */
  shard: (group: OwnershipGroup, shard: number): string => `shard.${group}.${shard}`,
  /** Every partition lease of `group`. */
  shards: (group: OwnershipGroup): string => `shard.${group}.*`,
  /** The liveness record of a process that takes partitions of `group`. */
  member: (group: OwnershipGroup, owner: string): string => `member.${group}.${owner}`,
  members: (group: OwnershipGroup): string => `member.${group}.*`,
  /** The lease of a segment campaign's expansion: one campaign actor walks its shards at a time. */
  campaign: (id: string): string => `campaign.${id}`,
} as const;

/** The checkpoint key of one shard's lanes of class `cls` in nfx-checkpoints. */
export const checkpointKey = (cls: LaneClass, shard: number): string => `shard.${cls}.${shard}`;
/** The key a shard's checkpoint had before shards were owned per lane class (read once, on upgrade). */
export const legacyCheckpointKey = (shard: number): string => `shard.${shard}`;
/** Part `i` of generation `gen` of a checkpoint (`key`: {@link checkpointKey} or {@link legacyCheckpointKey}), when the state is too large for one entry. */
export const checkpointPartKey = (key: string, gen: string, i: number): string => `${key}.${gen}.${i}`;
/** Every part of generation `gen` of a checkpoint. */
export const checkpointPartsOf = (key: string, gen: string): string => `${key}.${gen}.*`;

/** Characters allowed in ids that end up inside subjects and keys. */
export const ID_PATTERN = /^[A-Za-z0-9_\-:@+=]{1,128}$/;

/** The id of one notification's delivery to one endpoint: the `webhook-id` header, the same on every attempt (receivers deduplicate by it). */
export const webhookDeliveryId = (nid: string, endpoint: string): string => `${nid}.${endpoint}`;
/** Topic names: 1-64 characters of a-z 0-9 _ . - (starting with a letter or digit). */
export const TOPIC_NAME = /^[a-z0-9][a-z0-9_.-]{0,63}$/;
/** Endpoint ids: `ep_` and 16 characters (generated). */
export const ENDPOINT_ID = /^ep_[0-9a-z]{16}$/;
