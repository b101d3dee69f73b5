// Chaos (npm run test:chaos): topic publishes to 300 webhook endpoints while the webhook gateway is SIGKILLed twice mid-delivery and restarted: every endpoint gets every delivery (again only with its webhook-id: at least once), and every notification counts each endpoint once.
import { writeFileSync } from "node:fs";
import { join } from "node:path";

import t from "tap";

import { notify, status } from "../../lib/intake/api-client.js";
import { startWebhookReceiver } from "../../sandbox/webhook-receiver.js";
import { sleep } from "../helpers/chaos.js";
import { clientsFor, eventually, startTestCluster } from "../helpers/cluster.js";
import { receiverEndpoints } from "../helpers/webhooks.js";

const ENDPOINTS = 300;
const PUBLISHES = 40;

t.test(`${PUBLISHES} publishes to ${ENDPOINTS} endpoints, the webhook gateway SIGKILLed twice: each delivery arrives, each counted once`, { timeout: 300_000 }, async (t) => {
  const cluster = await startTestCluster(t, { roles: ["ingest", "router", "gateway-webhook", "tracker"], overrides: { gateways: { ackWaitSec: 3 } } });
  const { nats } = await clientsFor(t, cluster.cfg);
  const rx = await startWebhookReceiver();
  t.teardown(() => rx.close());
  const eps = await receiverEndpoints(nats.nc, rx, "kills", Array.from({ length: ENDPOINTS }, (_, i) => `k${i}`));
  // Every endpoint answers after 20 ms, so the kills land while deliveries are in flight.
  for (let i = 0; i < ENDPOINTS; i++) rx.setFault(`k${i}`, { delayMs: 20 });

  const ids: string[] = [];
  const total = (): number => Array.from({ length: ENDPOINTS }, (_, i) => rx.accepted(`k${i}`).length).reduce((a, n) => a + n, 0);
  const publishing = (async () => {
    for (let k = 0; k < PUBLISHES; k++) {
      ids.push((await notify(nats.nc, { topic: "kills", category: "transactional", content: { webhook: { type: "t.kill", data: { k } } } })).id);
      await sleep(100);
    }
  })();
  for (const share of [0.2, 0.55]) {
    t.ok(await eventually(() => total() >= share * ENDPOINTS * PUBLISHES, 60_000), `${share * 100}% delivered`);
    const victim = cluster.procs.get("gateway-webhook")!;
    await new Promise<void>((r) => (victim.once("exit", () => r()), victim.kill("SIGKILL")));
    await cluster.startRole("gateway-webhook");
  }
  await publishing;

  const missing = (): number => {
    let n = 0;
    for (let i = 0; i < ENDPOINTS; i++) {
      const got = new Set(rx.accepted(`k${i}`).map((d) => d.id));
      for (const id of ids) if (!got.has(`${id}.${eps[i].id}`)) n++;
    }
    return n;
  };
  t.ok(await eventually(() => missing() === 0, 120_000), "every endpoint got every delivery");
  await sleep(1000);
  const accepted = total();
  const dup = accepted - ENDPOINTS * PUBLISHES;
  t.comment(`deliveries posted again after the kills (same webhook-id): ${dup}`);
  t.ok(rx.received("k0").every((d) => d.valid), "signed");
  const counted = await Promise.all(ids.map(async (id) => (await eventually(async () => (await status(nats.nc, id)).counts.sent === ENDPOINTS, 60_000)) && (await status(nats.nc, id)).counts.sent));
  t.same(counted.filter((c) => c !== ENDPOINTS), [], `each notification counts each of its ${ENDPOINTS} endpoints once`);
  const result = { test: "webhook-kills", endpoints: ENDPOINTS, publishes: PUBLISHES, kills: 2, lost: missing(), dup };
  t.comment(JSON.stringify(result));
  if (process.env.CHAOS_RESULTS_DIR) writeFileSync(join(process.env.CHAOS_RESULTS_DIR, "webhook-kills.json"), JSON.stringify(result) + "\n");
});
