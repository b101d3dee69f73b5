// Identifiers: time-ordered notification ids and the deterministic delivery key.
import { randomBytes } from "node:crypto";

const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"; // Crockford base32, lower case
// Random bytes drawn 4 KB at a time: one syscall per 256 ids instead of one per id.
let pool = randomBytes(4096);
let poolAt = 0;

/**
 * A new notification id, `n_` + 10 chars of millisecond time + 16 random chars
 * (ULID layout, lower case). Sorts by creation time; safe in NATS subjects and Redis keys.
 */
export function newNotificationId(now: number = Date.now()): string {
  let t = now;
  let time = "";
  for (let i = 0; i < 10; i++) {
    time = ALPHABET[t % 32] + time;
    t = Math.floor(t / 32);
  }
  if (poolAt + 16 > pool.length) {
    pool = randomBytes(4096);
    poolAt = 0;
  }
  let r = "";
  for (let i = 0; i < 16; i++) r += ALPHABET[pool[poolAt++] & 31];
  return `n_${time}${r}`;
}

/** The delivery key `(notification, user, channel, device)`: the unit of "never notify twice". */
export function deliveryKey(notificationId: string, userId: string, channel: string, deviceId: string): string {
  return `${notificationId}|${userId}|${channel}|${deviceId}`;
}
