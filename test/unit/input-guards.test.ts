// Input guards without servers: JSON depth without recursion, __proto__ keys, own-property lookups, published default secrets.
import t from "tap";

import { emptyCounters, fold } from "../../lib/campaign/counters.js";
import { loadConfig } from "../../lib/core/config.js";
import { InsecureDefault } from "../../lib/core/errors.js";
import { jsonDepthOver, protoKeyPath } from "../../lib/core/json-guard.js";
import { isPrototypeName, ownValue } from "../../lib/core/own-keys.js";
import { freshSecret, localSecrets, PUBLISHED_DEFAULTS, publishedDefaultsIn, refusePublishedDefaults } from "../../lib/infra/secrets.js";
import { planFor, policyFrom } from "../../lib/shard/policy.js";

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

t.test("JSON depth: measured in one pass, strings and escapes ignored", async (t) => {
  t.equal(jsonDepthOver(bytes("[".repeat(1_000_000)), 32), 33, "a million open brackets: stops at the first level over");
  t.equal(jsonDepthOver(bytes('{"a":'.repeat(100_000) + "1" + "}".repeat(100_000)), 32), 33);
  t.equal(jsonDepthOver(bytes("[".repeat(32) + "]".repeat(32)), 32), null, "exactly the limit passes");
  t.equal(jsonDepthOver(bytes("[".repeat(33) + "]".repeat(33)), 32), 33, "one over does not");
  t.equal(jsonDepthOver(bytes("[[],[],[[]]]".repeat(100)), 3), null, "siblings do not add up");
  t.equal(jsonDepthOver(bytes(JSON.stringify({ s: "[[[[[[{{{{{{", t: 'a\\"[[[[[[' })), 2), null, "brackets in strings, escaped quotes included, do not count");
  t.equal(jsonDepthOver(bytes(JSON.stringify({ s: "\u00e9\u{1F600}[" , a: [[[1]]] })), 3), 4, "multi-byte UTF-8 is skipped correctly");
});

t.test("__proto__ keys are found with their path", async (t) => {
  t.equal(protoKeyPath(JSON.parse('{"a":{"b":[{"__proto__":1}]}}')), "a.b.0.__proto__");
  t.equal(protoKeyPath(JSON.parse('{"constructor":{"toString":1}}')), null, "other names are ordinary keys here (their own rules refuse them)");
  t.equal(protoKeyPath({ a: [1, 2, { b: "c" }] }), null);
});

t.test("own-property lookups never reach Object.prototype", async (t) => {
  const rec: Record<string, number> = { marketing: 1 };
  for (const k of ["constructor", "__proto__", "toString", "hasOwnProperty", "valueOf"]) {
    t.equal(ownValue(rec, k), undefined, `${k}: not found`);
    t.ok(isPrototypeName(k), `${k}: is a prototype name`);
  }
  t.equal(ownValue(rec, "marketing"), 1);
  t.equal(ownValue(undefined, "x"), undefined);
  t.notOk(isPrototypeName("marketing"));
  // The shard's per-notification plan: a category named after a prototype member gets no configured behaviour.
  const cfg = loadConfig({ env: {} });
  const pol = policyFrom(cfg);
  const brief = { id: "n_1", createdAt: 0, expiresAt: 1, priority: "bulk" as const, category: "constructor", channels: ["push" as const], content: { push: { title: "T", body: "B" } } };
  const plan = planFor(pol, brief);
  t.equal(plan.cat.cap, undefined, "no cap from Object.prototype.constructor");
  t.equal(planFor(pol, { ...brief, category: "marketing" }).cat.cap?.count, 3, "a real category keeps its cap");
});

t.test("published defaults: refused by key, one list, fresh values for local clusters", async (t) => {
  t.same(PUBLISHED_DEFAULTS.map((d) => d.path), ["nats.secret", "ws.secret", "engagement.secret", "ws.origins"]);
  const defaults = loadConfig({ env: {} });
  t.same(publishedDefaultsIn(defaults).map((d) => d.path), ["nats.secret", "ws.secret", "engagement.secret", "ws.origins"], "the schema defaults are all refused");
  try {
    refusePublishedDefaults(defaults);
    t.fail("expected InsecureDefault");
  } catch (err) {
    t.type(err, InsecureDefault);
    t.equal((err as InsecureDefault).code, "NFX_ERR_INSECURE_DEFAULT");
    t.equal((err as InsecureDefault).field, "nats.secret");
    for (const k of ["nats.secret", "ws.secret", "engagement.secret", "ws.origins"]) t.match((err as Error).message, `${k}: must be set`);
  }
  const fresh = localSecrets(defaults, 8123) as { ws: { secret: string; origins: string[] }; engagement: { secret: string } };
  t.same(fresh.ws.origins, ["http://127.0.0.1:8123", "http://localhost:8123"], "origins: the gateway's own");
  t.ok(fresh.ws.secret.length >= 32 && fresh.engagement.secret.length >= 32 && fresh.ws.secret !== fresh.engagement.secret, "two different fresh secrets");
  t.not((localSecrets(defaults, 1) as typeof fresh).ws.secret, fresh.ws.secret, "fresh each time");
  // The NATS secret is made by `nfx up` before nats-server starts (its config derives from it), not by localSecrets.
  const fixed = loadConfig({ env: {}, overrides: { ...fresh, nats: { secret: freshSecret() } } });
  t.doesNotThrow(() => refusePublishedDefaults(fixed), "fresh values start");
  t.same(localSecrets(fixed, 8123), {}, "keys already set are left alone");
  const star = loadConfig({ env: {}, overrides: { ...fresh, nats: { secret: freshSecret() }, ws: { ...fresh.ws, origins: ["https://a.example", "*"] } } });
  t.same(publishedDefaultsIn(star).map((d) => d.path), ["ws.origins"], "* among other origins is still refused");
});

t.test("failure reasons named like prototype members count like any other", async (t) => {
  const c = emptyCounters();
  const entry = (reason: string) => ({ user: "u", outcome: "failed" as const, channel: "apns" as const, device: "d", reason, at: 1 });
  fold(c, { type: "receipts", nid: "n_1", stage: "gateway", entries: [entry("constructor"), entry("toString"), entry("constructor")] });
  t.equal(c.failed.constructor, 2, "constructor: 2");
  // eslint-disable-next-line @typescript-eslint/unbound-method -- reads the count stored under the key "toString", not the method
  t.equal(c.failed.toString, 1, "toString: 1");
  t.same(JSON.parse(JSON.stringify(c.failed)), { constructor: 2, toString: 1 }, "stored as plain counts");
});
