// The APNs notification built from nfx content: shared by the APNs gateway and ingest's payload-size rule.
import apn from "@parse/node-apn";

import type { NotificationBrief, PushContent } from "./types.js";

/** Apple's limit for a regular remote notification's JSON payload, in bytes. */
export const APNS_MAX_PAYLOAD = 4096;

/** Builds the APNs notification: alert, badge, sound, data, collapse id, priority (10 for critical/high, else 5), expiry. */
export function apnsNotification(n: Pick<NotificationBrief, "id" | "priority" | "expiresAt" | "collapseKey">, push: PushContent, topic: string): apn.Notification {
  const note = new apn.Notification();
  note.topic = topic;
  note.pushType = "alert";
  note.alert = { title: push.title, body: push.body };
  if (push.badge !== undefined) note.badge = push.badge;
  if (push.sound) note.sound = push.sound;
  note.payload = { ...(push.data ?? {}), nfx: { id: n.id } };
  if (n.collapseKey) note.collapseId = n.collapseKey;
  note.priority = n.priority === "critical" || n.priority === "high" ? 10 : 5;
  note.expiry = Math.floor(n.expiresAt / 1000);
  return note;
}

/**
 * The size of the JSON body APNs would receive for `push` when it is over
 * {@link APNS_MAX_PAYLOAD}, else null. Content whose characters could not reach
 * the limit even if every one were escaped as \uXXXX (6 bytes) skips the exact
 * computation.
 */
export function apnsPayloadOverLimit(push: PushContent): number | null {
  let chars = push.title.length + push.body.length + (push.sound?.length ?? 0);
  for (const [k, v] of Object.entries(push.data ?? {})) chars += k.length + v.length + 6;
  if (chars * 6 + 200 < APNS_MAX_PAYLOAD) return null;
  const note = apnsNotification({ id: "n_00000000000000000000000000", priority: "normal", expiresAt: 0 }, push, "x");
  const bytes = Buffer.byteLength((note as unknown as { compile(): string }).compile());
  return bytes > APNS_MAX_PAYLOAD ? bytes : null;
}
