// Sealed tokens: a JSON array in base64url, a dot, and a 128-bit HMAC-SHA256 tag over it; what signed links (tracking, consent) carry.
import { createHmac, timingSafeEqual } from "node:crypto";

const MAC_BYTES = 16;

const macOf = (secret: string, domain: string, payload: string): Buffer => createHmac("sha256", secret).update(`${domain}${payload}`).digest().subarray(0, MAC_BYTES);

/** Seals `body` under `secret`; `domain` separates the kinds of token (a token of one domain never opens in another). */
export function sealToken(secret: string, body: readonly unknown[], domain = ""): string {
  const payload = Buffer.from(JSON.stringify(body)).toString("base64url");
  return `${payload}.${macOf(secret, domain, payload).toString("base64url")}`;
}

/** The body of a token sealed by {@link sealToken} with the same secret and domain, or why not: `malformed`, or `signature` (altered, or another secret). */
export function openToken(secret: string, token: string, domain = ""): { body: unknown[] } | { error: "malformed" | "signature" } {
  const [payload, mac, extra] = token.split(".");
  if (!payload || !mac || extra !== undefined) return { error: "malformed" };
  const want = macOf(secret, domain, payload);
  const got = Buffer.from(mac, "base64url");
  if (got.length !== want.length || !timingSafeEqual(got, want)) return { error: "signature" };
  try {
    const body: unknown = JSON.parse(Buffer.from(payload, "base64url").toString());
    return Array.isArray(body) ? { body } : { error: "malformed" };
  } catch {
    return { error: "malformed" };
  }
}
