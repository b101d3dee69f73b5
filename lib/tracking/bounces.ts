// Hard-bounced email addresses: added by SendGrid's event webhook, checked by the email gateway before every request.
import { BOUNCED_KEY } from "../core/keys.js";
import type { Redis } from "../infra/redis.js";

/** Addresses are compared case-insensitively. */
const norm = (a: string): string => a.trim().toLowerCase();

/** Per address, whether it hard-bounced (one SMISMEMBER). */
export async function areBounced(redis: Redis, addresses: readonly string[]): Promise<boolean[]> {
  if (addresses.length === 0) return [];
  const r = await redis.smismember(BOUNCED_KEY, ...addresses.map(norm));
  return r.map((x) => x === 1);
}

/** Records hard bounces: those addresses get no more email until {@link clearBounce}. */
export async function addBounces(redis: Redis, addresses: readonly string[]): Promise<void> {
  if (addresses.length) await redis.sadd(BOUNCED_KEY, ...addresses.map(norm));
}

/** Lets an address receive email again (an operator fixed it). Resolves whether it was listed. */
export async function clearBounce(redis: Redis, address: string): Promise<boolean> {
  return (await redis.srem(BOUNCED_KEY, norm(address))) === 1;
}
