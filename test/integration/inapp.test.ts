// In-app end to end: WebSocket delivery with presence routing, ack-or-fallback to push exactly once, several tabs, handshake refusals, the inbox across reconnects and over HTTP.
import t from "tap";

import { inboxKey } from "../../lib/core/keys.js";
import { shardOf } from "../../lib/core/shard-hash.js";
import { writeUsers } from "../../lib/directory/directory.js";
import { UserTokens } from "../../lib/inapp/ws-token.js";
import { notify, status } from "../../lib/intake/api-client.js";
import { readReceipts } from "../../lib/tracking/status.js";
import { clientsFor, eventually, startTestCluster } from "../helpers/cluster.js";
import { connectWs, type Refused, type TestSocket } from "../helpers/ws-client.js";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

t.test("in-app delivery, fallback, tabs, handshake and inbox", async (t) => {
  const cluster = await startTestCluster(t, {
    overrides: { ingest: { channels: ["push", "inapp"] }, ws: { origins: ["http://app.example"], allowNoOrigin: true, messagesPerSec: 5 } },
  });
  const { nats, redis } = await clientsFor(t, cluster.cfg);
  const rec = cluster.sandbox!.recorder;
  const tokens = new UserTokens(cluster.cfg.ws.secret);
  const base = cluster.wsUrl.replace(/^http/, "ws");
  const open = async (user: string, o: { ack?: boolean; origin?: string } = {}): Promise<TestSocket> => {
    const s = await connectWs(`${base}/v1/ws?token=${await tokens.mint(user, 600)}`, o);
    t.teardown(() => s.close());
    await s.next((m) => m.t === "hello");
    return s;
  };
  const users = ["ana", "ben", "cai", "dee", "eve", "fay"];
  await writeUsers(redis, cluster.cfg.cluster.shards, users.map((id) => ({ id, devices: [{ id: `${id}-phone`, platform: "ios" as const, token: `tok-${id}` }] })));
  const apnsFor = (nid: string): string[] => rec.accepted("apns").filter((d) => d.nid === nid).map((d) => d.token);
  const done = (nid: string): Promise<boolean> => eventually(async () => (await status(nats.nc, nid)).complete, 20_000);

  t.test("an online user gets it in-app and no push", async (t) => {
    const s = await open("ana");
    const n = await notify(nats.nc, { recipients: ["ana"], category: "social", content: { push: { title: "Zoe liked your photo", body: "Tap to see", data: { photo: "p1" } } } });
    const m = await s.next((m) => m.t === "n" && (m.item as { id: string }).id === n.id);
    t.match(m.item, { id: n.id, title: "Zoe liked your photo", body: "Tap to see", payload: { photo: "p1" }, read: false }, "the item arrived live with its content");
    t.ok(await done(n.id), "the notification completes");
    t.match((await status(nats.nc, n.id)).lines, [{ user: "ana", channel: "inapp", outcome: "delivered" }], "one in-app line, delivered (the client acknowledged it)");
    await sleep(500);
    t.same(apnsFor(n.id), [], "APNs got nothing");
  });

  t.test("an offline user gets push", async (t) => {
    const n = await notify(nats.nc, { recipients: ["ben"], category: "social", content: { push: { title: "Hi", body: "Ben" } } });
    t.ok(await done(n.id), "completes");
    t.same(apnsFor(n.id), ["tok-ben"], "presence routing sent push to the offline user, once");
    // An in-app-only notification to an offline user is kept in the inbox and falls back to push at once (nobody to wait for).
    const started = Date.now();
    const m = await notify(nats.nc, { recipients: ["ben"], category: "transactional", channels: ["inapp"], content: { inapp: { payload: { kind: "receipt" } }, push: { title: "Paid", body: "€12" } } });
    t.ok(await eventually(() => apnsFor(m.id).length > 0, 10_000), "the in-app send fell back to push");
    t.ok(Date.now() - started < cluster.cfg.ws.ackTimeoutMs + 1500, "without waiting for the ack timeout");
    t.ok(await done(m.id), "completes");
    const lines = (await status(nats.nc, m.id)).lines;
    t.match(lines.find((l) => l.channel === "inapp"), { outcome: "fallback", reason: "offline" }, "the in-app line says it fell back because ben was offline");
    t.match(lines.find((l) => l.channel === "apns"), { outcome: "sent", device: "ben-phone" }, "and the push was sent");
    const inbox = await (await fetch(`${cluster.wsUrl}/v1/inbox`, { headers: { authorization: `Bearer ${await tokens.mint("ben", 60)}` } })).json() as { items: { id: string; payload: unknown }[]; unread: number };
    t.match(inbox.items.find((i) => i.id === m.id), { payload: { kind: "receipt" } }, "the item waits in ben's inbox");
  });

  t.test("an online user who never acks gets push after the timeout, exactly once", async (t) => {
    const s = await open("cai", { ack: false });
    const n = await notify(nats.nc, { recipients: ["cai"], category: "social", content: { push: { title: "Silent", body: "tab" } } });
    const got = await s.next((m) => m.t === "n");
    const at = Date.now();
    t.equal((got.item as { id: string }).id, n.id, "the client received it but did not ack");
    t.ok(await eventually(() => apnsFor(n.id).length > 0, 10_000), "push followed");
    t.ok(Date.now() - at >= cluster.cfg.ws.ackTimeoutMs - 300, "after the ack timeout");
    // A late ack after the fallback changes nothing.
    s.send({ t: "ack", id: n.id });
    await sleep(2500);
    t.same(apnsFor(n.id), ["tok-cai"], "exactly one push");
    t.ok(await done(n.id), "completes");
    const lines = (await status(nats.nc, n.id)).lines;
    t.match(lines.find((l) => l.channel === "inapp"), { outcome: "fallback", reason: "no_ack" }, "in-app line: fell back, no ack");
    t.equal(lines.filter((l) => l.channel === "apns").length, 1, "one push line");
  });

  t.test("two tabs each receive it once", async (t) => {
    const [a, b] = [await open("dee"), await open("dee")];
    const n = await notify(nats.nc, { recipients: ["dee"], category: "social", content: { push: { title: "Two", body: "tabs" } } });
    await a.next((m) => m.t === "n");
    await b.next((m) => m.t === "n");
    t.ok(await done(n.id), "completes");
    await sleep(500);
    t.equal(a.items().filter((i) => i.id === n.id).length, 1, "tab 1 got it once");
    t.equal(b.items().filter((i) => i.id === n.id).length, 1, "tab 2 got it once");
    t.same(apnsFor(n.id), [], "no push");
  });

  t.test("bad or expired tokens and wrong origins are refused at the handshake", async (t) => {
    const refused = async (url: string, o: { origin?: string } = {}): Promise<Refused> => {
      try {
        const s = await connectWs(url, o);
        s.close();
        throw new Error("connected");
      } catch (err) {
        return err as Refused;
      }
    };
    const good = await tokens.mint("fay", 600);
    t.match(await refused(`${base}/v1/ws`), { status: 401, body: /token: missing/ }, "no token: 401");
    t.match(await refused(`${base}/v1/ws?token=${good.slice(0, -3)}abc`), { status: 401, body: /invalid signature/ }, "tampered token: 401");
    t.match(await refused(`${base}/v1/ws?token=${await new UserTokens("another-secret-another-secret-12345").mint("fay", 600)}`), { status: 401 }, "token of another secret: 401");
    const expired = await tokens.mint("fay", 1);
    await sleep(2100);
    t.match(await refused(`${base}/v1/ws?token=${expired}`), { status: 401, body: /expired/ }, "expired token: 401");
    t.match(await refused(`${base}/v1/ws?token=${good}`, { origin: "http://evil.example" }), { status: 403, body: /origin: http:\/\/evil.example is not allowed/ }, "wrong origin: 403");
    const ok = await open("fay", { origin: "http://app.example" });
    t.ok(ok.got.some((m) => m.t === "hello"), "the allowed origin connects");
    ok.send({ t: "read" });
    t.match(await ok.next((m) => m.t === "error"), { code: "NFX_ERR_REQUEST_INVALID", field: "ids" }, "a bad command names the field");
    for (let i = 0; i < 30; i++) ok.send({ t: "ping" });
    t.equal(await ok.closed, 1008, "flooding past the rate limit closes the connection (1008)");
    const big = await open("fay");
    big.ws.send("x".repeat(cluster.cfg.ws.maxMessageBytes + 1));
    t.ok([1006, 1009].includes(await big.closed), "a message over ws.maxMessageBytes closes the connection (uWS drops the socket: 1006 at the client)");
    // An inbox that cannot be read (here a key of the wrong type, so Redis answers an error): no hello, closed with 1011.
    await redis.set(inboxKey(shardOf("gus", cluster.cfg.cluster.shards), "gus"), "not a sorted set");
    const gus = await connectWs(`${base}/v1/ws?token=${await tokens.mint("gus", 600)}`);
    t.equal(await Promise.race([gus.closed, sleep(10_000).then(() => "still open")]), 1011, "an inbox read that fails closes the connection with 1011, so the client reconnects");
    t.same(gus.got, [], "and sends nothing before");
  });

  t.test("inbox state survives a reconnect; read receipts are recorded", async (t) => {
    const s = await open("eve");
    const n = await notify(nats.nc, { recipients: ["eve"], category: "social", content: { push: { title: "Keep", body: "me" } } });
    await s.next((m) => m.t === "n");
    s.send({ t: "read", ids: [n.id], ref: 1 });
    t.match(await s.next((m) => m.t === "ok" && m.ref === 1), { unread: 0 }, "marked read, nothing unread");
    s.close();
    await s.closed;
    const again = await open("eve");
    const hello = again.got.find((m) => m.t === "hello")!;
    t.match(hello, { unread: 0 }, "reconnected: still nothing unread");
    t.match((hello.items as { id: string }[]).find((i) => i.id === n.id), { id: n.id, read: true, seen: true }, "the item is there, read");
    const token = await tokens.mint("eve", 60);
    const r = await fetch(`${cluster.wsUrl}/v1/inbox/archive`, { method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: JSON.stringify({ ids: [n.id] }) });
    t.equal(r.status, 200, "archive over HTTP");
    await again.next((m) => m.t === "state" && (m.state as { archived?: boolean }).archived === true);
    t.pass("the open connection learned of the archive");
    const list = await (await fetch(`${cluster.wsUrl}/v1/inbox?token=${token}`)).json() as { items: { id: string }[] };
    t.notOk(list.items.some((i) => i.id === n.id), "archived items leave the list");
    const bad = await fetch(`${cluster.wsUrl}/v1/inbox/read`, { method: "POST", headers: { authorization: `Bearer ${token}` }, body: JSON.stringify({ ids: ["no spaces allowed"] }) });
    t.equal(bad.status, 400, "a bad id is refused");
    t.match(await bad.json(), { error: { field: "ids.0" } }, "naming the field");
    t.equal((await fetch(`${cluster.wsUrl}/v1/inbox`)).status, 401, "the inbox needs a token");
    t.ok(await eventually(async () => (await readReceipts(nats, n.id)).some((e) => e.outcome === "read" && e.user === "eve"), 10_000), "a read receipt went to the receipts stream");
  });

  t.test("no role was refused a subject (ws-gateway and dispatcher users held to their table)", async (t) => {
    t.notMatch(cluster.nats.output(), /Violation/, "nats-server reported no permission violation");
  });
});
