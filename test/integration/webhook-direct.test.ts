// Direct webhook delivery on real NATS and Redis: healthy endpoints get every delivery once and in order without a queue in Redis; a slow endpoint's and a failing one's go through their queues, in order, without holding the others; a batch handled before is not sent again.
import t from "tap";

import { encode } from "../../lib/core/codec.js";
import { endpointAnsweredKey, endpointDoneKey, endpointItemsKey, endpointQueueKey, sendBatchDoneKey, webhookAnsweredKey } from "../../lib/core/keys.js";
import { shardOf } from "../../lib/core/shard-hash.js";
import { API, webhookDeliveryId, webhookSendSubject } from "../../lib/core/subjects.js";
import type { SendBatch } from "../../lib/core/types.js";
import type { Endpoint } from "../../lib/directory/endpoints.js";
import type { EndpointState } from "../../lib/flow/endpoint-queues.js";
import { callApi, notify, status } from "../../lib/intake/api-client.js";
import { startWebhookReceiver } from "../../sandbox/webhook-receiver.js";
import { clientsFor, eventually, startTestCluster } from "../helpers/cluster.js";
import { receiverEndpoints } from "../helpers/webhooks.js";

const N = 12;

t.test("direct delivery: in order, each once, slow and failing endpoints queued without holding the others, a batch handled before not sent again", async (t) => {
  const cluster = await startTestCluster(t, {
    roles: ["ingest", "router", "gateway-webhook", "tracker"],
    // A short lease: direct holds are renewed every half second, so an operator's pause ends direct delivery within it.
    overrides: { endpoints: { directSlowMs: 300, backoffBaseMs: 100, backoffMaxMs: 400, pauseAfterFailures: 1000, leaseMs: 1500 } },
  });
  const { nats, redis } = await clientsFor(t, cluster.cfg);
  const rx = await startWebhookReceiver();
  t.teardown(() => rx.close());
  const api = <T>(subject: string, body: unknown): Promise<T> => callApi<T>(nats.nc, subject, body);

  await api(API.topics, { action: "put", name: "direct" });
  const names = ["fast1", "fast2", "slow", "flaky", "limited"];
  const eps = new Map<string, Endpoint>();
  for (const n of names) {
    const ep = await api<Endpoint>(API.endpoints, { action: "create", url: rx.url(n), topics: ["direct"], ...(n === "limited" ? { rateLimit: 20 } : {}) });
    rx.setSecrets(n, ep.secrets.map((s) => s.secret));
    eps.set(n, ep);
  }
  rx.setFault("slow", { delayMs: 400 });

  const ids: string[] = [];
  for (let k = 0; k < N; k++) {
    // The flaky endpoint answers 503 to its fourth delivery's first attempt.
    if (k === 3) await eventually(() => rx.received("flaky").length === 3, 10_000);
    if (k === 3) rx.setFault("flaky", { status: 503, times: 1 });
    ids.push((await notify(nats.nc, { topic: "direct", category: "transactional", content: { webhook: { type: "t.direct", data: { k } } } })).id);
  }
  const order = (n: string): number[] => rx.accepted(n).map((d) => (d.data as { k: number }).k);
  const all = Array.from({ length: N }, (_, k) => k);
  t.ok(await eventually(() => names.every((n) => rx.accepted(n).length >= N), 30_000), "every endpoint got every delivery");
  await new Promise((r) => setTimeout(r, 500));
  for (const n of names) t.same(order(n), all, `${n}: in publish order, each once`);
  t.ok(rx.received("fast1").every((d) => d.valid) && rx.received("slow").every((d) => d.valid), "signed");
  const fastDone = Math.max(...["fast1", "fast2"].flatMap((n) => rx.accepted(n).map((d) => d.at)));
  const slowDone = Math.max(...rx.accepted("slow").map((d) => d.at));
  t.ok(slowDone - fastDone > 2000, `the healthy endpoints were not held by the slow one (done ${slowDone - fastDone} ms before it)`);
  const lim = rx.accepted("limited").map((d) => d.at);
  t.ok(lim[N - 1] - lim[0] >= (N - 1) * 50 * 0.9, `the rate-limited endpoint (20/s) was not sent faster (${lim[N - 1] - lim[0]} ms for ${N})`);
  const tries = rx.received("flaky").filter((d) => (d.data as { k: number }).k === 3);
  t.same(tries.map((d) => d.status), [503, 204], "the flaky endpoint's failed delivery was tried again");

  // Each endpoint's state counts its deliveries; healthy endpoints used no queue in Redis.
  const stateOf = (n: string): Promise<EndpointState> => api<EndpointState>(API.endpoints, { action: "state", id: eps.get(n)!.id });
  for (const n of names) t.ok(await eventually(async () => (await stateOf(n)).delivered === N, 10_000), `${n}: ${N} delivered in its state`);
  t.match(await stateOf("fast1"), { pending: 0, failed: 0, consecutive_failures: 0, last_status: 204 }, "a healthy endpoint's state");
  const f1 = eps.get("fast1")!.id;
  t.equal(await redis.exists(endpointQueueKey(f1), endpointItemsKey(f1), endpointDoneKey(f1)), 0, "nothing of a healthy endpoint went through a queue");
  const history = await api<{ deliveries: { nid: string; outcome: string }[] }>(API.endpoints, { action: "deliveries", id: eps.get("fast2")!.id });
  t.same(history.deliveries.map((h) => h.nid), [...ids].reverse(), "its history, newest first");
  t.ok(await eventually(async () => (await status(nats.nc, ids[N - 1])).counts.sent === names.length, 15_000), "each notification's receipts count every endpoint once");

  // An operator's pause while the endpoint is delivered to directly: nothing more is sent to it after the next
  // renewal, what follows queues up, and the resume delivers it, in order.
  const f2 = eps.get("fast2")!.id;
  const more: Promise<unknown>[] = [];
  let k2 = N;
  const stream = setInterval(() => more.push(notify(nats.nc, { topic: "direct", category: "transactional", content: { webhook: { type: "t.direct", data: { k: k2++ } } } })), 100);
  await new Promise((r) => setTimeout(r, 600));
  await api(API.endpoints, { action: "pause", id: f2 });
  const pausedAt = Date.now();
  await new Promise((r) => setTimeout(r, 1500));
  clearInterval(stream);
  await Promise.all(more);
  const sentN = k2;
  t.ok(await eventually(() => rx.accepted("fast1").length === sentN, 10_000), "the others got every one of the stream");
  const late = rx.received("fast2").filter((d) => d.at > pausedAt + 1000).length;
  t.equal(late, 0, "nothing reached the paused endpoint a second after the pause");
  t.ok((await stateOf("fast2")).pending > 0, `what followed queued up (${(await stateOf("fast2")).pending})`);
  await api(API.endpoints, { action: "resume", id: f2 });
  t.ok(await eventually(() => rx.accepted("fast2").length === sentN, 10_000), "the resume delivered the rest");
  t.same(order("fast2"), Array.from({ length: sentN }, (_, k) => k), "in publish order, each once");

  // A send batch handled before (redelivered, or published again after a stream lost it) is not sent again.
  const fast1 = eps.get("fast1")!.id;
  const batch: SendBatch = { type: "send_batch", channel: "webhook", shard: 0, notifications: { nb: { id: "nb", category: "transactional", priority: "normal", expiresAt: Date.now() + 3_600_000, channels: ["webhook"], createdAt: Date.now(), topic: "direct", content: { webhook: { type: "t.copy", data: { k: 99 } } } } as unknown as SendBatch["notifications"][string] }, sends: [{ nid: "nb", user: fast1, device: fast1, token: "" }] };
  const partOf1 = webhookSendSubject("normal", shardOf(fast1, cluster.cfg.endpoints.partitions));
  const publish = (msgID: string, b: SendBatch = batch): Promise<unknown> => nats.js.publish(partOf1, encode(b), { msgID });
  await publish("test-direct-copy");
  t.ok(await eventually(() => rx.accepted("fast1").some((d) => d.id === `nb.${fast1}`), 10_000), "the batch was delivered");
  await publish("test-direct-copy~r1");
  await new Promise((r) => setTimeout(r, 1000));
  t.equal(rx.received("fast1").filter((d) => d.id === `nb.${fast1}`).length, 1, "its copy sent nothing");
  // A copy that comes while the first is still being delivered (nats-server 2.9.10 can deliver a handed-back batch a
  // second time, as new) is settled with it: posted once.
  const inHand: SendBatch = { ...batch, notifications: { nh: { ...batch.notifications.nb, id: "nh" } }, sends: [{ nid: "nh", user: fast1, device: fast1, token: "" }] };
  rx.setFault("fast1", { delayMs: 800 });
  await publish("test-in-hand", inHand);
  await publish("test-in-hand~r1", inHand);
  t.ok(await eventually(async () => (await redis.exists(sendBatchDoneKey("test-in-hand"))) === 1, 10_000), "the batch in hand finished");
  rx.setFault("fast1", null);
  await new Promise((r) => setTimeout(r, 1000));
  t.equal(rx.received("fast1").filter((d) => d.id === `nh.${fast1}`).length, 1, "its copy, come while it was in hand, sent nothing");

  // A batch an earlier attempt left unfinished (its gateway died after fast1 had answered): taken again, it posts only
  // what had no answer, and counts both.
  const f2id = eps.get("fast2")!.id;
  const unfinished: SendBatch = { ...batch, notifications: { nc: { ...batch.notifications.nb, id: "nc" } }, sends: [fast1, f2id].map((ep) => ({ nid: "nc", user: ep, device: ep, token: "" })) };
  await redis.hset(webhookAnsweredKey("test-unfinished"), webhookDeliveryId("nc", fast1), `d|204|${Date.now()}|`);
  const [s1, s2] = await Promise.all([stateOf("fast1"), stateOf("fast2")]);
  await publish("test-unfinished~r1", unfinished);
  t.ok(await eventually(() => rx.accepted("fast2").some((d) => d.id === `nc.${f2id}`), 10_000), "the delivery without an answer was posted");
  t.ok(await eventually(async () => (await redis.exists(sendBatchDoneKey("test-unfinished"))) === 1, 10_000), "and the batch finished");
  t.equal(rx.received("fast1").filter((d) => d.id === `nc.${fast1}`).length, 0, "the one answered before was not posted again");
  const [e1, e2] = await Promise.all([stateOf("fast1"), stateOf("fast2")]);
  t.same([e1.delivered - s1.delivered, e2.delivered - s2.delivered], [1, 1], "both counted delivered once");
  t.equal(await redis.exists(webhookAnsweredKey("test-unfinished")), 0, "its notes were deleted with it done");

  // The same for an endpoint's queue: a head delivery its previous deliverer had noted as answered (then died) is
  // finished as delivered, not posted again.
  await api(API.endpoints, { action: "pause", id: f2id });
  // Direct delivery ends with the next renewal of its hold (a third of the 1.5 s lease).
  await new Promise((r) => setTimeout(r, 1200));
  const queuedIds: string[] = [];
  for (let k = 0; k < 3; k++) queuedIds.push((await notify(nats.nc, { topic: "direct", category: "transactional", content: { webhook: { type: "t.noted", data: { k } } } })).id);
  t.ok(await eventually(async () => (await redis.llen(endpointQueueKey(f2id))) === 3, 10_000), "three deliveries queued while paused");
  const [head] = await redis.lrange(endpointQueueKey(f2id), 0, 0);
  t.equal(head, webhookDeliveryId(queuedIds[0], f2id), "the first at the head");
  await redis.hset(endpointAnsweredKey(f2id), head, `d|200|${Date.now()}|`);
  const s3 = await stateOf("fast2");
  await api(API.endpoints, { action: "resume", id: f2id });
  t.ok(await eventually(async () => (await redis.llen(endpointQueueKey(f2id))) === 0, 10_000), "the queue was delivered");
  t.same(rx.received("fast2").filter((d) => queuedIds.some((id) => d.id === `${id}.${f2id}`)).map((d) => d.id), queuedIds.slice(1).map((id) => `${id}.${f2id}`), "all but the noted one posted, in order");
  t.equal((await stateOf("fast2")).delivered - s3.delivered, 3, "all three counted delivered");
  t.ok(await eventually(async () => (await redis.hlen(endpointAnsweredKey(f2id))) === 0, 5_000), "the notes were dropped once finished");
});

t.test("queue-only (endpoints.directBacklog 0): every delivery through the endpoints' queues, in publish order, each once", async (t) => {
  const cluster = await startTestCluster(t, { roles: ["ingest", "router", "gateway-webhook"], overrides: { endpoints: { directBacklog: 0, partitions: 1 } } });
  const { nats, redis } = await clientsFor(t, cluster.cfg);
  const rx = await startWebhookReceiver();
  t.teardown(() => rx.close());
  const names = Array.from({ length: 6 }, (_, i) => `q${i}`);
  const eps = await receiverEndpoints(nats.nc, rx, "queued", names);
  names.forEach((n, i) => rx.setFault(n, { delayMs: 2 + i * 3 }));
  // Publishes back to back: several batches are taken at once while the queues fill.
  await Promise.all(Array.from({ length: N }, (_, k) => new Promise((r) => setTimeout(r, k * 5)).then(() => notify(nats.nc, { topic: "queued", category: "transactional", content: { webhook: { type: "t.queued", data: { k } } } }))));
  t.ok(await eventually(() => names.every((n) => rx.accepted(n).length >= N), 30_000), "every endpoint got every delivery");
  await new Promise((r) => setTimeout(r, 500));
  const seqOf = (n: string): number[] => rx.accepted(n).map((d) => (d.data as { k: number }).k);
  // The order to expect is the one the notifications were accepted in: the receiver sees each endpoint's in that order.
  const first = seqOf(names[0]);
  t.same([...first].sort((a, b) => a - b), Array.from({ length: N }, (_, k) => k), "each once");
  for (const n of names) t.same(seqOf(n), first, `${n}: in the same (publish) order as the others, each once`);
  const states = await Promise.all(eps.map((ep) => callApi<EndpointState>(nats.nc, API.endpoints, { action: "state", id: ep.id })));
  t.same(states.map((s) => s.delivered), names.map(() => N), "each endpoint's state counts its deliveries");
  t.equal(await redis.exists(...eps.map((ep) => endpointQueueKey(ep.id))), 0, "the queues are empty again");
});
