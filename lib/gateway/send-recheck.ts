// The send-time re-check: users whose opt-out or preferences changed after their batch was decided, and whether their current record still allows the send.
import { changedKey } from "../core/keys.js";
import { ownValue } from "../core/own-keys.js";
import type { Channel } from "../core/subjects.js";
import type { NotificationBrief, SendBatch, UserRecord } from "../core/types.js";
import { readUsers } from "../directory/directory.js";
import type { Redis } from "../infra/redis.js";
import { contentOf } from "../shard/policy.js";

/**
 * Users of `batch` among `users` (its sends not yet delivered) whose opt-out
 * or preferences changed at or after the batch was decided, with their
 * current records: one ZMSCORE on the shard's change set, and a read of just
 * those users. A changed user whose record is gone comes back as opted out.
 * Resolves an empty map, without touching Redis, for a batch with no
 * `decidedAt` or no users. Rejects when Redis fails (the batch is then
 * redelivered). See docs/architecture.md, "Re-check at send time".
 */
export async function changedSince(redis: Redis, batch: SendBatch, users: readonly string[]): Promise<Map<string, UserRecord>> {
  const out = new Map<string, UserRecord>();
  if (batch.decidedAt === undefined || users.length === 0) return out;
  const scores = await redis.zmscore(changedKey(batch.shard), ...users);
  const changed = users.filter((_, i) => scores[i] !== null && Number(scores[i]) >= batch.decidedAt!);
  if (changed.length === 0) return out;
  const recs = await readUsers(redis, batch.shard, changed);
  changed.forEach((u, i) => out.set(u, recs[i] ?? { id: u, optedOut: true, devices: [] }));
  return out;
}

/**
 * Why user record `u` forbids sending notification `n` on `channel` now
 * (`opted_out`, `marketing_opt_out` for a `commercial` category, `preference_off`), or null when it allows it. Pure. A
 * deleted user reaches here as opted out (see {@link changedSince}).
 */
export function recheck(u: UserRecord, n: NotificationBrief, channel: Channel, commercial = false): string | null {
  if (channel === "webhook") return null; // endpoints are not users
  if (u.optedOut) return "opted_out";
  if (commercial && u.marketingOptOut) return "marketing_opt_out";
  if (ownValue(u.preferences?.categories, n.category)?.[contentOf(channel)] === false) return "preference_off";
  return null;
}
