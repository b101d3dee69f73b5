// The messages that travel between actors, as tagged unions on `type`.
import type { Channel, ContentChannel, Priority } from "./subjects.js";
export { CONTENT_CHANNELS, type ContentChannel } from "./subjects.js";

/** Push content of a notification (APNs and FCM). */
export interface PushContent {
  title: string;
  body: string;
  data?: Record<string, string>;
  badge?: number;
  sound?: string;
}

export interface EmailContent {
  subject: string;
  html?: string;
  text?: string;
}

export interface SmsContent {
  text: string;
}

export interface InAppContent {
  payload: Record<string, unknown>;
}

/** What a topic's webhook endpoints receive: the event type and its data (the body is `{type, timestamp, data}`). */
export interface WebhookContent {
  type: string;
  data: Record<string, unknown>;
}

/** Inline content, per content channel; `webhook` is for a topic's endpoints. */
export interface Content {
  push?: PushContent;
  email?: EmailContent;
  sms?: SmsContent;
  inapp?: InAppContent;
  webhook?: WebhookContent;
}

export type TemplateVariables = Record<string, string | number | boolean>;

/**
 * A stored template: content per channel and locale, Handlebars syntax.
 * `{{name}}` takes a request variable, `{{user.x}}` the recipient's id,
 * locale or attribute x. Email HTML escapes variables; other fields do not.
 */
export interface Template {
  id: string;
  description?: string;
  /** Locale used when neither the recipient's locale nor its language has an entry. */
  defaultLocale: string;
  channels: {
    push?: Record<string, Omit<PushContent, "badge" | "sound"> & Pick<PushContent, "badge" | "sound">>;
    email?: Record<string, EmailContent>;
    sms?: Record<string, SmsContent>;
    inapp?: Record<string, InAppContent>;
  };
  /** Request variables every rendering needs (derived from the template text when stored). */
  variables: string[];
  updatedAt: number;
}

/** How notifications are gathered into a digest: per (recipient, `key`), a fixed window, or a quiet period capped at `maxSec`; at most `maxItems` listed. */
export interface DigestSpec {
  key: string;
  windowSec: number;
  /** Quiet-period window: closes after this long without a new item (but at most `maxSec` after the first). */
  quietSec?: number;
  maxSec: number;
  maxItems: number;
}

/** The template a notification uses, snapshotted at acceptance so later edits do not change it. */
export interface TemplateUse {
  template: Template;
  variables: TemplateVariables;
  /** Locale forced by the request; else the recipient's. */
  locale?: string;
  /** A digest's items, as its template sees them (`{{digest.count}}`, `{{#each digest.events}}`): set on a digest only. */
  digest?: Record<string, unknown>;
}

/** An accepted notification as stored on NFX_INTAKE. */
export interface Notification {
  type: "notification";
  id: string;
  createdAt: number;
  expiresAt: number;
  /** When set and in the future, the notification waits in the scheduler until then. */
  sendAt?: number;
  /** Local-time delivery: each recipient gets it at `localTime` (minutes since midnight) in their zone, or within `windowMin` after it. */
  deliverAt?: { localTime: number; windowMin: number };
  /** Held per (recipient, key) and sent as one digest when the window closes (lib/shard/digests.ts); never on critical. */
  digest?: DigestSpec;
  priority: Priority;
  category: string;
  /** Explicit recipients; empty when `segment` is set. */
  recipients: string[];
  segment?: string;
  /** The topic it was published to: its user subscribers are the campaign's segment `topic:<name>`, its endpoints get webhooks. */
  topic?: string;
  /** Campaign options of a segment notification. */
  campaign?: { rate?: number };
  /** Channels the producer wants, in order of preference. */
  channels: ContentChannel[];
  content?: Content;
  template?: TemplateUse;
  collapseKey?: string;
  idempotencyKey?: string;
  /** Who submitted it: an API key's name, or "nats". */
  producer: string;
}

/** What every per-recipient stage needs of the notification, carried once per batch. */
export type NotificationBrief = Pick<Notification, "id" | "createdAt" | "expiresAt" | "priority" | "category" | "channels" | "content" | "template" | "collapseKey" | "segment" | "topic" | "deliverAt" | "digest" | "campaign">;

/** One shard's slice of one notification, on NFX_FAN. */
export interface FanChunk {
  type: "fan_chunk";
  shard: number;
  chunk: number;
  notification: NotificationBrief;
  users: string[];
  /** Segment rule the shard actor applies to each user's record (campaign chunks of built-in segments). */
  filter?: { activeSince?: number };
  /** Set on a chunk the deferred-release actor re-emits: the end of the quiet hours its users waited for. */
  release?: number;
}

/** Users of one fan chunk deferred by quiet hours until `until`, on NFX_DEFER. */
export interface DeferredChunk {
  type: "deferred_chunk";
  until: number;
  chunk: FanChunk;
}

/** One device-level send inside a {@link SendBatch}. */
export interface Send {
  nid: string;
  user: string;
  device: string;
  token: string;
  /** The app the device token belongs to (APNs bundle id, Android package or FCM project): picks the provider app. */
  app?: string;
  /** Push content rendered for this recipient from a template; absent means the notification's inline content. */
  push?: PushContent;
  /** Email or SMS content rendered for this recipient from a template; absent means the notification's inline content (or its push content). */
  email?: EmailContent;
  sms?: SmsContent;
  /** In-app payload rendered for this recipient from a template; absent means the notification's inline content. */
  inapp?: InAppContent;
  /** In-app sends: where the send goes instead when no client acknowledges it in time (the route without in-app). Sent at most once. */
  fallback?: { channel: Channel; device: string; token: string; app?: string }[];
  /** Provider attempts already made (retryable failures); absent means none. */
  attempt?: number;
  /** Times the send was pushed back without an attempt (breaker open, bulkhead full, key claimed elsewhere). */
  waits?: number;
  /**
   * Set on normal and bulk sends of a category with `overload: "shed"`: the shed deadline (epoch ms, lib/flow/shedding.ts).
   * A gateway or the in-app dispatcher that takes the send past it records outcome `shed` instead of calling the provider.
   */
  shedAfter?: number;
}

/** A batch of sends for one channel, on NFX_SEND_<CHANNEL>. All sends are of one shard. */
export interface SendBatch {
  type: "send_batch";
  channel: Channel;
  shard: number;
  notifications: Record<string, NotificationBrief>;
  sends: Send[];
  /** When the shard actor decided these sends; the gateway re-checks users whose preferences changed after it. */
  decidedAt?: number;
  /** The shard owner and lease revision that emitted the batch (fencing, diagnostics). */
  owner?: string;
  epoch?: number;
  /** Set when the batch replays a dead letter: the failure reason its receipt counted, which the new outcome replaces. */
  replayOf?: string;
}

/** Sends a gateway pushed back, on NFX_RETRY until `due`, then released to their send stream as `batch` with message id `releaseId`. */
export interface RetryBatch {
  type: "retry_batch";
  due: number;
  priority: Priority;
  /** The message id the released batch is published with; it also holds the sends' delivery-key claims. */
  releaseId: string;
  batch: SendBatch;
}

/**
 * What happened to a recipient or a send. `delivered` is the provider's (or the in-app client's) confirmation;
 * `shed` is a normal or bulk recipient or send dropped under overload because it could not go out by its
 * deadline (reason `max_delay` or `expired`; categories with `overload: "shed"` only, docs/architecture.md,
 * "Overload and shedding"); `opened` and `clicked` are engagement, counted once per recipient; `seen` and `read`
 * are in-app inbox states.
 */
export const OUTCOMES = ["queued", "suppressed", "deferred", "digested", "sent", "delivered", "failed", "cancelled", "fallback", "shed", "seen", "read", "opened", "clicked"] as const;
export type Outcome = (typeof OUTCOMES)[number];

export interface ReceiptEntry {
  user: string;
  outcome: Outcome;
  channel?: Channel;
  device?: string;
  reason?: string;
  providerId?: string;
  /** Deferred entries: when the quiet hours end and the user is decided again. */
  until?: number;
  at: number;
  /** A failure reason this entry replaces (a replayed dead letter): counters move it from failed. */
  supersedes?: string;
  /** A failure the provider reported after it had accepted the send (bounce, undelivered): counters move it from sent to failed. */
  late?: true;
  /**
   * An outcome another batch recorded, repeated by this copy of the send (a second delivery or a pushed-back part)
   * so its own caller sees it: shown in delivery lines, never counted. The batch that recorded it reports it
   * (its receipts, or its redelivery's under the same message id: docs/architecture.md, "Acks, ordering and ownership").
   */
  echo?: true;
}

/** Receipts of one notification from one batch, on `nfx.rcpt.<nid>`. */
export interface ReceiptBatch {
  type: "receipts";
  nid: string;
  /** `inbox`: a user's seen/read actions on in-app items. */
  stage: "shard" | "gateway" | "inbox" | "provider" | "engagement";
  entries: ReceiptEntry[];
  /** Shard stage: recipients decided in this chunk (members of the target; non-members of a segment are not recipients). */
  decided?: number;
  /** Shard stage, campaigns: sends queued, counted instead of listed one entry per device. */
  queued?: number;
  /** Shard stage, campaigns: recipients deferred by quiet hours, counted instead of listed. */
  deferred?: number;
  /** Shard stage: recipients of a released chunk (no longer waiting for quiet hours to end). */
  released?: number;
  /** Shard stage: recipients deferred by this chunk per release time (ms, as a string key): the waves of a campaign. */
  waves?: Record<string, number>;
  /** Shard stage, a released chunk: the release time of the wave it belongs to. */
  releasedAt?: number;
}

/** A user's directory record in Redis (lib/directory/directory.ts). */
export interface UserRecord {
  id: string;
  optedOut?: boolean;
  /** Stopped all marketing: no message of a commercial category (docs/consent.md). */
  marketingOptOut?: boolean;
  locale?: string;
  timezone?: string;
  email?: string;
  phone?: string;
  /** Free-form attributes templates can use as `{{user.<name>}}`. */
  attributes?: Record<string, string | number | boolean>;
  /** Last time the user was active (epoch ms); "active within N days" segments read it. */
  lastActive?: number;
  /** The user's own quiet hours, local minutes since midnight in `timezone`. */
  quietHours?: { start: number; end: number };
  preferences?: Preferences;
  devices: DeviceRecord[];
}

/** Who changed a user's consent, for the consent log: through what, and a name where there is one (the API key, the keyword). */
export interface ConsentActor {
  via: "api_key" | "nats" | "user_token" | "unsubscribe_link" | "preference_page" | "sms_keyword" | "cli" | "system";
  name?: string;
}

/** One entry of a user's consent log. */
export interface ConsentLogEntry {
  at: number;
  via: ConsentActor["via"];
  by?: string;
  /** What changed, as applied: the preference patch, or `{sms: "stopped" | "started", number}` for an SMS keyword. */
  change: Record<string, unknown>;
}

/** A user's choices: per category, per content channel, false turns it off. Absent means allowed. */
export interface Preferences {
  categories?: Record<string, Partial<Record<ContentChannel, boolean>>>;
}

export interface DeviceRecord {
  id: string;
  platform: "ios" | "android";
  token: string;
  /** The app (bundle id / package) the token belongs to. */
  app?: string;
}

/** A send whose retries ran out, on `nfx.dlq.<channel>` with everything needed to replay it. */
export interface DeadLetter {
  type: "dead_letter";
  channel: Channel;
  shard: number;
  notification: NotificationBrief;
  send: Send;
  reason: string;
  attempts: number;
  at: number;
}

/** The part of a notification every per-recipient stage needs (no recipient list). */
export function briefOf(n: Notification): NotificationBrief {
  const { id, createdAt, expiresAt, priority, category, channels, content, template, collapseKey, segment, topic, deliverAt, digest, campaign } = n;
  return {
    id, createdAt, expiresAt, priority, category, channels,
    ...(content ? { content } : {}), ...(template ? { template } : {}), ...(collapseKey ? { collapseKey } : {}), ...(segment ? { segment } : {}), ...(topic ? { topic } : {}),
    ...(deliverAt ? { deliverAt } : {}), ...(digest ? { digest } : {}), ...(campaign?.rate !== undefined ? { campaign } : {}),
  };
}
