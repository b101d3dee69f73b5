// The messages that travel between actors, as tagged unions on `type`.
import type { Channel, Priority } from "./subjects.js";

/** Push content of a notification. */
export interface PushContent {
  title: string;
  body: string;
  data?: Record<string, string>;
  badge?: number;
  sound?: string;
}

/** What a producer sends on `nfx.api.notify`. Validated by actors/ingest.ts. */
export interface NotifyRequest {
  recipients: string[];
  category?: string;
  priority?: Priority;
  push: PushContent;
  collapseKey?: string;
  ttlSec?: number;
}

/** An accepted notification as stored on NFX_INTAKE. */
export interface Notification {
  type: "notification";
  id: string;
  createdAt: number;
  expiresAt: number;
  priority: Priority;
  category: string;
  recipients: string[];
  push: PushContent;
  collapseKey?: string;
}

/** What every per-recipient stage needs of the notification, carried once per batch. */
export type NotificationBrief = Pick<Notification, "id" | "createdAt" | "expiresAt" | "priority" | "category" | "push" | "collapseKey">;

/** One shard's slice of one notification, on NFX_FAN. */
export interface FanChunk {
  type: "fan_chunk";
  shard: number;
  chunk: number;
  notification: NotificationBrief;
  users: string[];
}

/** One device-level send inside a {@link SendBatch}. */
export interface Send {
  nid: string;
  user: string;
  device: string;
  token: string;
}

/** A batch of sends for one channel, on NFX_SEND_<CHANNEL>. All sends are of one shard. */
export interface SendBatch {
  type: "send_batch";
  channel: Channel;
  shard: number;
  notifications: Record<string, NotificationBrief>;
  sends: Send[];
}

/** The outcome of one recipient or one device. */
export type Outcome = "queued" | "suppressed" | "sent" | "failed";

export interface ReceiptEntry {
  user: string;
  outcome: Outcome;
  channel?: Channel;
  device?: string;
  reason?: string;
  providerId?: string;
  at: number;
}

/** Receipts of one notification from one batch, on `nfx.rcpt.<nid>`. */
export interface ReceiptBatch {
  type: "receipts";
  nid: string;
  stage: "shard" | "gateway";
  entries: ReceiptEntry[];
}

/** A user's directory record in Redis (lib/directory.ts). */
export interface UserRecord {
  id: string;
  optedOut?: boolean;
  locale?: string;
  timezone?: string;
  email?: string;
  phone?: string;
  devices: DeviceRecord[];
}

export interface DeviceRecord {
  id: string;
  platform: "ios" | "android";
  token: string;
}
