// Every Redis key nfx uses. Keys of one user shard share the hash tag {s<shard>}, so they stay together on Redis Cluster.

const tag = (shard: number): string => `{s${shard}}`;

/** A user's routing record (msgpack): opt-out, preferences, locale, time zone, last activity, devices. */
export const userKey = (shard: number, userId: string): string => `nfx:${tag(shard)}:u:${userId}`;

/**
 * The notification holding a collapse key for one user (value: its id; TTL: the dedup window). Held in Redis, not in a
 * shard owner's memory, because notifications sharing a collapse key may be of different lane classes, whose owners differ.
 * `keyHash`: a hash of the producer's collapse key (any characters, bounded length).
 */
export const collapseKey = (shard: number, keyHash: string, userId: string): string => `nfx:${tag(shard)}:ck:${keyHash}:${userId}`;

/** A user's profile (msgpack): email, phone, attributes. */
export const profileKey = (shard: number, userId: string): string => `nfx:${tag(shard)}:p:${userId}`;

/**
 * The delivery keys of one notification on one channel in one user shard (a hash: field {@link deliveredField} per
 * user and device; value a claim, a held marker or the recorded outcome), kept at least for the delivered TTL after its
 * last write. One hash per notification and channel instead of a key per send: a batch is claimed and recorded with one
 * command per hash (docs/architecture.md, "Guarantees").
 */
export const deliveredKey = (shard: number, nid: string, channel: string): string => `nfx:${tag(shard)}:dlv:${nid}|${channel}`;

/** A user's device's field in its notification's {@link deliveredKey} hash. */
export const deliveredField = (userId: string, deviceId: string): string => `${userId}|${deviceId}`;

/** Every user id of a shard, as a sorted set with score 0 (iterated in id order with ZRANGEBYLEX). */
export const userIndexKey = (shard: number): string => `nfx:${tag(shard)}:users`;

/** Members of a named segment in one shard (sorted set, score 0). */
export const segmentKey = (shard: number, name: string): string => `nfx:${tag(shard)}:seg:${name}`;

/** A named segment's members in one shard while they are being materialized, renamed onto {@link segmentKey} when complete. */
export const segmentBuildingKey = (shard: number, name: string): string => `${segmentKey(shard, name)}:building`;

/** Presence of a user with a live in-app connection: a hash gateway id -> connections, whose TTL every holding gateway refreshes. */
export const presenceKey = (shard: number, userId: string): string => `nfx:${tag(shard)}:pres:${userId}`;

/** A user's in-app inbox: sorted set notification id -> time (ms), newest last, capped. */
export const inboxKey = (shard: number, userId: string): string => `nfx:${tag(shard)}:ibx:${userId}`;

/** The inbox items of a user: hash notification id -> JSON item (content and seen/read/archived/live state). */
export const inboxItemsKey = (shard: number, userId: string): string => `nfx:${tag(shard)}:ibi:${userId}`;

/** Users whose opt-out or preferences changed: sorted set user -> change time (ms). Gateways re-check them at send time. */
export const changedKey = (shard: number): string => `nfx:${tag(shard)}:chg`;

/** A user's consent log: list of JSON entries (when, through what and by whom, what changed), oldest first, append-only. */
export const consentLogKey = (shard: number, userId: string): string => `nfx:${tag(shard)}:cns:${userId}`;

/** Phone numbers that replied STOP: hash E.164 number -> JSON (when, keyword). Nothing is sent to them by SMS. */
export const SMS_STOPPED_KEY = "nfx:sms:stopped";

/** The users whose profile holds an E.164 number (set of user ids): an inbound SMS keyword's consent change is logged for each. */
export const phoneUsersKey = (e164: string): string => `nfx:ph:${e164}`;

/** Segment definitions: hash name -> JSON definition. */
export const SEGMENTS_KEY = "nfx:segments";

/** Last activity of every user of a shard: hash user id -> epoch ms. Lets a campaign filter "active within N days" without reading records. */
export const lastActiveKey = (shard: number): string => `nfx:${tag(shard)}:la`;

/** A user's delivery log: sorted set of JSON entries (notification, channel, device, outcome, reason) scored by time, capped. */
export const userLogKey = (shard: number, userId: string): string => `nfx:${tag(shard)}:log:${userId}`;

/** Recipients of a notification who already opened / clicked: hash user -> first time (ms). Engagement counts each recipient once. */
export const engagedKey = (nid: string, kind: "opened" | "clicked"): string => `nfx:eng:${kind}:${nid}`;

/** Email addresses that hard-bounced: set of lower-cased addresses. The email gateway sends them nothing. */
export const BOUNCED_KEY = "nfx:bounced";

/**
 * Set (for 10 minutes) by the tracker once the receipt batch first published under message id `originalId` is
 * folded and its counters are stored: what the stream reconciler of its publisher looks for before it looks in
 * NFX_RECEIPTS (lib/flow/stream-reconciler.ts). Pass the original id (`MSGID.original`), not a republished copy's.
 */
export const receiptFoldedKey = (originalId: string): string => `nfx:rf:${originalId}`;

/**
 * Set (for an hour) by a shard owner once it has decided the fan chunk first published under message id `originalId`
 * (router, campaign or deferred release): what the stream reconciler of the chunk's publisher looks for before it
 * looks in NFX_FAN, where a decided chunk is purged at the next checkpoint. Pass the original id (`MSGID.original`).
 */
export const fanDecidedKey = (shard: number, originalId: string): string => `nfx:${tag(shard)}:fd:${originalId}`;

/**
 * Set (for an hour) by the gateway or in-app dispatcher that finished the send batch first published under message id
 * `originalId` (its outcomes recorded and its receipts published, right before its ack): what the stream reconciler of
 * the batch's publisher looks for before it looks in the batch's stream. Pass the original id (`MSGID.original`).
 */
export const sendBatchDoneKey = (originalId: string): string => `nfx:sd:${originalId}`;

/**
 * The direct webhook deliveries of the send batch first published as `originalId` that were answered for good (hash
 * delivery id -> outcome), noted while the batch runs and deleted when it is done: a redelivery after a crash posts none
 * of them again. Pass the original id (`MSGID.original`).
 */
export const webhookAnsweredKey = (originalId: string): string => `nfx:wa:${originalId}`;
/** The deliveries at the head of webhook endpoint `endpoint`'s queue answered but not yet finished in it (hash delivery id -> outcome): its next deliverer after a crash posts none of them again. */
export const endpointAnsweredKey = (endpoint: string): string => `nfx:wae:${endpoint}`;

/** A provider webhook event already applied (SendGrid sg_event_id, Twilio sid + status): redelivered webhooks count once. */
export const webhookSeenKey = (provider: string, eventId: string): string => `nfx:wh:${provider}:${eventId}`;

/**
 * Broadcasts (in-app notifications to a large audience, stored once and merged into each member's inbox when read):
 * hash notification id -> JSON record. Shares the hash tag {bc} with {@link BROADCAST_INDEX_KEY}, so one script changes both.
 */
export const BROADCASTS_KEY = "nfx:{bc}:r";
/** The broadcasts newest last: sorted set notification id -> creation time (ms). */
export const BROADCAST_INDEX_KEY = "nfx:{bc}:x";

/** Topic definitions: hash name -> JSON definition. */
export const TOPICS_KEY = "nfx:topics";

/** The user subscribers of a topic in one shard (sorted set, score 0, iterated in id order like a segment). */
export const topicUsersKey = (shard: number, topic: string): string => `nfx:${tag(shard)}:tpc:${topic}`;

/** The endpoints subscribed to a topic: set of endpoint ids. */
export const topicEndpointsKey = (topic: string): string => `nfx:tpe:${topic}`;

/** Webhook endpoints: hash id -> JSON endpoint (URL, secrets, filter, rate limit). */
export const ENDPOINTS_KEY = "nfx:endpoints";

/** Endpoints with deliveries waiting: set of endpoint ids (gateway-webhook processes take them from here). */
export const ENDPOINTS_ACTIVE_KEY = "nfx:ep:active";

/** Keys of one endpoint share the hash tag {e:<id>}, so its queue scripts run on one Redis Cluster node. */
const etag = (endpoint: string): string => `{e:${endpoint}}`;
/** An endpoint's deliveries in publish order: list of delivery ids. */
export const endpointQueueKey = (endpoint: string): string => `nfx:${etag(endpoint)}:q`;
/** An endpoint's queued deliveries: hash delivery id -> JSON (notification, type, enqueued at; the body and brief only for event-stream deliveries, else in webhookPayloadKey). */
export const endpointItemsKey = (endpoint: string): string => `nfx:${etag(endpoint)}:i`;
/** Delivery ids an endpoint has finished (delivered or failed): sorted set id -> time, trimmed after `endpoints.doneTtlSec`. */
export const endpointDoneKey = (endpoint: string): string => `nfx:${etag(endpoint)}:done`;
/** An endpoint's delivery state: hash (delivered, failed, attempts, nextAt, lastStatus, lastError, failingSince, consecutive, paused, pausedReason). */
export const endpointStateKey = (endpoint: string): string => `nfx:${etag(endpoint)}:st`;
/** The gateway process delivering to an endpoint now (value: its owner id; TTL `endpoints.leaseMs`). */
export const endpointLeaseKey = (endpoint: string): string => `nfx:${etag(endpoint)}:lease`;
/** What every endpoint's delivery of notification `nid` sends (JSON: event type, body, notification brief), stored once for all its endpoints; TTL `streams.retentionHours`. */
export const webhookPayloadKey = (nid: string): string => `nfx:whp:${nid}`;
/** An endpoint's recent deliveries and their outcomes, newest last (list of JSON, capped at `endpoints.historyPerEndpoint`). */
export const endpointHistoryKey = (endpoint: string): string => `nfx:${etag(endpoint)}:h`;

/**
 * The webhook gateways' receipt outbox (lib/gateway/receipt-outbox.ts), under one hash tag so its scripts run on one
 * Redis Cluster node: `entries` (hash receipt id -> JSON), `order` (list of receipt ids), `taken` (sorted set receipt
 * id -> time taken into a batch), `batches` (hash batch id -> JSON array, taken and not yet published) and `batchTimes`
 * (sorted set batch id -> time taken).
 */
export const WEBHOOK_RECEIPT_OUTBOX = {
  entries: "nfx:{wro}:e",
  order: "nfx:{wro}:o",
  taken: "nfx:{wro}:t",
  batches: "nfx:{wro}:b",
  batchTimes: "nfx:{wro}:bt",
} as const;

