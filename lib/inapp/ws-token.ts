// User tokens of the WebSocket gateway and inbox API: HS256 JWTs (minted with jose) whose `sub` names the user.
import { createHmac, timingSafeEqual } from "node:crypto";

import { SignJWT } from "jose";

import { Unauthenticated } from "../core/errors.js";
import { ID_PATTERN } from "../core/subjects.js";

/** Verifies and mints user tokens with one HMAC secret. */
export class UserTokens {
  private readonly key: Uint8Array;

  /** `issuer`, when set, is required as `iss` on every verified token and written into minted ones. */
  constructor(secret: string, private readonly issuer?: string) {
    this.key = new TextEncoder().encode(secret);
  }

  /** Mints a token for `user` valid for `ttlSec` seconds. Throws when the user id is not a valid id. */
  async mint(user: string, ttlSec: number): Promise<string> {
    if (!ID_PATTERN.test(user)) throw new Unauthenticated(`user: must be 1-128 characters of A-Z a-z 0-9 _ - : @ + =`, { field: "user" });
    const j = new SignJWT({}).setProtectedHeader({ alg: "HS256", typ: "JWT" }).setSubject(user).setIssuedAt().setExpirationTime(`${Math.max(1, Math.floor(ttlSec))}s`);
    if (this.issuer) j.setIssuer(this.issuer);
    return j.sign(this.key);
  }

  /**
   * Returns the user a token names. Throws {@link Unauthenticated} saying
   * why when the signature, algorithm, expiry, issuer or subject is wrong.
   */
  verify(token: string | undefined | null): Promise<{ user: string; exp: number }> {
    return Promise.resolve().then(() => this.verifyNow(token));
  }

  /**
   * {@link verify}, synchronously: the WebSocket gateway upgrades a connection in the handler's own turn, since an
   * upgrade after an await, corked as uWS asks, dropped about one connection in 11,000 right after it opened (docs/inapp.md).
   * Checks, as jose's `jwtVerify` with `algorithms: ["HS256"]` and `requiredClaims: ["exp", "sub"]` does: three
   * base64url parts; a JSON header with `alg` HS256 and no `crit`; the HMAC-SHA256 of the first two parts (compared in
   * constant time); a JSON object payload; `exp` a number in the future, `nbf` (if any) not in the future, `iat` (if
   * any) a number; `iss` equal to the issuer when one is set; `sub` a valid user id.
   */
  verifyNow(token: string | undefined | null): { user: string; exp: number } {
    if (!token) throw new Unauthenticated("token: missing (pass ?token=<jwt> or Authorization: Bearer <jwt>)", { field: "token" });
    const invalid = (): Unauthenticated => new Unauthenticated("token: invalid signature or format", { field: "token" });
    const claim = (name: string, reason: string): Unauthenticated => new Unauthenticated(`token: claim ${name} ${reason}`, { field: "token" });
    const parts = token.split(".");
    if (parts.length !== 3 || !parts.every((x) => BASE64URL.test(x))) throw invalid();
    const [h, p, sig] = parts;
    const header = jsonObject(h);
    if (!header || header.alg !== "HS256" || header.crit !== undefined || header.b64 !== undefined) throw invalid();
    const mac = createHmac("sha256", this.key).update(`${h}.${p}`).digest();
    const got = Buffer.from(sig, "base64url");
    // Re-encoded to compare: Buffer.from skips what is not base64url, so only the canonical spelling is accepted.
    if (got.length !== mac.length || got.toString("base64url") !== sig || !timingSafeEqual(got, mac)) throw invalid();
    const payload = jsonObject(p);
    if (!payload) throw invalid();
    const sec = Math.floor(Date.now() / 1000);
    if (payload.iat !== undefined && typeof payload.iat !== "number") throw claim("iat", "must be a number");
    if (payload.exp === undefined) throw claim("exp", "missing");
    if (typeof payload.exp !== "number") throw claim("exp", "must be a number");
    if (payload.exp <= sec) throw new Unauthenticated("token: expired", { field: "token" });
    if (payload.nbf !== undefined && (typeof payload.nbf !== "number" || payload.nbf > sec)) throw claim("nbf", "check failed");
    if (this.issuer && payload.iss !== this.issuer) throw claim("iss", "unexpected value");
    if (payload.sub === undefined) throw claim("sub", "missing");
    if (typeof payload.sub !== "string" || !ID_PATTERN.test(payload.sub)) throw new Unauthenticated("token: sub must be a valid user id", { field: "token" });
    return { user: payload.sub, exp: payload.exp * 1000 };
  }
}

/** One base64url part of a compact JWS: non-empty, no padding. */
const BASE64URL = /^[A-Za-z0-9_-]+$/;

/** The JSON object a base64url part encodes, or null when it is not one. */
function jsonObject(part: string): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
    return v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}
