// Signed consent links: the one-click unsubscribe of one category's email and the preference page of one user, tamper-proof and expiring.
import type { Config } from "../core/config.js";
import { RequestInvalid } from "../core/errors.js";
import { openToken, sealToken } from "../core/sealed-token.js";

/** Domain separation of consent tokens from tracking tokens (same secret). */
const DOMAIN = "consent|";

/** What a consent link stands for: `u` unsubscribes `user` from `category`'s email (and opens the page), `p` opens the user's preference page. */
export interface ConsentClaims {
  kind: "u" | "p";
  user: string;
  /** The category of an unsubscribe link. */
  category?: string;
  /** Expiry, unix seconds. */
  exp: number;
}

/**
 * Signs and verifies consent links with HMAC-SHA256 (128-bit tag) under the tracking links' secret, domain-separated
 * (a tracking token is never a valid consent token; lib/core/sealed-token.ts). Links live under `<baseUrl>/v1/consent/`.
 */
export class ConsentLinks {
  constructor(private readonly secret: string, private readonly baseUrl: string, private readonly ttlSec: number, private readonly now: () => number = Date.now) {}

  /** A token for `c` (expiring after the link TTL): base64url JSON, a dot, base64url MAC. */
  token(c: Omit<ConsentClaims, "exp">): string {
    return sealToken(this.secret, [c.kind, c.user, c.category ?? "", Math.floor(this.now() / 1000) + this.ttlSec], DOMAIN);
  }

  /** The one-click unsubscribe URL of `user` for `category`'s email (`List-Unsubscribe`, `{{unsubscribe_url}}`): POST unsubscribes, GET shows the page. */
  unsubscribeUrl(user: string, category: string): string {
    return `${this.baseUrl}/v1/consent/u/${this.token({ kind: "u", user, category })}`;
  }

  /** The preference page URL of `user` (`{{preferences_url}}`). */
  preferencesUrl(user: string): string {
    return `${this.baseUrl}/v1/consent/p/${this.token({ kind: "p", user })}`;
  }

  /**
   * The claims of `token`. Throws {@link RequestInvalid} (field `token`) saying why when it is malformed, its MAC does
   * not match (tampered, or signed with another secret) or it has expired.
   */
  verify(token: string): ConsentClaims {
    const bad = (why: string): never => {
      throw new RequestInvalid(`token: ${why}`, { field: "token" });
    };
    const opened = openToken(this.secret, token, DOMAIN);
    if ("error" in opened) return bad(opened.error === "signature" ? "the link's signature does not match (it was altered)" : "malformed link");
    const body = opened.body;
    if (body.length !== 4) return bad("malformed link");
    const [kind, user, category, exp] = body as [string, string, string, number];
    if ((kind !== "u" && kind !== "p") || typeof user !== "string" || typeof exp !== "number") return bad("malformed link");
    if (exp * 1000 < this.now()) bad(`the link expired on ${new Date(exp * 1000).toISOString()}`);
    return { kind, user, ...(category ? { category } : {}), exp };
  }
}

/** The consent links of a cluster: `engagement.secret` and `engagement.baseUrl`, `consent.linkTtlDays`. */
export const consentLinksFor = (cfg: Config, now?: () => number): ConsentLinks =>
  new ConsentLinks(cfg.engagement.secret, cfg.engagement.baseUrl, Math.round(cfg.consent.linkTtlDays * 86_400), now);
