// Presence against real NATS and Redis: the gateway side keeps keys and events in step, the shard-actor side routes by events once warm, and a crashed gateway's users go offline with the TTL.
import t from "tap";

import { shardOf } from "../../lib/core/shard-hash.js";
import { presenceReader, PresenceView, PresenceWriter } from "../../lib/inapp/presence.js";
import { clientsFor } from "../helpers/cluster.js";
import { startServers } from "../helpers/servers.js";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

t.test("presence keys, events and the warm view", async (t) => {
  const servers = await startServers(t);
  const cfg = servers.config({ ws: { presenceTtlSec: 3 } });
  const { nats, redis } = await clientsFor(t, cfg);
  const log = (await import("../../lib/core/log.js")).createLogger({ level: "silent", redact: true });
  const shards = cfg.cluster.shards;
  const read = presenceReader(redis);
  const online = async (u: string): Promise<boolean> => (await read(shardOf(u, shards), [u]))[0];
  const view = new PresenceView(nats, 3000);
  t.teardown(() => view.close());
  const a = new PresenceWriter({ nats, redis, log, shards, gateway: "gw-a", ttlMs: 3000 });
  const b = new PresenceWriter({ nats, redis, log, shards, gateway: "gw-b", ttlMs: 3000 });

  await a.connected("u1");
  await a.connected("u1");
  await b.connected("u1");
  await a.connected("u2");
  await sleep(100);
  t.ok(await online("u1"), "u1's key exists");
  t.ok(view.online("u1") && view.online("u2"), "the view learned both from events");
  t.notOk(view.warm(), "not warm before a whole TTL of listening");

  a.disconnected("u1");
  await sleep(100);
  t.ok(await online("u1") && view.online("u1"), "one of gw-a's two connections closed: still online");
  a.disconnected("u1");
  await sleep(100);
  t.ok(await online("u1") && view.online("u1"), "gw-a holds none, gw-b still holds one: online");
  b.disconnected("u1");
  await sleep(100);
  t.notOk(await online("u1"), "the last connection anywhere closed: key gone");
  t.notOk(view.online("u1"), "and the view says offline");

  // gw-a keeps refreshing u2 (a third of the TTL); a "crashed" gateway stops refreshing and its user expires with the TTL.
  const c = new PresenceWriter({ nats, redis, log, shards, gateway: "gw-c", ttlMs: 3000 });
  await c.connected("u3");
  await sleep(100);
  t.ok(view.online("u3") && (await online("u3")), "u3 online through gw-c");
  (c as unknown as { timer: NodeJS.Timeout }).timer.unref();
  clearInterval((c as unknown as { timer: NodeJS.Timeout }).timer);
  await sleep(3600);
  t.ok(view.warm(), "warm after a whole TTL");
  t.ok(view.online("u2") && (await online("u2")), "u2, refreshed by gw-a, stays online past the TTL");
  t.notOk(await online("u3"), "u3's key expired with the TTL (gw-c stopped refreshing)");
  t.notOk(view.online("u3"), "and the view dropped it too");

  await a.close();
  await b.close();
  await sleep(100);
  t.notOk(await online("u2"), "a gateway's clean shutdown removes its users");
  t.notOk(view.online("u2"), "and announces it");
});
