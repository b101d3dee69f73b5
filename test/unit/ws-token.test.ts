// User tokens: the synchronous HS256 check accepts exactly what jose's jwtVerify accepts, and says why it refuses.
import { createHmac } from "node:crypto";

import { jwtVerify, SignJWT } from "jose";
import t from "tap";

import { UserTokens } from "../../lib/inapp/ws-token.js";

const SECRET = "unit-secret-unit-secret-unit-secret-1";
const key = new TextEncoder().encode(SECRET);
const now = Math.floor(Date.now() / 1000);
const b64 = (v: unknown): string => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");
/** A compact token with any header and payload, signed HS256 with `secret`. */
const hand = (header: unknown, payload: unknown, secret = SECRET): string => {
  const head = `${b64(header)}.${b64(payload)}`;
  return `${head}.${createHmac("sha256", secret).update(head).digest("base64url")}`;
};
const signed = (claims: Record<string, unknown>, alg = "HS256"): Promise<string> => new SignJWT(claims).setProtectedHeader({ alg, typ: "JWT" }).sign(key);

t.test("the synchronous check agrees with jose on every case, and names the reason", async (t) => {
  const plain = new UserTokens(SECRET);
  const withIss = new UserTokens(SECRET, "nfx-test");
  const good = await plain.mint("ana", 600);
  const [h, p, s] = good.split(".");
  /** `x` with its 11th character changed (a bit of the signature itself, not of the last character's padding bits). */
  const flip = (x: string): string => x.slice(0, 10) + (x[10] === "A" ? "B" : "A") + x.slice(11);
  /** The same signature bytes spelled otherwise: one of the last character's two unused bits flipped (jose decodes the same bytes). */
  const respell = (x: string): string => {
    const abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    return x.slice(0, -1) + abc[abc.indexOf(x.slice(-1)) ^ 1];
  };
  const cases: { name: string; token: string; tokens?: UserTokens; want: RegExp | "ana" }[] = [
    { name: "a minted token", token: good, want: "ana" },
    { name: "a minted token with the issuer", token: await withIss.mint("ana", 600), tokens: withIss, want: "ana" },
    { name: "no iss where the issuer is required", token: good, tokens: withIss, want: /claim iss/ },
    { name: "a wrong iss", token: await signed({ sub: "ana", exp: now + 60, iss: "other" }), tokens: withIss, want: /claim iss/ },
    { name: "a signature of another secret", token: await new UserTokens("another-secret-another-secret-123").mint("ana", 600), want: /invalid signature/ },
    { name: "a flipped signature", token: `${h}.${p}.${flip(s)}`, want: /invalid signature/ },
    { name: "a non-canonical spelling of the signature", token: `${h}.${p}.${respell(s)}`, want: /invalid signature/ },
    { name: "a signature with a character added", token: `${h}.${p}.${s}A`, want: /invalid signature/ },
    { name: "a payload swapped under the old signature", token: `${h}.${b64({ sub: "root", exp: now + 600 })}.${s}`, want: /invalid signature/ },
    { name: "alg none, no signature", token: `${b64({ alg: "none" })}.${p}.`, want: /invalid signature/ },
    { name: "HS512", token: await signed({ sub: "ana", exp: now + 60 }, "HS512"), want: /invalid signature/ },
    { name: "a crit header", token: hand({ alg: "HS256", crit: ["x"], x: 1 }, { sub: "ana", exp: now + 60 }), want: /invalid signature/ },
    { name: "two parts", token: `${h}.${p}`, want: /invalid signature/ },
    { name: "a payload that is not JSON", token: hand({ alg: "HS256" }, "not json"), want: /invalid signature/ },
    { name: "a payload that is an array", token: hand({ alg: "HS256" }, [1, 2]), want: /invalid signature/ },
    { name: "expired", token: await signed({ sub: "ana", exp: now - 5 }), want: /expired/ },
    { name: "no exp", token: await signed({ sub: "ana" }), want: /claim exp/ },
    { name: "exp not a number", token: hand({ alg: "HS256" }, { sub: "ana", exp: "soon" }), want: /claim exp/ },
    { name: "nbf in the future", token: await signed({ sub: "ana", exp: now + 600, nbf: now + 300 }), want: /claim nbf/ },
    { name: "iat not a number", token: hand({ alg: "HS256" }, { sub: "ana", exp: now + 60, iat: "x" }), want: /claim iat/ },
    { name: "no sub", token: await signed({ exp: now + 60 }), want: /claim sub/ },
    { name: "a sub that is not a user id", token: await signed({ sub: "a b", exp: now + 60 }), want: /sub must be a valid user id/ },
    { name: "missing", token: "", want: /missing/ },
  ];
  for (const c of cases) {
    const tokens = c.tokens ?? plain;
    const byJose = await jwtVerify(c.token, key, { algorithms: ["HS256"], requiredClaims: ["exp", "sub"], ...(tokens === withIss ? { issuer: "nfx-test" } : {}) }).then(
      () => "accepted",
      () => "refused",
    );
    let got: string;
    try {
      got = tokens.verifyNow(c.token).user;
    } catch (err) {
      got = (err as Error).message;
    }
    if (c.want === "ana") {
      t.equal(got, "ana", `${c.name}: accepted`);
      t.equal(byJose, "accepted", `${c.name}: jose accepts it too`);
    } else {
      t.match(got, c.want, `${c.name}: refused (${got})`);
      // Two refusals are nfx's own: a sub that is not a user id (nfx's rule for ids), and a signature spelled other than
      // its canonical base64url (jose decodes it to the same bytes; a minted token is always canonical). jose refuses every other.
      if (c.name.startsWith("a sub that") || c.name.startsWith("a non-canonical")) t.equal(byJose, "accepted", `${c.name}: jose accepts it`);
      else t.equal(byJose, "refused", `${c.name}: jose refuses it too`);
    }
  }
  t.same(await plain.verify(good), { user: "ana", exp: plain.verifyNow(good).exp }, "the promise form answers the same");
  await t.rejects(plain.verify(`${h}.${p}.${flip(s)}`), { message: /invalid signature/, field: "token" }, "and rejects the same");
});
