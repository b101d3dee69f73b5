// Delivery webhooks of the SendGrid and Twilio sandboxes, sent through the real SDKs and verified with the providers' own verifiers.
//
// SendGrid's Signed Event Webhook is checked with @sendgrid/eventwebhook 8.0.0 (starkbank-ecdsa underneath) using the
// public key as SendGrid's UI shows it; Twilio's X-Twilio-Signature with twilio.validateRequest. Receivers are plain
// node:http servers on 127.0.0.1; the SDK redirects are those of sandbox-providers.test.ts.
import http from "node:http";
import type { AddressInfo } from "node:net";

import EventWebhookPkg from "@sendgrid/eventwebhook";
import t, { type Test } from "tap";
import twilio from "twilio";

import { type Sandbox, SENDGRID_WEBHOOK_PUBLIC_KEY, startSandbox } from "../../sandbox/index.js";
import { AC, mailer, SandboxRequestClient, TOKEN } from "../helpers/sdk-redirects.js";

const { EventWebhook } = EventWebhookPkg;
const SIG = "x-twilio-email-event-webhook-signature";
const TS = "x-twilio-email-event-webhook-timestamp";

const sms = (port: number): twilio.Twilio => twilio(AC, TOKEN, { httpClient: new SandboxRequestClient(`http://127.0.0.1:${port}`) });

/** One POST a receiver got: the full URL it was sent to, its headers, its raw body. */
interface Received {
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
  status: number;
}

/** A webhook receiver on 127.0.0.1 that answers 200, or 500 to the next `failures` posts. */
async function receiver(t: Test): Promise<{ base: string; posts: Received[]; failNext(n: number): void }> {
  const posts: Received[] = [];
  let failures = 0;
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const status = failures > 0 ? (failures--, 500) : 200;
      posts.push({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}${req.url}`, headers: req.headers, body: Buffer.concat(chunks).toString(), status });
      res.writeHead(status).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  return { base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, posts, failNext: (n) => void (failures = n) };
}

/** Waits until `ok()` holds, failing after `ms`. */
async function until(ok: () => boolean, what: string, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A control API reply as these tests read it (a field the reply lacks reads as undefined and fails its assertion). */
type ControlReply = { counts: Record<string, number>; posts: { status: number; events: number }[] } & Record<string, unknown>;

/** Calls the sandbox's control API. */
async function control(sb: Sandbox, method: string, path: string, body?: unknown): Promise<{ status: number; json: ControlReply }> {
  const res = await fetch(`http://127.0.0.1:${sb.ports.control}${path}`, { method, ...(body !== undefined ? { body: JSON.stringify(body), headers: { "content-type": "application/json" } } : {}) });
  return { status: res.status, json: (await res.json()) as ControlReply };
}

const ok200 = (p: Received): boolean => p.status === 200;
/** A SendGrid event as these tests read it. */
type SgEvent = Record<string, unknown> & { timestamp: number; sg_event_id: string };
const sgEvents = (posts: Received[]): SgEvent[] => posts.filter((p) => p.url.includes("/sendgrid") && ok200(p)).flatMap((p) => JSON.parse(p.body) as SgEvent[]);
const verifySg = (body: string, sig: string, ts: string): boolean => {
  const ew = new EventWebhook();
  return ew.verifySignature(ew.convertPublicKeyToECDSA(SENDGRID_WEBHOOK_PUBLIC_KEY), body, sig, ts);
};

t.test("sendgrid: signed events per recipient with custom args at the top level", async (t) => {
  const rx = await receiver(t);
  const sb = await startSandbox({}, [], { sendgridWebhookUrl: `${rx.base}/sendgrid` });
  t.teardown(sb.close);
  const [res] = await mailer(sb.ports.sendgrid).send({
    from: "news@example.com", subject: "s", text: "t", categories: ["welcome", "nfx"],
    personalizations: [
      { to: "ok@x.test", customArgs: { nfx_id: "n_1", nfx_user: "u_ok" } },
      { to: "bounce-a@x.test", customArgs: { nfx_id: "n_1", nfx_user: "u_b", nfx_device: "d_b" } },
      { to: "drop-b@x.test", customArgs: { nfx_id: "n_1", nfx_user: "u_d" } },
    ],
  });
  t.equal(res.statusCode, 202);
  const messageId = (res.headers as Record<string, string>)["x-message-id"];
  await until(() => sb.recorder.webhookEvents("sendgrid").length >= 6, "6 accepted sendgrid events");
  await new Promise((r) => setTimeout(r, 150));
  const events = sgEvents(rx.posts);
  t.equal(events.length, 6, "a processed and a final event per recipient, nothing more");
  const post = rx.posts[0];
  t.equal(post.headers["content-type"], "application/json");
  const now = Math.floor(Date.now() / 1000);
  const strip = ({ timestamp, sg_event_id, ...rest }: SgEvent) => {
    t.ok(Math.abs(timestamp - now) <= 2, "timestamp is unix seconds");
    t.match(sg_event_id, /^[A-Za-z0-9_-]{22}$/);
    return rest;
  };
  const common = (email: string, n: number) => ({ email, "smtp-id": `<${messageId}@ismtpd0001p1sjc2.sendgrid.net>`, sg_message_id: `${messageId}.filter0001.${n}.0`, category: ["welcome", "nfx"], nfx_id: "n_1" });
  t.same(events.map(strip), [
    { ...common("ok@x.test", 0), nfx_user: "u_ok", event: "processed" },
    { ...common("ok@x.test", 0), nfx_user: "u_ok", event: "delivered", response: "250 OK" },
    { ...common("bounce-a@x.test", 1), nfx_user: "u_b", nfx_device: "d_b", event: "processed" },
    { ...common("bounce-a@x.test", 1), nfx_user: "u_b", nfx_device: "d_b", event: "bounce", type: "bounce", status: "5.1.1", reason: "550 5.1.1 The email account that you tried to reach does not exist" },
    { ...common("drop-b@x.test", 2), nfx_user: "u_d", event: "processed" },
    { ...common("drop-b@x.test", 2), nfx_user: "u_d", event: "dropped", reason: "Bounced Address" },
  ]);
  t.equal(new Set(events.map((e) => e.sg_event_id)).size, 6, "sg_event_id is unique");
  for (const p of rx.posts) t.ok(verifySg(p.body, p.headers[SIG] as string, p.headers[TS] as string), "signature verifies with @sendgrid/eventwebhook");
  const tampered = post.body.replace('"delivered"', '"bounce"');
  t.not(tampered, post.body);
  t.notOk(verifySg(tampered, post.headers[SIG] as string, post.headers[TS] as string), "a tampered payload fails verification");
  t.notOk(verifySg(post.body, post.headers[SIG] as string, String(Number(post.headers[TS]) + 1)), "a changed timestamp fails verification");
  t.same(sb.recorder.webhookEvents("sendgrid"), events, "the recorder holds exactly what the receiver accepted");
  const api = await control(sb, "GET", "/webhooks/events?provider=sendgrid");
  t.same(api.json.counts, { processed: 3, delivered: 1, bounce: 1, dropped: 1 });
  t.same(api.json.posts.map((w: { status: number; events: number }) => [w.status, w.events]), [[200, 6]]);
});

t.test("sendgrid: blocked and deferred outcomes; the webhook URL set and cleared through the control API", async (t) => {
  const rx = await receiver(t);
  const sb = await startSandbox({});
  t.teardown(sb.close);
  const mail = mailer(sb.ports.sendgrid);
  t.same((await control(sb, "GET", "/webhooks")).json, { sendgrid: null });
  await mail.send({ from: "a@example.com", to: "ok@x.test", subject: "s", text: "t", customArgs: { nfx_id: "n_0" } });
  const put = await control(sb, "PUT", "/webhooks/sendgrid", { url: `${rx.base}/sendgrid/v2` });
  t.same(put, { status: 200, json: { sendgrid: `${rx.base}/sendgrid/v2` } });
  t.same((await control(sb, "GET", "/webhooks")).json, { sendgrid: `${rx.base}/sendgrid/v2` });
  await mail.send({ from: "a@example.com", subject: "s", text: "t", customArgs: { nfx_id: "n_2" }, personalizations: [{ to: ["blocked-c@x.test", "defer-d@x.test"] }] });
  await until(() => sgEvents(rx.posts).length >= 5, "5 sendgrid events");
  const events = sgEvents(rx.posts);
  t.same(events.map((e) => [e.email, e.event, e.type, e.status, e.nfx_id, e.category]), [
    ["blocked-c@x.test", "processed", undefined, undefined, "n_2", []],
    ["blocked-c@x.test", "bounce", "blocked", "4.0.0", "n_2", []],
    ["defer-d@x.test", "processed", undefined, undefined, "n_2", []],
    ["defer-d@x.test", "deferred", undefined, undefined, "n_2", []],
    ["defer-d@x.test", "delivered", undefined, undefined, "n_2", []],
  ], "nothing from the send made before the URL was set; top-level custom args reach every recipient");
  t.ok(rx.posts.every((p) => p.url === `${rx.base}/sendgrid/v2`));
  t.same((await control(sb, "PUT", "/webhooks/sendgrid", { url: null })).json, { sendgrid: null });
  await mail.send({ from: "a@example.com", to: "ok@x.test", subject: "s", text: "t" });
  await new Promise((r) => setTimeout(r, 250));
  t.equal(sgEvents(rx.posts).length, 5, "nothing posted once the URL is cleared");
  t.equal((await control(sb, "PUT", "/webhooks/sendgrid", { url: "ftp://x" })).status, 400);
  t.equal((await control(sb, "PUT", "/webhooks/sendgrid", {})).status, 400);
  t.equal((await control(sb, "GET", "/webhooks/events?provider=apns")).status, 400);
});

t.test("sendgrid: a batch answered 500 is retried, signed afresh, and counted once", async (t) => {
  const rx = await receiver(t);
  const sb = await startSandbox({}, [], { sendgridWebhookUrl: `${rx.base}/sendgrid` });
  t.teardown(sb.close);
  rx.failNext(1);
  await mailer(sb.ports.sendgrid).send({ from: "a@example.com", to: "ok@x.test", subject: "s", text: "t", customArgs: { nfx_id: "n_r" } });
  await until(() => sb.recorder.webhooks.some((w) => w.status === 200), "the retried batch, as the sandbox saw it answered");
  t.same(rx.posts.map((p) => p.status), [500, 200]);
  t.equal(rx.posts[0].body, rx.posts[1].body, "the same batch, same sg_event_ids");
  for (const p of rx.posts) t.ok(verifySg(p.body, p.headers[SIG] as string, p.headers[TS] as string));
  t.same(sb.recorder.webhooks.map((w) => [w.provider, w.status, w.events]), [["sendgrid", 500, 2], ["sendgrid", 200, 2]]);
  t.same(sb.recorder.webhookCounts("sendgrid"), { processed: 1, delivered: 1 });
  await control(sb, "POST", "/reset");
  t.same([sb.recorder.webhooks.length, sb.recorder.webhookEvents("sendgrid").length], [0, 0], "reset clears webhook records");
});

/** Every status callback a receiver accepted, as form parameters, with its URL and signature. */
const callbacks = (posts: Received[]) =>
  posts.filter((p) => p.url.includes("/twilio") && ok200(p)).map((p) => ({ url: p.url, sig: p.headers["x-twilio-signature"] as string, params: Object.fromEntries(new URLSearchParams(p.body)) }));

t.test("twilio: signed status callbacks, sent then the final status", async (t) => {
  const rx = await receiver(t);
  const sb = await startSandbox({});
  t.teardown(sb.close);
  const client = sms(sb.ports.twilio);
  const statusCallback = `${rx.base}/twilio/status?nfx_id=n_1`;
  const ok = await client.messages.create({ to: "+14155550100", from: "+14155550199", body: "hi", statusCallback });
  const gone = await client.messages.create({ to: "+99812345678", from: "+14155550199", body: "hi", statusCallback });
  const fail = await client.messages.create({ to: "+99712345678", messagingServiceSid: `MG${"0".repeat(32)}`, body: "hi", statusCallback });
  await client.messages.create({ to: "+14155550101", from: "+14155550199", body: "no callback" });
  await until(() => sb.recorder.webhookEvents("twilio").length >= 6, "6 accepted callbacks");
  await new Promise((r) => setTimeout(r, 100));
  const got = callbacks(rx.posts);
  t.equal(got.length, 6, "two callbacks per message with a StatusCallback, none for the other");
  const of = (sid: string) => got.filter((c) => c.params.MessageSid === sid).map((c) => c.params);
  const base = { AccountSid: AC, ApiVersion: "2010-04-01" };
  t.same(of(ok.sid), [
    { ...base, MessageSid: ok.sid, SmsSid: ok.sid, MessageStatus: "sent", SmsStatus: "sent", From: "+14155550199", To: "+14155550100" },
    { ...base, MessageSid: ok.sid, SmsSid: ok.sid, MessageStatus: "delivered", SmsStatus: "delivered", From: "+14155550199", To: "+14155550100" },
  ]);
  t.same(of(gone.sid).map((p) => [p.MessageStatus, p.ErrorCode]), [["sent", undefined], ["undelivered", "30003"]]);
  t.same(of(fail.sid).map((p) => [p.MessageStatus, p.ErrorCode, p.MessagingServiceSid, p.From]), [["sent", undefined, `MG${"0".repeat(32)}`, undefined], ["failed", "30008", `MG${"0".repeat(32)}`, undefined]]);
  for (const c of got) {
    t.equal(c.url, statusCallback);
    t.ok(twilio.validateRequest(TOKEN, c.sig, c.url, c.params), `signature of ${c.params.MessageStatus} validates with twilio.validateRequest`);
  }
  const c0 = got[0];
  t.notOk(twilio.validateRequest(TOKEN, c0.sig, c0.url, { ...c0.params, MessageStatus: "delivered" }), "a tampered param fails");
  t.notOk(twilio.validateRequest("other-token", c0.sig, c0.url, c0.params), "another auth token fails");
  t.same(sb.recorder.webhookCounts("twilio"), { sent: 3, delivered: 1, undelivered: 1, failed: 1 });
  const bad = await client.messages.create({ to: "+14155550100", from: "+14155550199", body: "hi", statusCallback: "not a url" }).catch((e: { code: number }) => e);
  t.equal((bad as { code: number }).code, 21609, "a StatusCallback that is not a URL is refused");
});

t.test("twilio: a callback answered 500 is retried", async (t) => {
  const rx = await receiver(t);
  const sb = await startSandbox({});
  t.teardown(sb.close);
  rx.failNext(1);
  const m = await sms(sb.ports.twilio).messages.create({ to: "+14155550100", from: "+14155550199", body: "hi", statusCallback: `${rx.base}/twilio/cb` });
  await until(() => sb.recorder.webhookEvents("twilio").length >= 2, "2 accepted callbacks, as the sandbox saw them answered");
  t.same(rx.posts.map((p) => [p.status, new URLSearchParams(p.body).get("MessageStatus")]), [[500, "sent"], [200, "sent"], [200, "delivered"]]);
  t.same(sb.recorder.webhooks.map((w) => w.status), [500, 200, 200]);
  t.same(sb.recorder.webhookEvents("twilio").map((e) => [e.MessageSid, e.MessageStatus]), [[m.sid, "sent"], [m.sid, "delivered"]]);
  const api = await control(sb, "GET", "/webhooks/events?provider=twilio");
  t.same(api.json.counts, { sent: 1, delivered: 1 });
});

t.test("sendgrid: a receiver that is down gets the first try and 5 retries, recorded as status 0", async (t) => {
  const dead = `http://127.0.0.1:1/sendgrid`;
  const sb = await startSandbox({}, [], { sendgridWebhookUrl: dead });
  t.teardown(sb.close);
  await mailer(sb.ports.sendgrid).send({ from: "a@example.com", to: "ok@x.test", subject: "s", text: "t" });
  await until(() => sb.recorder.webhooks.length >= 6, "6 attempts", 6000);
  t.same(sb.recorder.webhooks.map((w) => [w.url, w.status]), Array(6).fill([dead, 0]));
  t.same(sb.recorder.webhookEvents("sendgrid"), []);
});
