// User tokens of the WebSocket gateway and inbox API: HS256 JWTs (jose) whose `sub` names the user.
import { errors as joseErrors, jwtVerify, SignJWT } from "jose";

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
  async verify(token: string | undefined | null): Promise<{ user: string; exp: number }> {
    if (!token) throw new Unauthenticated("token: missing (pass ?token=<jwt> or Authorization: Bearer <jwt>)", { field: "token" });
    try {
      const { payload } = await jwtVerify(token, this.key, { algorithms: ["HS256"], ...(this.issuer ? { issuer: this.issuer } : {}), requiredClaims: ["exp", "sub"] });
      const sub = payload.sub!;
      if (!ID_PATTERN.test(sub)) throw new Unauthenticated("token: sub must be a valid user id", { field: "token" });
      return { user: sub, exp: payload.exp! * 1000 };
    } catch (err) {
      if (err instanceof Unauthenticated) throw err;
      if (err instanceof joseErrors.JWTExpired) throw new Unauthenticated("token: expired", { field: "token" });
      if (err instanceof joseErrors.JWTClaimValidationFailed) throw new Unauthenticated(`token: claim ${err.claim} ${err.reason}`, { field: "token" });
      throw new Unauthenticated("token: invalid signature or format", { field: "token" });
    }
  }
}
