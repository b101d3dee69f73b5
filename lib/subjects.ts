// Every NATS subject, stream, consumer and KV bucket name nfx uses, each family as a wildcard beside its builder.

/** Priority lanes, most urgent first. Every stage drains them in this order. */
export const PRIORITIES = ["critical", "high", "normal", "bulk"] as const;
export type Priority = (typeof PRIORITIES)[number];

/** Delivery channels. Only apns and fcm have gateways so far. */
export const CHANNELS = ["apns", "fcm"] as const;
export type Channel = (typeof CHANNELS)[number];

/** Request/reply API subjects (queue group {@link QUEUE_INGEST}). */
export const API = {
  notify: "nfx.api.notify",
  status: "nfx.api.status",
  campaign: "nfx.api.campaign",
  preferences: "nfx.api.preferences",
  all: "nfx.api.>",
} as const;
export const QUEUE_INGEST = "nfx-ingest";

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

/** Per-channel send batches: `nfx.send.<channel>.<prio>`. */
export const sendSubject = (channel: Channel, prio: Priority): string => `nfx.send.${channel}.${prio}`;
export const sendAll = (channel: Channel): string => `nfx.send.${channel}.*`;

/** Receipts of one notification: `nfx.rcpt.<notificationId>`. */
export const receiptSubject = (nid: string): string => `nfx.rcpt.${nid}`;
export const receiptAll = "nfx.rcpt.>";

/** Directory changes of one shard (core NATS, not stored): `nfx.dir.changed.<shard>`, body `{user, fields}`. Caches drop the user. */
export const dirChangedSubject = (shard: number): string => `nfx.dir.changed.${shard}`;
export const dirChangedAll = "nfx.dir.changed.*";

/** Dead letters: `nfx.dlq.<channel>`. */
export const dlqSubject = (channel: Channel): string => `nfx.dlq.${channel}`;
export const dlqAll = "nfx.dlq.>";

/** Stream names. */
export const STREAM = {
  intake: "NFX_INTAKE",
  fan: "NFX_FAN",
  receipts: "NFX_RECEIPTS",
  dlq: "NFX_DLQ",
  send: (channel: Channel): string => `NFX_SEND_${channel.toUpperCase()}`,
} as const;

/** Durable consumer names, one per stage and priority lane. */
export const CONSUMER = {
  router: (prio: Priority): string => `router-${prio}`,
  campaign: (prio: Priority): string => `campaign-${prio}`,
  scheduler: "scheduler",
  tracker: "tracker",
  shard: (prio: Priority): string => `shard-${prio}`,
  gateway: (channel: Channel, prio: Priority): string => `gw-${channel}-${prio}`,
} as const;

/** KV bucket names. */
export const BUCKET = {
  idempotency: "nfx-idempotency",
  templates: "nfx-templates",
  leases: "nfx-leases",
  checkpoints: "nfx-checkpoints",
  campaigns: "nfx-campaigns",
  /** Per-notification counters folded by the tracker. */
  counters: "nfx-counters",
} as const;

/** Message-id builders: deterministic, so JetStream's duplicate window drops a replayed publish. */
export const MSGID = {
  intake: (nid: string): string => `in:${nid}`,
  due: (nid: string): string => `due:${nid}`,
  fan: (nid: string, shard: number, chunk: number): string => `fan:${nid}:${shard}:${chunk}`,
  send: (fanMsgId: string, channel: Channel, part: number): string => `snd:${fanMsgId}:${channel}:${part}`,
  decided: (fanMsgId: string): string => `dec:${fanMsgId}`,
  dead: (deliveryKey: string): string => `dlq:${deliveryKey}`,
  replay: (dlqSeq: number): string => `rpl:${dlqSeq}`,
  delivered: (sendMsgId: string, nid: string): string => `dlv:${sendMsgId}:${nid}`,
} as const;

/** Characters allowed in ids that end up inside subjects and keys. */
export const ID_PATTERN = /^[A-Za-z0-9_\-:@+=]{1,128}$/;
