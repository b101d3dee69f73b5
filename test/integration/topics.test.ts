// Topics and webhook endpoints on real NATS and Redis: one publish reaches every subscribed device and endpoint exactly once, signed; a dead endpoint is paused without slowing the others, then resumed in order; Retry-After, 410, SSRF and validation.
import t from "tap";

import { endpointItemsKey, webhookPayloadKey } from "../../lib/core/keys.js";
import { API } from "../../lib/core/subjects.js";
import type { UserRecord } from "../../lib/core/types.js";
import { writeUsers } from "../../lib/directory/directory.js";
import type { Endpoint } from "../../lib/directory/endpoints.js";
import type { EndpointState } from "../../lib/flow/endpoint-queues.js";
import { ApiError, callApi, notify, status } from "../../lib/intake/api-client.js";
import { startWebhookReceiver } from "../../sandbox/webhook-receiver.js";
import { clientsFor, eventually, startTestCluster } from "../helpers/cluster.js";

const USERS = 2000;
const ENDPOINTS = 20;

t.test(`a topic with ${USERS.toLocaleString("en")} users and ${ENDPOINTS} endpoints: one publish, each device and endpoint once; a dead endpoint paused, resumed in order`, async (t) => {
  const cluster = await startTestCluster(t, {
    // Quick retries and pausing, so a dead endpoint is paused within seconds.
    overrides: { endpoints: { backoffBaseMs: 200, backoffMaxMs: 2000, pauseAfterFailures: 4, pauseAfterMs: 0, timeoutMs: 3000, recordEveryMs: 1000 } },
  });
  const cfg = cluster.cfg;
  const { nats, redis } = await clientsFor(t, cfg);
  const rx = await startWebhookReceiver();
  t.teardown(() => rx.close());
  const topics = <T>(body: unknown): Promise<T> => callApi<T>(nats.nc, API.topics, body);
  const endpoints = <T>(body: unknown): Promise<T> => callApi<T>(nats.nc, API.endpoints, body);
  const refusal = (p: Promise<unknown>): Promise<{ code: string; field?: string } | null> => p.then(() => null, (e: ApiError) => ({ code: e.code, field: e.field }));

  // Bad input names the field and the rule, and changes nothing.
  t.same(await refusal(notify(nats.nc, { topic: "orders", category: "social", content: { push: { title: "x", body: "y" } } })), { code: "NFX_ERR_TOPIC_UNKNOWN", field: "topic" }, "a publish to an unknown topic is refused");
  t.same(await refusal(topics({ action: "put", name: "Bad Name" })), { code: "NFX_ERR_REQUEST_INVALID", field: "name" }, "a malformed topic name is refused");
  t.same(await refusal(endpoints({ action: "create", url: "http://10.1.2.3/hook" })), { code: "NFX_ERR_ENDPOINT_REFUSED", field: "url" }, "a private-address endpoint is refused (SSRF)");
  t.same(await refusal(endpoints({ action: "create", url: "http://169.254.169.254/latest/meta-data" })), { code: "NFX_ERR_ENDPOINT_REFUSED", field: "url" }, "the metadata address is refused");
  t.same(await refusal(endpoints({ action: "create", url: "ftp://example.com/x" })), { code: "NFX_ERR_ENDPOINT_REFUSED", field: "url" }, "a non-http URL is refused");
  t.same((await endpoints<{ endpoints: unknown[] }>({ action: "list" })).endpoints, [], "no endpoint was stored by the refused requests");

  await topics({ action: "put", name: "orders", description: "order events" });
  t.same(await refusal(topics({ action: "subscribe", name: "orders", users: Array.from({ length: 10_001 }, (_, i) => `u${i}`) })), { code: "NFX_ERR_REQUEST_INVALID", field: "users" }, "over 10,000 ids in one call is refused");
  t.same(await refusal(notify(nats.nc, { recipients: ["u1"], category: "social", content: { push: { title: "x", body: "y" }, webhook: { type: "a", data: {} } } })), { code: "NFX_ERR_REQUEST_INVALID", field: "content.webhook" }, "webhook content without a topic is refused");

  // Users: one device each, half iOS, half Android; subscribed in one call.
  const now = Date.now();
  const users: UserRecord[] = Array.from({ length: USERS }, (_, i) => ({ id: `tu${i}`, lastActive: now, devices: [{ id: "d", platform: i % 2 ? "ios" : "android", token: `tok-${i.toString(16).padStart(8, "0")}-topic` }] }));
  await writeUsers(redis, cfg.cluster.shards, users);
  const added = await topics<{ added: { users: number } }>({ action: "subscribe", name: "orders", users: users.map((u) => u.id) });
  t.equal(added.added.users, USERS, "every user subscribed in one call");

  // Endpoints: created subscribed to the topic; the receiver verifies with each one's secret.
  const eps: Endpoint[] = [];
  for (let i = 0; i < ENDPOINTS; i++) {
    const ep = await endpoints<Endpoint>({ action: "create", url: rx.url(`e${i}`), description: `endpoint ${i}`, topics: ["orders"] });
    rx.setSecrets(`e${i}`, ep.secrets.map((s) => s.secret));
    eps.push(ep);
  }
  t.match(eps[0].secrets[0].secret, /^whsec_/, "a Standard Webhooks secret is generated");
  const dead = 7;
  rx.setFault(`e${dead}`, { status: 503 });
  // An endpoint of no topic that subscribes to nfx's own lifecycle events (its event stream).
  const evEp = await endpoints<Endpoint>({ action: "create", url: rx.url("events"), events: ["accepted", "sent"] });
  rx.setSecrets("events", evEp.secrets.map((s) => s.secret));

  const { id } = await notify(nats.nc, { topic: "orders", category: "social", content: { push: { title: "Order", body: "shipped" }, webhook: { type: "order.shipped", data: { order: 1 } } } });
  const rec = cluster.sandbox!.recorder;
  const devicesOf = (nid: string): Map<string, number> => {
    const m = new Map<string, number>();
    for (const d of rec.accepted()) if (d.nid === nid) m.set(d.token, (m.get(d.token) ?? 0) + 1);
    return m;
  };
  const live = eps.map((_, i) => i).filter((i) => i !== dead);
  t.ok(await eventually(() => devicesOf(id).size === USERS && live.every((i) => rx.accepted(`e${i}`).length === 1), 90_000), "every device and every live endpoint got the notification");
  const stateOf = (i: number): Promise<EndpointState> => endpoints<EndpointState>({ action: "state", id: eps[i].id });
  t.ok(await eventually(async () => (await stateOf(dead)).paused, 30_000), "the dead endpoint is paused");

  // While it is paused the others go on at full speed: three more publishes, each delivered everywhere else in order.
  const more: string[] = [];
  for (let k = 2; k <= 4; k++) more.push((await notify(nats.nc, { topic: "orders", category: "social", content: { webhook: { type: "order.shipped", data: { order: k } } } })).id);
  t.ok(await eventually(() => live.every((i) => rx.accepted(`e${i}`).length === 4), 30_000), "the other endpoints got the next three while it was paused");
  const st = await stateOf(dead);
  t.equal(st.pending, 4, "the paused endpoint keeps its four deliveries queued");
  // What a notification sends is stored once for all its endpoints: the queued items only name it.
  const items = Object.values(await redis.hgetall(endpointItemsKey(eps[dead].id))).map((j) => JSON.parse(j) as Record<string, unknown>);
  t.same(items.map((i) => i.nid).sort(), [id, ...more].sort(), "one queued item per notification");
  t.ok(items.every((i) => !("body" in i) && !("brief" in i)), "queued items carry no body or brief");
  t.equal((JSON.parse((await redis.get(webhookPayloadKey(more[0])))!) as { type: string }).type, "order.shipped", "the notification's payload is stored once");
  t.match(st.paused_reason ?? "", /failed attempts in a row/, "the pause says why");
  t.equal(st.last_status, 503, "its last status is recorded");
  const deadBefore = rx.received(`e${dead}`).length;
  await new Promise((r) => setTimeout(r, 1500));
  t.equal(rx.received(`e${dead}`).length, deadBefore, "nothing is attempted while paused");

  // Back: resumed, it gets what accumulated, in publish order, each once.
  rx.setFault(`e${dead}`, null);
  await endpoints({ action: "resume", id: eps[dead].id });
  t.ok(await eventually(() => rx.accepted(`e${dead}`).length === 4, 30_000), "the resumed endpoint got all four");
  t.same(rx.accepted(`e${dead}`).map((d) => (d.data as { order: number }).order), [1, 2, 3, 4], "in publish order");
  for (const i of [0, dead]) t.same(rx.accepted(`e${i}`).map((d) => d.id), [id, ...more].map((n) => `${n}.${eps[i].id}`), `e${i}: webhook-id is the notification and endpoint, one each`);
  t.ok(eps.every((_, i) => rx.received(`e${i}`).every((d) => d.valid)), "every signature verified with the standardwebhooks package");
  t.ok(live.every((i) => rx.accepted(`e${i}`).every((d) => d.type === "order.shipped")), "the event type is the notification's");
  t.same([...devicesOf(id).values()].filter((c) => c > 1), [], "no device notified twice");
  t.equal(devicesOf(id).size, USERS, "each subscribed device once");
  t.ok(await eventually(async () => (await status(nats.nc, id)).counts.sent === USERS + ENDPOINTS, 30_000), `counters: sent = ${USERS} devices + ${ENDPOINTS} endpoints`);
  const history = await endpoints<{ deliveries: { outcome: string; nid: string }[] }>({ action: "deliveries", id: eps[dead].id });
  t.same(history.deliveries.map((h) => [h.nid, h.outcome]), [...more].reverse().concat(id).map((n) => [n, "delivered"]), "its history: four delivered, newest first");
  const after = await stateOf(dead);
  t.match(after, { paused: false, pending: 0, delivered: 4, consecutive_failures: 0 }, "its state after the resume");

  // The event stream: the publish's accepted event once, and a sent event for each device once; none for the endpoints' own deliveries.
  type Ev = { type: string; notification: string; user?: string; channel?: string; device?: string };
  const evs = (): Ev[] => rx.accepted("events").flatMap((d) => (d.data as { events: Ev[] }).events).filter((e) => e.notification === id);
  t.ok(await eventually(() => evs().filter((e) => e.type === "notification.sent").length >= USERS, 30_000), "the event stream carried the sends");
  await new Promise((r) => setTimeout(r, 1000));
  const sentEvs = evs().filter((e) => e.type === "notification.sent");
  t.equal(sentEvs.length, USERS, "one sent event per device");
  t.equal(new Set(sentEvs.map((e) => `${e.user}|${e.device}`)).size, USERS, "no device twice");
  t.equal(evs().filter((e) => e.type === "notification.accepted").length, 1, "one accepted event");
  t.notOk(evs().some((e) => e.channel === "webhook"), "no events of the endpoints' own deliveries");
  t.ok(rx.received("events").every((d) => d.valid && d.type === "nfx.events"), "signed, type nfx.events");

  // Retry-After: an endpoint answering 429 Retry-After: 2 is not tried again sooner.
  rx.setFault("e0", { status: 429, retryAfter: "2", times: 1 });
  const { id: ra } = await notify(nats.nc, { topic: "orders", category: "social", content: { webhook: { type: "order.shipped", data: { order: 5 } } } });
  t.ok(await eventually(() => rx.accepted("e0").some((d) => d.id.startsWith(ra)), 30_000), "the 429'd delivery arrived later");
  const tries = rx.received("e0").filter((d) => d.id.startsWith(ra));
  t.equal(tries.length, 2, "two attempts");
  t.ok(tries[1].at - tries[0].at >= 1900, `the retry waited for Retry-After (${tries[1].at - tries[0].at} ms)`);

  // 410 Gone: the endpoint's subscription is removed.
  rx.setFault("e1", { status: 410 });
  await notify(nats.nc, { topic: "orders", category: "social", content: { webhook: { type: "order.shipped", data: { order: 6 } } } });
  t.ok(await eventually(async () => !(await endpoints<{ topics: string[] }>({ action: "get", id: eps[1].id })).topics.includes("orders"), 30_000), "a 410 unsubscribes the endpoint from the topic");
  t.equal((await topics<{ endpoints: number }>({ action: "get", name: "orders" })).endpoints, ENDPOINTS - 1, "the topic has one endpoint fewer");

  // A slow endpoint: its deliveries are read many at a time (`endpoints.headRead`), but what it took is recorded at
  // least every `endpoints.recordEveryMs` (1 s here), not only once the whole read is through.
  await topics({ action: "put", name: "slow" });
  const slowEp = await endpoints<Endpoint>({ action: "create", url: rx.url("slow"), topics: ["slow"] });
  rx.setSecrets("slow", slowEp.secrets.map((s) => s.secret));
  rx.setFault("slow", { delayMs: 400 });
  // Paused while the eight are queued, so that the first read after the resume takes all of them.
  await endpoints({ action: "pause", id: slowEp.id });
  for (let k = 0; k < 8; k++) await notify(nats.nc, { topic: "slow", category: "social", content: { webhook: { type: "order.shipped", data: { order: 100 + k } } } });
  const slowState = (): Promise<EndpointState> => endpoints<EndpointState>({ action: "state", id: slowEp.id });
  t.ok(await eventually(async () => (await slowState()).pending === 8, 10_000), "eight queued while paused");
  await endpoints({ action: "resume", id: slowEp.id });
  let mid: EndpointState | undefined;
  t.ok(await eventually(async () => (mid = await slowState()).delivered > 0, 10_000), "the slow endpoint's first deliveries are recorded");
  t.ok(rx.accepted("slow").length < 8 && mid!.pending > 0, `before its last (${rx.accepted("slow").length} of 8 taken, ${mid!.delivered} recorded, ${mid!.pending} pending)`);
  t.ok(await eventually(async () => (await slowState()).delivered === 8, 15_000), "then all eight");
  t.same(rx.accepted("slow").map((d) => (d.data as { order: number }).order), [100, 101, 102, 103, 104, 105, 106, 107], "in publish order, each once");
});
