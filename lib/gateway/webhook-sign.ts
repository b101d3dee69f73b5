// Standard Webhooks signatures (webhook-id, webhook-timestamp, webhook-signature): HMAC-SHA256 of "<id>.<timestamp>.<body>" under each active secret.
import { createHmac } from "node:crypto";

/** The key bytes of a `whsec_…` secret (base64 after the prefix). */
export const secretKey = (secret: string): Buffer => Buffer.from(secret.startsWith("whsec_") ? secret.slice(6) : secret, "base64");

/**
 * The three Standard Webhooks headers of one delivery attempt: `webhook-id` (`id`, the same on every attempt),
 * `webhook-timestamp` (seconds, this attempt) and `webhook-signature` (`v1,<base64>` per secret, space-separated:
 * during a rotation's overlap a receiver holding either secret verifies it). `keys`: {@link secretKey} of each secret.
 * Node's crypto rather than the `standardwebhooks` package on this path (its SHA-256 is JavaScript); the sandbox
 * receiver verifies with the package, so the two are checked against each other in every test.
 */
export function signatureHeaders(id: string, atSec: number, body: string, keys: readonly Buffer[]): Record<string, string> {
  const signed = `${id}.${atSec}.${body}`;
  const sigs = keys.map((k) => `v1,${createHmac("sha256", k).update(signed).digest("base64")}`);
  return { "webhook-id": id, "webhook-timestamp": String(atSec), "webhook-signature": sigs.join(" ") };
}
