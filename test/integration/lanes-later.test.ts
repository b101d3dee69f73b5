// Priority lanes on a real nats-server: a handler that finishes a message later (Later) frees its worker at once; the message is acked when it finishes, and redelivered when it fails.
import { pino } from "pino";
import t from "tap";

import { encode } from "../../lib/core/codec.js";
import { createLogger } from "../../lib/core/log.js";
import { CONSUMER, STREAM, webhookSendSubject } from "../../lib/core/subjects.js";
import { decodeAs, type Later, runLanes } from "../../lib/flow/lanes.js";
import { connectNats } from "../../lib/infra/nats.js";
import { ensureTopology } from "../../lib/infra/topology.js";
import { eventually } from "../helpers/cluster.js";
import { startServers } from "../helpers/servers.js";

t.test("a message finished later: the worker goes on, the message is acked when it finishes, redelivered when it fails", async (t) => {
  const servers = await startServers(t);
  const cfg = servers.config({ gateways: { ackWaitSec: 3 } });
  const log = createLogger({ level: "warn", redact: true }, pino.destination(2));
  const nats = await connectNats(cfg, log, "test");
  t.teardown(() => nats.nc.drain());
  await ensureTopology(nats, cfg);

  const seen: string[] = [];
  let releaseFirst!: () => void;
  const first = new Promise<void>((r) => (releaseFirst = r));
  let failedOnce = false;
  const lanes = runLanes({
    js: nats.js, stream: STREAM.send("webhook"), consumer: (p) => CONSUMER.webhook(p, 0), concurrency: 1, prefetch: 4, ackWaitSec: 3, log,
    handle: async (m): Promise<void | Later> => {
      const { name } = decodeAs<{ type: "t"; name: string }>(m.data, "t");
      seen.push(`${name}#${m.info.deliveryCount}`);
      if (name === "a") return { later: first };
      if (name === "c" && !failedOnce) {
        failedOnce = true;
        return { later: Promise.reject(new Error("c failed")) };
      }
      if (name === "b") releaseFirst();
      return name === "c" ? { later: Promise.resolve() } : undefined;
    },
  });
  t.teardown(() => lanes.stop());
  await lanes.ready;
  for (const name of ["a", "b", "c"]) await nats.js.publish(webhookSendSubject("normal", 0), encode({ type: "t", name }), { msgID: `later-${name}` });

  t.ok(await eventually(() => seen.includes("c#2"), 20_000), "the failed one came back");
  t.same(seen.slice(0, 3), ["a#1", "b#1", "c#1"], "with one worker, b was handled while a was still unfinished");
  t.same(seen.slice(3), ["c#2"], "only the failed one was redelivered");
  t.ok(await eventually(async () => (await nats.jsm.streams.info(STREAM.send("webhook"))).state.messages === 0, 10_000), "every message acked in the end");
});
