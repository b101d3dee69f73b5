// Endpoint partitions: two webhook gateways share them out by lease, every endpoint's deliveries arrive in publish order, each once; a gateway stopped mid-stream hands its partitions over, nothing lost, in order again after it; a replayed dead letter goes to its endpoint's partition.
import t from "tap";

import { type DeadLetterEntry, listDeadLetters, replayDeadLetter } from "../../lib/gateway/dlq.js";
import { notify } from "../../lib/intake/api-client.js";
import { startWebhookReceiver } from "../../sandbox/webhook-receiver.js";
import { clientsFor, eventually, startTestCluster } from "../helpers/cluster.js";
import { shardHolders } from "../helpers/shards.js";
import { receiverEndpoints } from "../helpers/webhooks.js";

const ENDPOINTS = 24;
const PUBLISHES = 20;

t.test("two webhook gateways: partitions shared, each endpoint in publish order across them, nothing lost across a hand-over", { timeout: 120_000 }, async (t) => {
  const cluster = await startTestCluster(t, {
    roles: ["ingest", "router", "gateway-webhook"],
    // A short lease: the second process gets its share within a tick or two (a sixth of it each).
    overrides: { endpoints: { partitions: 4, partitionLeaseMs: 1500 } },
  });
  const first = cluster.procs.get("gateway-webhook")!;
  const second = await cluster.startExtra("gateway-webhook");
  const { nats } = await clientsFor(t, cluster.cfg);
  const who = (owner: string): string => (owner.startsWith(`${first.pid}-`) ? "first" : owner.startsWith(`${second.pid}-`) ? "second" : owner);
  const holders = async (): Promise<string[]> => [...(await shardHolders(nats, "webhook")).entries()].sort(([a], [b]) => a - b).map(([, h]) => who(h.owner));
  let now: string[] = [];
  t.ok(await eventually(async () => (now = await holders()).length === 4 && new Set(now).size === 2, 15_000), `both processes hold endpoint partitions (0-3: ${now.join(", ")})`);

  const rx = await startWebhookReceiver();
  t.teardown(() => rx.close());
  const eps = (await receiverEndpoints(nats.nc, rx, "parts", Array.from({ length: ENDPOINTS }, (_, i) => `p${i}`))).map((ep) => ep.id);
  // A few milliseconds an answer: each endpoint has deliveries waiting while later publishes arrive.
  for (let i = 0; i < ENDPOINTS; i++) rx.setFault(`p${i}`, { delayMs: 5 + (i % 4) * 5 });
  const order = (i: number): string => rx.accepted(`p${i}`).map((d) => (d.data as { k: number }).k).join(",");
  const outOfOrder = (n: number): string[] => {
    const want = Array.from({ length: n }, (_, k) => k).join(",");
    return Array.from({ length: ENDPOINTS }, (_, i) => i).filter((i) => order(i) !== want).map((i) => `p${i}: ${order(i)}`);
  };
  const everyHas = (n: number) => (): boolean => Array.from({ length: ENDPOINTS }, (_, i) => rx.accepted(`p${i}`).length).every((got) => got >= n);
  const publish = (k: number) => notify(nats.nc, { topic: "parts", category: "transactional", content: { webhook: { type: "t.part", data: { k } } } });

  for (let k = 0; k < PUBLISHES; k++) await publish(k);
  t.ok(await eventually(everyHas(PUBLISHES), 30_000), "every endpoint got every publish");
  t.same(outOfOrder(PUBLISHES), [], "each endpoint: in publish order, each once");

  // The second process stops while publishes go on: its partitions are handed over, nothing lost, the order kept.
  const stopped = new Promise<void>((r) => second.once("exit", () => r()));
  const more = (async () => {
    for (let k = PUBLISHES; k < 2 * PUBLISHES; k++) {
      await publish(k);
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  await eventually(() => rx.accepted("p0").length >= PUBLISHES + 5, 10_000);
  second.kill("SIGTERM");
  await stopped;
  await more;
  t.ok(await eventually(async () => (now = await holders()).length === 4 && now.every((h) => h === "first"), 15_000), `the first process holds every partition (${now.join(", ")})`);
  const got = (i: number): Set<number> => new Set(rx.accepted(`p${i}`).map((d) => (d.data as { k: number }).k));
  t.ok(await eventually(() => Array.from({ length: ENDPOINTS }, (_, i) => got(i).size).every((n) => n === 2 * PUBLISHES), 30_000), "every endpoint got every publish after the hand-over");
  // A graceful hand-over keeps each endpoint's order and posts nothing twice (docs/topics.md, "Across a hand-over").
  await new Promise((r) => setTimeout(r, 500));
  t.same(outOfOrder(2 * PUBLISHES), [], "each endpoint, across the hand-over: in publish order, each once");

  // A delivery refused for good (400) is dead-lettered; replayed, it goes to its endpoint's partition lane and arrives.
  rx.setFault("p0", { status: 400, times: 1 });
  const last = 2 * PUBLISHES;
  await publish(last);
  let dl: DeadLetterEntry | undefined;
  t.ok(await eventually(async () => (dl = (await listDeadLetters(nats, "webhook")).find((d) => d.send.user === eps[0])) !== undefined, 15_000), "the refused delivery was dead-lettered");
  await replayDeadLetter(nats, dl!.seq, cluster.cfg.endpoints.partitions);
  t.ok(await eventually(() => rx.accepted("p0").some((d) => (d.data as { k: number }).k === last), 15_000), "replayed, it reached its endpoint");
});
