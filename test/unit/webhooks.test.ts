// Webhook delivery rules without servers: signatures checked by the standardwebhooks package, answers classified, backoff and Retry-After, SSRF address rules, request validation.
import { Webhook } from "standardwebhooks";
import t from "tap";

import { backoffMs, classifyAnswer, webhookBody } from "../../actors/gateway-webhook.js";
import { parseNotifyRequest } from "../../lib/core/request-schema.js";
import { activeSecrets, type Endpoint, newSecret } from "../../lib/directory/endpoints.js";
import { parseRetryAfter } from "../../lib/gateway/retry-policy.js";
import { secretKey, signatureHeaders } from "../../lib/gateway/webhook-sign.js";
import { addressPolicy, checkEndpointUrl, guardedLookup } from "../../lib/infra/address-policy.js";

t.test("signatures verify with the reference package, with either secret during a rotation", (t) => {
  const [a, b] = [newSecret(), newSecret()];
  const body = JSON.stringify({ type: "order.shipped", timestamp: "2026-12-03T00:00:00.000Z", data: { order: 1 } });
  const now = Math.floor(Date.now() / 1000);
  const h = signatureHeaders("n_x.ep_y", now, body, [b, a].map(secretKey));
  t.same(new Webhook(a).verify(body, h), JSON.parse(body), "the old secret verifies");
  t.same(new Webhook(b).verify(body, h), JSON.parse(body), "the new secret verifies");
  t.throws(() => new Webhook(newSecret()).verify(body, h), "another secret does not");
  t.throws(() => new Webhook(a).verify(body.replace("1", "2"), h), "a changed body does not");
  t.end();
});

t.test("a rotated secret signs until its overlap ends", (t) => {
  const ep: Endpoint = { id: "ep_0000000000000000", url: "https://x.example/h", createdAt: 0, updatedAt: 0, secrets: [{ secret: "new", createdAt: 10 }, { secret: "old", createdAt: 0, expiresAt: 100 }] };
  t.same(activeSecrets(ep, 50), ["new", "old"]);
  t.same(activeSecrets(ep, 100), ["new"]);
  t.end();
});

t.test("answers: 2xx delivered, 410 gone, other 4xx refused for good, 408/425/429/5xx retried", (t) => {
  t.same([200, 204, 299].map(classifyAnswer), ["delivered", "delivered", "delivered"]);
  t.equal(classifyAnswer(410), "gone");
  t.same([400, 401, 404, 413].map(classifyAnswer), ["refused", "refused", "refused", "refused"]);
  t.same([408, 425, 429, 500, 503, 301].map(classifyAnswer), ["retry", "retry", "retry", "retry", "retry", "retry"]);
  t.end();
});

t.test("backoff doubles with jitter, capped, never below Retry-After", (t) => {
  t.equal(backoffMs(1, 1000, 60_000, undefined, () => 1), 1000);
  t.equal(backoffMs(4, 1000, 60_000, undefined, () => 1), 8000);
  t.equal(backoffMs(20, 1000, 60_000, undefined, () => 1), 60_000, "capped");
  t.ok(backoffMs(4, 1000, 60_000, undefined, () => 0) >= 500, "jitter keeps at least half the base");
  t.equal(backoffMs(1, 1000, 60_000, 5000, () => 0.1), 5000, "Retry-After wins");
  t.equal(parseRetryAfter("7", 0), 7000);
  t.equal(parseRetryAfter(new Date(10_000).toUTCString(), 4000), 6000);
  t.equal(parseRetryAfter("soon", 0), undefined);
  t.end();
});

t.test("the body: Standard Webhooks layout from content.webhook, or the notification", (t) => {
  const brief = { id: "n_1", createdAt: 0, expiresAt: 1, priority: "normal" as const, category: "orders", channels: [], topic: "o" };
  t.same(JSON.parse(webhookBody({ ...brief, content: { webhook: { type: "a.b", data: { k: 1 } } } }).body), { type: "a.b", timestamp: "1970-01-01T00:00:00.000Z", data: { k: 1 } });
  t.same((JSON.parse(webhookBody({ ...brief, content: { push: { title: "t", body: "b" } } }).body) as { data: unknown }).data, { notification: "n_1", topic: "o", category: "orders", content: { push: { title: "t", body: "b" } } });
  t.end();
});

t.test("SSRF: loopback, private, link-local, metadata and mapped addresses refused unless allowed", async (t) => {
  const strict = addressPolicy([]);
  for (const ip of ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0", "::1", "fe80::1", "fd00:ec2::254", "::ffff:127.0.0.1", "100.64.0.1"]) t.ok(strict.refusal(ip), `${ip} refused (${strict.refusal(ip)})`);
  for (const ip of ["93.184.216.34", "2606:4700::1111"]) t.equal(strict.refusal(ip), null, `${ip} allowed`);
  const local = addressPolicy(["127.0.0.0/8"]);
  t.equal(local.refusal("127.0.0.1"), null, "an allowed network");
  t.ok(local.refusal("10.0.0.1"), "only that network");
  await t.rejects(checkEndpointUrl("http://127.0.0.1:9/x", strict), { code: "NFX_ERR_ENDPOINT_REFUSED", field: "url" });
  await t.rejects(checkEndpointUrl("http://[::1]/x", strict), { code: "NFX_ERR_ENDPOINT_REFUSED" });
  await t.rejects(checkEndpointUrl("http://localhost/x", strict), { code: "NFX_ERR_ENDPOINT_REFUSED" }, "a name resolving to loopback");
  await t.rejects(checkEndpointUrl("http://user:pw@93.184.216.34/x", strict), { code: "NFX_ERR_ENDPOINT_REFUSED" }, "credentials in the URL");
  t.equal((await checkEndpointUrl("https://93.184.216.34/x", strict)).host, "93.184.216.34");
  // At connection time too (a name that resolves to a refused address later: DNS rebinding): the gateway's lookup fails the connection.
  const lookupOf = (policy: ReturnType<typeof addressPolicy>) => (host: string): Promise<{ err: (Error & { code?: string }) | null; address: unknown }> =>
    new Promise((r) => (guardedLookup(policy) as unknown as (h: string, o: object, cb: (err: Error | null, address: unknown) => void) => void)(host, { all: true }, (err, address) => r({ err, address })));
  const refused = await lookupOf(strict)("localhost");
  t.equal(refused.err?.code, "ENDPOINT_REFUSED", "a connection to a name resolving to loopback fails");
  t.match(refused.err?.message ?? "", /loopback/, "saying why");
  const allowed = await lookupOf(addressPolicy(["127.0.0.0/8", "::1/128"]))("localhost");
  t.equal(allowed.err, null, "allowed when its network is");
});

t.test("notify requests: topic targets and webhook content", (t) => {
  const base = { category: "orders", content: { webhook: { type: "order.created", data: {} } } };
  t.equal(parseNotifyRequest({ ...base, topic: "orders" }).topic, "orders");
  t.throws(() => parseNotifyRequest({ ...base, topic: "orders", recipients: ["u"] }), { name: "RequestInvalid", field: "recipients" }, "one target only");
  t.throws(() => parseNotifyRequest({ ...base, recipients: ["u"] }), { name: "RequestInvalid", field: "content.webhook" }, "webhook content needs a topic");
  t.throws(() => parseNotifyRequest({ ...base, segment: "topic:orders" }), { name: "RequestInvalid", field: "segment" }, "topic: is not a segment name");
  t.throws(() => parseNotifyRequest({ category: "orders", topic: "orders", content: { webhook: { type: "bad type", data: {} } } }), { name: "RequestInvalid", field: "content.webhook.type" });
  t.end();
});
