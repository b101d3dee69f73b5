// SendGrid and Twilio sandboxes driven by the real SDKs, what the APNs sandbox records of a request its client gave up on, and the provider tokens it refuses (@sendgrid/mail 8.1.6, twilio 6.2.0): what arrived, what the SDK got back, injected faults.
//
// Redirects: SendGrid gets its own `new Client()` (setApiKey first, it resets the base URL; then
// setDefaultRequest("baseUrl", …)) set on a fresh `new MailService()`, never the module singletons.
// Twilio gets an `httpClient` subclassing its RequestClient that rewrites `https://api.twilio.com` to the
// sandbox, so every domain and version of the SDK is covered without touching `client.api.baseUrl`.
// Where retry-after is visible on errors: SendGrid's ResponseError at `err.response.headers["retry-after"]`
// (axios headers, lower-case); Twilio's RestException carries no headers at all, only `status`, `code`,
// `message`, `moreInfo`; the headers of the failed answer are on `client.httpClient.lastResponse.headers`
// (the last request of that client only).
import { readFileSync } from "node:fs";
import http2 from "node:http2";

import t from "tap";
import twilio from "twilio";

import { startApnsSandbox } from "../../sandbox/apns.js";
import { SANDBOX_CERT, SANDBOX_KEY } from "../../sandbox/index.js";
import { Recorder } from "../../sandbox/recorder.js";
import { startSendgridSandbox } from "../../sandbox/sendgrid.js";
import { startTwilioSandbox } from "../../sandbox/twilio.js";
import { AC, mailer, SandboxRequestClient, SG_KEY, TOKEN } from "../helpers/sdk-redirects.js";

const AC_OTHER = `AC${"2".repeat(32)}`;

const sms = (port: number, sid = AC, opts: { accountSid?: string } = {}): twilio.Twilio =>
  twilio(sid, TOKEN, { ...opts, httpClient: new SandboxRequestClient(`http://127.0.0.1:${port}`) });

/** What these tests read of @sendgrid's ResponseError. */
type SgFailure = { code: number; response: { body: { errors: { field: string | null; message: string }[] }; headers: Record<string, string> } };
/** What these tests read of twilio's RestException. */
type TwilioFailure = { status: number; code: number; message: string };

/** The rejection of `p` (as the SDK's error type `E`), failing the test if it resolves. */
async function rejection<E>(p: Promise<unknown>): Promise<E> {
  try {
    await p;
  } catch (e) {
    return e as E;
  }
  throw new Error("expected the call to fail");
}

t.test("sendgrid: personalizations with substitutions arrive as one delivery per recipient", async (t) => {
  const recorder = new Recorder();
  const sb = await startSendgridSandbox({ port: 0, recorder });
  t.teardown(sb.close);
  const [res] = await mailer(sb.port).send({
    from: { email: "news@example.com" },
    subject: "Hello {{name}}",
    content: [{ type: "text/plain", value: "Your code is {{code}}" }, { type: "text/html", value: "<p>{{code}}</p>" }],
    customArgs: { nfx_id: "n_top" },
    personalizations: [
      { to: [{ email: "ann@example.com", name: "Ann" }], substitutions: { name: "Ann", code: "111" }, customArgs: { nfx_id: "n_ann" } },
      { to: "bob@example.com", substitutions: { name: "Bob", code: "222" } },
    ],
  });
  t.equal(res.statusCode, 202);
  t.match((res.headers as Record<string, string>)["x-message-id"], /^[A-Za-z0-9_-]{22}$/, "X-Message-Id reaches the SDK");
  const got = recorder.accepted("sendgrid").map((d) => ({ token: d.token, title: d.title, body: d.body, nid: d.nid, account: d.account }));
  t.same(got, [
    { token: "ann@example.com", title: "Hello Ann", body: "Your code is 111", nid: "n_ann", account: SG_KEY },
    { token: "bob@example.com", title: "Hello Bob", body: "Your code is 222", nid: "n_top", account: SG_KEY },
  ]);
});

t.test("sendgrid: a bad- address rejects the whole request with the field named", async (t) => {
  const recorder = new Recorder();
  const sb = await startSendgridSandbox({ port: 0, recorder });
  t.teardown(sb.close);
  const err = await rejection<SgFailure>(
    mailer(sb.port).send({
      from: "news@example.com", subject: "s", text: "t",
      personalizations: [{ to: "ok@example.com" }, { to: ["fine@example.com", "bad-x@example.com"] }],
    }),
  );
  t.equal(err.code, 400);
  t.same(err.response.body.errors.map((e) => [e.field, e.message]), [["personalizations.1.to.1.email", "Does not contain a valid address."]]);
  t.same(recorder.stats().sendgrid, { requests: 3, accepted: 0, rejected: 3, unique: 0, duplicates: 0 }, "every recipient recorded as rejected");
  const noSubject = await rejection<SgFailure>(mailer(sb.port).send({ from: "a@example.com", to: "b@example.com", text: "t" }));
  t.same(noSubject.response.body.errors.map((e) => e.field), ["subject"]);
  const badKey = await rejection<SgFailure>(mailer(sb.port, "not-a-key").send({ from: "a@example.com", to: "b@example.com", subject: "s", text: "t" }));
  t.equal(badKey.code, 401);
});

t.test("sendgrid: an injected 429 reaches the SDK's error with retry-after and rate-limit headers", async (t) => {
  const recorder = new Recorder();
  const sb = await startSendgridSandbox({ port: 0, recorder });
  t.teardown(sb.close);
  recorder.faults.add({ provider: "sendgrid", prefix: "limited-", errors: [{ code: "429", rate: 1, retryAfterSec: 7 }] });
  const err = await rejection<SgFailure>(mailer(sb.port).send({ from: "a@example.com", to: "limited-1@example.com", subject: "s", text: "t" }));
  t.equal(err.code, 429);
  t.same(err.response.body, { errors: [{ field: null, message: "too many requests" }] });
  t.equal(err.response.headers["retry-after"], "7", "ResponseError.response.headers carries retry-after");
  t.equal(err.response.headers["x-ratelimit-remaining"], "0");
  t.ok(Number(err.response.headers["x-ratelimit-reset"]) >= Math.floor(Date.now() / 1000), "reset is epoch seconds");
  const [ok] = await mailer(sb.port).send({ from: "a@example.com", to: "other@example.com", subject: "s", text: "t" });
  t.equal(ok.statusCode, 202, "addresses outside the prefix are not affected");
});

t.test("twilio: a send returns a queued SM message with the right segment count", async (t) => {
  const recorder = new Recorder();
  const sb = await startTwilioSandbox({ port: 0, recorder });
  t.teardown(sb.close);
  const client = sms(sb.port);
  const gsm = await client.messages.create({ to: "+14155550100", from: "+14155550199", body: "a".repeat(200), statusCallback: "https://nfx.example/cb?nfx_id=n_1" });
  t.match(gsm.sid, /^SM[0-9a-f]{32}$/);
  t.equal(gsm.status, "queued");
  t.equal(gsm.accountSid, AC);
  t.equal(gsm.numSegments, "2", "200 GSM-7 characters are 2 segments of 153");
  t.ok(gsm.dateCreated instanceof Date && !Number.isNaN(gsm.dateCreated.getTime()), "RFC 2822 date parsed by the SDK");
  const ucs = await client.messages.create({ to: "+14155550101", messagingServiceSid: `MG${"0".repeat(32)}`, body: `${"b".repeat(98)}😀` });
  t.equal(ucs.numSegments, "2", "100 characters with an emoji are UCS-2: 2 segments of 67");
  t.equal((await client.messages.create({ to: "+14155550102", from: "+14155550199", body: "short" })).numSegments, "1");
  const d = recorder.accepted("twilio");
  t.same(d.map((x) => [x.token, x.account, x.nid]), [["+14155550100", AC, "n_1"], ["+14155550101", AC, undefined], ["+14155550102", AC, undefined]]);
  t.equal(d[0].body, "a".repeat(200));
});

t.test("twilio: invalid To, unsubscribed, wrong credentials and an injected 503", async (t) => {
  const recorder = new Recorder();
  const sb = await startTwilioSandbox({ port: 0, recorder });
  t.teardown(sb.close);
  const client = sms(sb.port);
  const invalid = await rejection<TwilioFailure>(client.messages.create({ to: "0415", from: "+14155550199", body: "x" }));
  t.type(invalid, twilio.RestException);
  t.equal(invalid.status, 400);
  t.equal(invalid.code, 21211);
  t.equal(invalid.message, "The 'To' number 0415 is not a valid phone number.");
  const unsub = await rejection<TwilioFailure>(client.messages.create({ to: "+99912345678", from: "+14155550199", body: "x" }));
  t.equal(unsub.code, 21610);
  const wrong = await rejection<TwilioFailure>(sms(sb.port, AC_OTHER, { accountSid: AC }).messages.create({ to: "+14155550100", from: "+14155550199", body: "x" }));
  t.equal(wrong.status, 401);
  t.equal(wrong.code, 20003);
  recorder.faults.add({ provider: "twilio", prefix: "+1666", errors: [{ code: "503", rate: 1, retryAfterSec: 3 }] });
  const down = await rejection<TwilioFailure>(client.messages.create({ to: "+16665550100", from: "+14155550199", body: "x" }));
  t.equal(down.status, 503);
  t.equal(down.code, 20503);
  t.equal((client.httpClient.lastResponse?.headers as Record<string, string> | undefined)?.["retry-after"], "3", "retry-after is only on the client's lastResponse, not on the RestException");
  t.same(recorder.stats().twilio, { requests: 4, accepted: 0, rejected: 4, unique: 0, duplicates: 0 });
});

t.test("latency fault: the answer comes no sooner than latencyMs", async (t) => {
  const recorder = new Recorder();
  const sb = await startTwilioSandbox({ port: 0, recorder });
  t.teardown(sb.close);
  const latencyMs = 250;
  recorder.faults.add({ provider: "twilio", prefix: "+1777", latencyMs });
  const client = sms(sb.port);
  const start = performance.now();
  const m = await client.messages.create({ to: "+17775550100", from: "+14155550199", body: "slow" });
  const ms = performance.now() - start;
  t.equal(m.status, "queued", "delayed, not failed");
  t.ok(ms >= latencyMs, `answered after ${ms.toFixed(0)} ms (latency ${latencyMs} ms)`);
});

t.test("apns: a request its client gave up on before the answer is recorded as unanswered", async (t) => {
  const recorder = new Recorder();
  const sandbox = await startApnsSandbox({ port: 0, key: readFileSync(SANDBOX_KEY), cert: readFileSync(SANDBOX_CERT), recorder });
  t.teardown(sandbox.close);
  recorder.faults.add({ provider: "apns", latencyMs: 300 });
  const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString("base64url");
  const session = http2.connect(`https://127.0.0.1:${sandbox.port}`, { rejectUnauthorized: false });
  t.teardown(() => session.close());
  const push = (): http2.ClientHttp2Stream => {
    const req = session.request({ ":method": "POST", ":path": "/3/device/abc123", authorization: `bearer ${b64({ alg: "ES256", kid: "K" })}.${b64({ iss: "T" })}.sig`, "apns-topic": "com.example" });
    req.on("error", () => {});
    req.end(JSON.stringify({ aps: { alert: { title: "t", body: "b" } } }));
    return req;
  };
  const answered = push();
  const status = new Promise<number>((r) => answered.on("response", (h) => r(Number(h[":status"]))));
  const abandoned = push();
  await new Promise((r) => setTimeout(r, 50));
  abandoned.close(http2.constants.NGHTTP2_CANCEL);
  t.equal(await status, 200, "the request kept open is answered");
  await new Promise((r) => setTimeout(r, 100));
  const got = recorder.accepted("apns");
  t.equal(got.length, 2, "both requests are recorded as accepted (the provider acted on both)");
  t.equal(got.filter((d) => d.unanswered).length, 1, "the one its client cancelled is marked unanswered");
});

t.test("apns: a provider token issued over an hour ago is refused as ExpiredProviderToken, as Apple does", async (t) => {
  const recorder = new Recorder();
  const sandbox = await startApnsSandbox({ port: 0, key: readFileSync(SANDBOX_KEY), cert: readFileSync(SANDBOX_CERT), recorder });
  t.teardown(sandbox.close);
  const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString("base64url");
  const session = http2.connect(`https://127.0.0.1:${sandbox.port}`, { rejectUnauthorized: false });
  t.teardown(() => session.close());
  const push = (iat: number): Promise<{ status: number; body: string }> =>
    new Promise((resolve) => {
      const req = session.request({ ":method": "POST", ":path": "/3/device/abc123", authorization: `bearer ${b64({ alg: "ES256", kid: "K" })}.${b64({ iss: "T", iat })}.sig`, "apns-topic": "com.example" });
      let status = 0;
      let body = "";
      req.on("response", (h) => (status = Number(h[":status"])));
      req.on("data", (c: Buffer) => (body += c.toString()));
      req.on("close", () => resolve({ status, body }));
      req.end(JSON.stringify({ aps: { alert: { title: "t", body: "b" } } }));
    });
  const now = Math.floor(Date.now() / 1000);
  t.same(await push(now - 2 * 3600), { status: 403, body: JSON.stringify({ reason: "ExpiredProviderToken" }) });
  t.equal((await push(now - 50 * 60)).status, 200, "a 50-minute-old token is still good");
  t.same(recorder.accepted("apns").map((d) => d.status), [200], "only the accepted one counts as delivered");
});
