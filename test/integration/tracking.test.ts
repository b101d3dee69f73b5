// Delivery tracking end to end on real NATS, Redis and SDKs: provider webhooks (signed, forged), open pixel and click redirect, app events, bounces, delivery logs, metrics and `nfx top`.
import { createHmac, generateKeyPairSync, sign } from "node:crypto";

import t from "tap";

import { decode } from "../../lib/core/codec.js";
import { API, receiptSubject, STREAM } from "../../lib/core/subjects.js";
import { writeUsers } from "../../lib/directory/directory.js";
import { readStored } from "../../lib/flow/stream-read.js";
import { UserTokens } from "../../lib/inapp/ws-token.js";
import { listProcesses } from "../../lib/infra/processes.js";
import { callApi, notify, status } from "../../lib/intake/api-client.js";
import type { LogPage } from "../../lib/tracking/delivery-log.js";
import { nfxRunner } from "../helpers/cli.js";
import { clientsFor, eventually, startTestCluster } from "../helpers/cluster.js";

const HTML = '<html><body><p>Your order shipped.</p><a href="https://shop.example/orders/7">Track it</a> <a href="https://shop.example/help">Help</a></body></html>';

t.test("email and SMS outcomes from signed provider webhooks, engagement once per recipient, bounces, logs, metrics", async (t) => {
  const cluster = await startTestCluster(t, { own: "all", overrides: { ingest: { channels: ["push", "email", "sms"] } } });
  const cfg = cluster.cfg;
  const { nats, redis } = await clientsFor(t, cluster.cfg);
  const rec = cluster.sandbox!.recorder;
  const api = (path: string, init: RequestInit = {}) => fetch(`${cluster.httpUrl}${path}`, { ...init, headers: { authorization: `Bearer ${cluster.apiKey}`, ...(init.headers ?? {}) } });
  await writeUsers(redis, cfg.cluster.shards, [
    { id: "ana", email: "ana@example.com", devices: [] },
    { id: "ben", email: "bounce-ben@example.com", devices: [] },
    { id: "cy", phone: "+15550000001", devices: [] },
    { id: "dee", phone: "+99850000002", devices: [] },
    { id: "eve", devices: [{ id: "eve-phone", platform: "ios", token: "eve-token-0001" }] },
  ]);

  // Email: ana's is delivered, ben's hard-bounces (the sandbox's SendGrid posts signed events to nfx's webhook).
  const mail = await notify(nats.nc, { recipients: ["ana", "ben"], category: "transactional", channels: ["email"], content: { email: { subject: "Shipped", html: HTML, text: "Your order shipped." } } });
  t.ok(await eventually(async () => {
    const c = (await status(nats.nc, mail.id)).counts;
    return c.delivered === 1 && c.failed === 1;
  }, 30_000), "SendGrid's delivered and bounce events reached the counters");
  let s = await status(nats.nc, mail.id);
  t.match(s.counts, { accepted: 2, sent: 1, delivered: 1, failed: 1, queued: 0 }, "accepted 2; one delivered; the bounce moved from sent to failed");
  t.match(s.lines.find((l) => l.user === "ben"), { outcome: "failed", reason: /^bounce:5\.1\.1/ }, "ben's line shows the hard bounce");
  t.match(s.lines.find((l) => l.user === "ana"), { outcome: "delivered" }, "ana's line shows delivered");

  // The mail SendGrid received carries the open pixel and signed click links, one set per recipient.
  const anaMail = rec.accepted("sendgrid").find((d) => d.nid === mail.id && d.token === "ana@example.com")!;
  const subs = (anaMail.data as { substitutions: Record<string, string> }).substitutions;
  const pixel = subs["{{nfxopen}}"];
  const click = subs["{{nfxc0}}"];
  t.match(pixel, new RegExp(`^${cluster.httpUrl}/v1/t/o/`), "an open pixel URL for ana");
  t.match(click, new RegExp(`^${cluster.httpUrl}/v1/t/c/`), "a click URL for ana's first link");
  t.notOk(JSON.stringify(subs).includes("bounce-ben"), "ben's links are not ana's");

  // Open twice: one open. Click: a redirect to the real target, and one click.
  for (let i = 0; i < 2; i++) {
    const r = await fetch(pixel);
    t.equal(r.headers.get("content-type"), "image/gif", "the pixel answers an image");
  }
  const r = await fetch(click, { redirect: "manual" });
  t.equal(r.status, 302, "the click redirects");
  t.equal(r.headers.get("location"), "https://shop.example/orders/7", "to the link's target");
  // Tampered tokens: the target swapped, or the signature altered. Nothing counts.
  const [payload, mac] = click.split("/v1/t/c/")[1].split(".");
  const body = JSON.parse(Buffer.from(payload, "base64url").toString()) as unknown[];
  body[6] = "https://evil.example/";
  const forged = `${cluster.httpUrl}/v1/t/c/${Buffer.from(JSON.stringify(body)).toString("base64url")}.${mac}`;
  const bad = await fetch(forged, { redirect: "manual" });
  t.equal(bad.status, 400, "a tampered click link is refused");
  t.equal(bad.headers.get("location"), null, "and redirects nowhere");
  // The signature's first character changed (the last ones may carry padding bits that decode alike: "xx" once matched).
  const altered = `${click.slice(0, -mac.length)}${mac[0] === "A" ? "B" : "A"}${mac.slice(1)}`;
  t.equal((await fetch(altered, { redirect: "manual" })).status, 400, "an altered signature is refused");
  t.ok(await eventually(async () => (await status(nats.nc, mail.id)).counts.clicked === 1, 10_000), "one click counted");
  s = await status(nats.nc, mail.id);
  t.equal(s.counts.opened, 1, "two pixel loads and a click count as one open");

  // The hard bounce stops email to that address: a new notification is not sent to SendGrid at all.
  const before = rec.deliveries.filter((d) => d.token === "bounce-ben@example.com").length;
  const again = await notify(nats.nc, { recipients: ["ben"], category: "transactional", channels: ["email"], content: { email: { subject: "Again", text: "x" } } });
  t.ok(await eventually(async () => (await status(nats.nc, again.id)).complete, 30_000), "the next email to ben completes");
  t.match((await status(nats.nc, again.id)).lines[0], { outcome: "failed", reason: "bounced_address" }, "failed as a known bounced address");
  t.equal(rec.deliveries.filter((d) => d.token === "bounce-ben@example.com").length, before, "SendGrid was not called for it");
  const cli = nfxRunner({ NFX_CONFIG: cluster.configFile });
  t.match((await cli("bounces", "list")).stdout, /bounce-ben@example\.com/, "nfx bounces list shows the address");

  // SMS: Twilio's signed status callbacks: cy delivered, dee undelivered (30003).
  const text = await notify(nats.nc, { recipients: ["cy", "dee"], category: "transactional", channels: ["sms"], content: { sms: { text: "Code 1234" } } });
  const smsCounted = await eventually(async () => {
    const c = (await status(nats.nc, text.id)).counts;
    return c.delivered === 1 && c.failed === 1;
  }, 30_000);
  s = await status(nats.nc, text.id);
  if (!smsCounted) {
    // What Twilio was asked, and what it posted back: the place to look when the counters disagree.
    t.comment(`sms counters: ${JSON.stringify(s.counts)}; lines: ${JSON.stringify(s.lines)}`);
    t.comment(`twilio requests: ${JSON.stringify(rec.deliveries.filter((d) => d.provider === "twilio").map((d) => ({ to: d.token, status: d.status, reason: d.reason, at: d.at })))}`);
    const stored: string[] = [];
    await readStored(nats, STREAM.receipts, (m) => void stored.push(`${m.seq}:${JSON.stringify(decode(m.data))}`), receiptSubject(text.id));
    t.comment(`receipts stored: ${stored.join(" ")}`);
    const ingest = (await listProcesses(nats)).find((p) => p.roles.includes("ingest"));
    if (ingest?.metricsUrl) t.comment(`ingest: ${(await (await fetch(ingest.metricsUrl)).text()).split("\n").filter((l) => l.startsWith("nfx_inbound")).join(" ")}`);
    t.comment(`twilio callbacks: ${JSON.stringify(rec.webhooks.filter((w) => w.provider === "twilio"))} ${JSON.stringify(rec.webhookEvents("twilio"))}`);
  }
  t.ok(smsCounted, "Twilio's status callbacks reached the counters");
  t.match(s.counts, { sent: 1, delivered: 1, failed: 1 }, "cy delivered; dee undelivered after acceptance");
  t.match(s.lines.find((l) => l.user === "dee"), { outcome: "failed", reason: "undelivered:30003" });

  // Forged webhooks are refused and change nothing.
  const counted = JSON.stringify((await status(nats.nc, mail.id)).counts);
  const events = JSON.stringify([{ email: "ana@example.com", event: "bounce", type: "bounce", status: "5.1.1", timestamp: Math.floor(Date.now() / 1000), sg_event_id: "forged-1", nfx_id: mail.id, nfx_user: "ana" }]);
  const ts = String(Math.floor(Date.now() / 1000));
  const { privateKey: otherKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  const otherSig = sign("sha256", Buffer.from(ts + events), otherKey).toString("base64");
  const sgPost = (sig: string, payload = events) =>
    fetch(`${cluster.httpUrl}/v1/webhooks/sendgrid`, { method: "POST", body: payload, headers: { "content-type": "application/json", "x-twilio-email-event-webhook-signature": sig, "x-twilio-email-event-webhook-timestamp": ts } });
  const sgForged = await sgPost(otherSig);
  t.equal(sgForged.status, 401, "a SendGrid event signed with another key is refused");
  t.match(await sgForged.json(), { error: { code: "NFX_ERR_UNAUTHENTICATED", field: "X-Twilio-Email-Event-Webhook-Signature" } });
  t.equal((await sgPost("")).status, 401, "an unsigned SendGrid event is refused");
  const form = new URLSearchParams({ MessageSid: "SMforged", MessageStatus: "undelivered", ErrorCode: "30003", To: "+15550000001" });
  const twUrl = `/v1/webhooks/twilio?nfx_account=twilio&nfx_id=${text.id}&nfx_user=cy&nfx_device=x`;
  const wrongSig = createHmac("sha1", "not-the-auth-token").update(`${cfg.engagement.baseUrl}${twUrl}${[...form].sort().map(([k, v]) => k + v).join("")}`).digest("base64");
  const twForged = await fetch(`${cluster.httpUrl}${twUrl}`, { method: "POST", body: form.toString(), headers: { "content-type": "application/x-www-form-urlencoded", "x-twilio-signature": wrongSig } });
  t.equal(twForged.status, 401, "a Twilio callback signed with the wrong token is refused");
  await new Promise((r) => setTimeout(r, 500));
  t.equal(JSON.stringify((await status(nats.nc, mail.id)).counts), counted, "forged events changed no counter");
  t.match((await status(nats.nc, text.id)).counts, { delivered: 1, failed: 1 }, "nor the SMS counters");

  // Apps report push opens: POST /v1/events with the API key, or with the user's own token.
  const push = await notify(nats.nc, { recipients: ["eve"], category: "transactional", content: { push: { title: "Hi", body: "there" } } });
  t.ok(await eventually(async () => (await status(nats.nc, push.id)).complete, 30_000));
  const ev = (who: string, events: unknown) => fetch(`${cluster.httpUrl}/v1/events`, { method: "POST", body: JSON.stringify({ events }), headers: { "content-type": "application/json", authorization: `Bearer ${who}` } });
  const eveToken = await new UserTokens(cfg.ws.secret, cfg.ws.issuer).mint("eve", 600);
  const okr = await ev(eveToken, [{ type: "opened", notification: push.id, user: "eve", device: "eve-phone" }, { type: "opened", notification: push.id, user: "eve", device: "eve-phone" }]);
  t.same(await okr.json(), { accepted: 2, counted: 1 }, "eve's app reports her open twice: counted once");
  const other = await ev(eveToken, [{ type: "clicked", notification: push.id, user: "ana" }]);
  t.equal(other.status, 403, "a user token cannot report another user's events");
  t.match(await other.json(), { error: { field: "events.0.user" } });
  const invalid = await ev(cluster.apiKey, [{ type: "liked", notification: push.id, user: "eve" }]);
  t.equal(invalid.status, 400, "an unknown event type is refused");
  t.match(await invalid.json(), { error: { code: "NFX_ERR_REQUEST_INVALID", field: "events.0.type" } });
  t.equal((await ev("nope", [{ type: "opened", notification: push.id, user: "eve" }])).status, 401, "no key, no token: refused");
  const viaKey = await ev(cluster.apiKey, [{ type: "clicked", notification: push.id, user: "eve", device: "eve-phone" }]);
  t.same(await viaKey.json(), { accepted: 1, counted: 1 }, "a backend reports a click with the API key");
  t.ok(await eventually(async () => {
    const c = (await status(nats.nc, push.id)).counts;
    return c.opened === 1 && c.clicked === 1;
  }, 10_000), "push: opened 1, clicked 1");

  // Delivery logs: per notification over HTTP, per user over NATS and the CLI.
  const nlog = (await (await api(`/v1/notifications/${mail.id}/deliveries`)).json()) as LogPage;
  t.ok(nlog.lines.some((l) => l.user === "ben" && l.outcome === "failed"), "the notification's log shows ben's bounce");
  t.ok(nlog.lines.some((l) => l.user === "ana" && l.outcome === "clicked"), "and ana's click");
  t.match(await (await api(`/v1/notifications/${mail.id}/deliveries?limit=0`)).json(), { error: { field: "limit" } }, "a bad limit names the field");
  t.ok(await eventually(async () => (await callApi<LogPage>(nats.nc, API.log, { user: "ana" })).lines.length >= 3, 10_000));
  const ulog = await callApi<LogPage>(nats.nc, API.log, { user: "ana" });
  t.same(new Set(ulog.lines.map((l) => l.outcome)), new Set(["sent", "delivered", "opened", "clicked"]), "ana's log: sent, delivered, opened, clicked (no queued)");
  t.ok(ulog.lines.every((l, i) => i === 0 || l.at <= ulog.lines[i - 1].at), "newest first");
  const out = (await cli("log", "--user", "dee")).stdout;
  t.match(out, /failed\s+undelivered:30003/, "nfx log --user prints dee's undelivered SMS");
  await t.rejects(cli("log", "--user", "dee", "--notification", mail.id), /name exactly one of notification and user/, "naming both is refused");

  // Metrics: every process serves /metrics; nfx top sees stage rates, gateways and processes.
  const procs = await listProcesses(nats);
  t.ok(procs.length >= 8, `every role process is registered (${procs.length})`);
  const gw = procs.find((p) => p.roles.includes("gateway-email"))!;
  const text1 = await (await fetch(gw.metricsUrl!)).text();
  t.match(text1, /nfx_gateway_request_seconds_bucket\{[^}]*channel="email"/, "the email gateway exports its request latency histogram");
  t.match(text1, /nfx_breaker_state\{[^}]*channel="email"[^}]*\} 0/, "and its breaker, closed");
  t.match(text1, /nfx_stage_items_total\{[^}]*stage="gateway-email"[^}]*\} [1-9]/, "and its stage count");
  const tr = procs.find((p) => p.roles.includes("tracker"))!;
  t.match(await (await fetch(tr.metricsUrl!)).text(), /nfx_consumer_pending\{[^}]*consumer="gw-email-high"/, "the tracker process exports consumer lag per stream and priority");
  const targets = (await (await api("/v1/metrics/targets")).json()) as { targets: string[] }[];
  t.equal(targets.length, procs.length, "Prometheus discovery lists every process");
  const top = JSON.parse((await cli("top", "--once", "--json", "--interval", "0.5")).stdout) as { stages: { stage: string; total: number }[]; processes: unknown[]; breakers: { channel: string }[] };
  t.ok(top.stages.find((x) => x.stage === "shard" && x.total > 0), "nfx top shows the shard stage's count");
  t.ok(top.breakers.some((b) => b.channel === "email"), "and the email breaker");
  t.equal(top.processes.length, procs.length, "and every process");
  const screen = (await cli("top", "--once", "--interval", "0.3")).stdout;
  t.match(screen, /STAGE\s+ITEMS\/S/, "the text view has its stage table");
  t.match(screen, /GATEWAY\s+APP/, "its gateway table");
});
