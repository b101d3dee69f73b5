// Signed tracking links: the open pixel and click redirect of an email, tamper-proof with an HMAC over their contents.
import type { Config } from "../core/config.js";
import { RequestInvalid } from "../core/errors.js";
import { openToken, sealToken } from "../core/sealed-token.js";

/** What a tracking link stands for: an open of, or a click in, one notification by one recipient on one device. */
export interface LinkClaims {
  kind: "o" | "c";
  nid: string;
  user: string;
  channel: string;
  device: string;
  /** Click target. */
  url?: string;
  /** Expiry, unix seconds. */
  exp: number;
}

/** Signs and verifies tracking links with HMAC-SHA256 (128-bit tag) under one secret (lib/core/sealed-token.ts). */
export class LinkSigner {
  constructor(private readonly secret: string, private readonly baseUrl: string, private readonly ttlSec: number, private readonly now: () => number = Date.now) {}

  /** A token for `c` (its expiry set from the link TTL): base64url JSON, a dot, base64url MAC. */
  token(c: Omit<LinkClaims, "exp">): string {
    return sealToken(this.secret, [c.kind, c.nid, c.user, c.channel, c.device, Math.floor(this.now() / 1000) + this.ttlSec, c.url ?? ""]);
  }

  /** The open pixel URL of a recipient. */
  openUrl(c: Omit<LinkClaims, "exp" | "kind" | "url">): string {
    return `${this.baseUrl}/v1/t/o/${this.token({ ...c, kind: "o" })}.gif`;
  }

  /** The click redirect URL of a recipient for `url`. */
  clickUrl(c: Omit<LinkClaims, "exp" | "kind" | "url">, url: string): string {
    return `${this.baseUrl}/v1/t/c/${this.token({ ...c, kind: "c", url })}`;
  }

  /**
   * The claims of a token of kind `kind`. Throws {@link RequestInvalid}
   * (field `token`) when it is malformed, its MAC does not match (tampered or
   * another secret), it is of the other kind, or it has expired.
   */
  verify(token: string, kind: LinkClaims["kind"]): LinkClaims {
    const bad = (why: string): never => {
      throw new RequestInvalid(`token: ${why}`, { field: "token" });
    };
    const opened = openToken(this.secret, token.replace(/\.gif$/, ""));
    if ("error" in opened) return bad(opened.error === "signature" ? "signature does not match" : "malformed");
    const body = opened.body;
    if (body.length !== 7) return bad("malformed");
    const [k, nid, user, channel, device, exp, url] = body as [string, string, string, string, string, number, string];
    if (k !== kind) bad(`not a${kind === "o" ? "n open" : " click"} link`);
    if (exp * 1000 < this.now()) bad("link expired");
    return { kind: k as LinkClaims["kind"], nid, user, channel, device, exp, ...(url ? { url } : {}) };
  }
}

/** The 1×1 transparent GIF an open pixel answers. */
export const PIXEL_GIF = Buffer.from("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7", "base64");

const HREF = /(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?:\/\/[^"']+)\2/gi;

/**
 * Prepares an HTML body for tracking: every http(s) `<a href>` becomes a
 * placeholder `{{nfxc<i>}}` (links[i] is its target; the same target shares
 * one), and an open pixel `{{nfxopen}}` goes before `</body>` (or at the end).
 * Each recipient's substitutions then fill in their own signed URLs.
 */
export function trackableHtml(html: string, o: { clicks: boolean; pixel: boolean }): { html: string; links: string[] } {
  const links: string[] = [];
  let out = html;
  if (o.clicks) {
    out = out.replace(HREF, (_m, pre: string, q: string, url: string) => {
      let i = links.indexOf(url);
      if (i < 0) i = links.push(url) - 1;
      return `${pre}${q}{{nfxc${i}}}${q}`;
    });
  }
  if (o.pixel) {
    const img = '<img src="{{nfxopen}}" width="1" height="1" alt="" style="display:none">';
    out = /<\/body>/i.test(out) ? out.replace(/<\/body>/i, `${img}</body>`) : out + img;
  }
  return { html: out, links };
}

/** Fills the placeholders of {@link trackableHtml} with one recipient's URLs. */
export function fillTracking(html: string, subs: Record<string, string>): string {
  return html.replace(/\{\{(nfxopen|nfxc\d+)\}\}/g, (m, k: string) => subs[k] ?? m);
}

/** The cluster's link signer as configured (`engagement.secret`, `baseUrl`, `linkTtlDays`). */
export const linkSignerFor = (cfg: Config): LinkSigner => new LinkSigner(cfg.engagement.secret, cfg.engagement.baseUrl, Math.round(cfg.engagement.linkTtlDays * 86400));
