// Consent end to end with the real SDKs against the sandboxes: List-Unsubscribe on commercial email only, the one-click POST, tampered and expired links refused, the preference page in headless Chromium, SMS STOP/START/HELP from Twilio's inbound webhook, the consent log.
import { existsSync, mkdirSync, statSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";
import t from "tap";

import { ConsentLinks } from "../../lib/consent/links.js";
import { consentLog, getUser, writeUsers } from "../../lib/directory/directory.js";
import { UserTokens } from "../../lib/inapp/ws-token.js";
import { notify, status } from "../../lib/intake/api-client.js";
import { postInboundSms } from "../../sandbox/twilio-callbacks.js";
import { nfxRunner } from "../helpers/cli.js";
import { clientsFor, eventually, startTestCluster } from "../helpers/cluster.js";

const CHROMIUM = "/usr/bin/chromium";
const SHOT = fileURLToPath(new URL("../../../test-results/preference-page.png", import.meta.url));
const SAM = "+15557770101";

t.test("consent: one-click unsubscribe, the preference page, SMS keywords, the consent log", async (t) => {
  const cluster = await startTestCluster(t, { overrides: { ingest: { channels: ["push", "email", "sms"] }, consent: { mailto: "unsubscribe@example.com" } } });
  const cfg = cluster.cfg;
  const shards = cfg.cluster.shards;
  const { nats, redis } = await clientsFor(t, cfg);
  const rec = cluster.sandbox!.recorder;
  const nfx = nfxRunner({ NFX_CONFIG: cluster.configFile });
  const phone = (id: string) => ({ id: `${id}-phone`, platform: "ios" as const, token: `tok-${id}` });
  await writeUsers(redis, shards, [
    { id: "ana", email: "ana@example.com", locale: "de-DE", devices: [phone("ana")] },
    { id: "bo", email: "bo@example.com", devices: [phone("bo")] },
    { id: "sam", phone: SAM, devices: [] },
  ]);
  const done = (id: string): Promise<boolean> => eventually(async () => (await status(nats.nc, id)).complete, 30_000);
  const mails = (nid: string) => rec.accepted("sendgrid").filter((d) => d.nid === nid);
  const headersOf = (d: { data?: Record<string, unknown> }): Record<string, string> | undefined => d.data?.headers as Record<string, string> | undefined;
  const post = (url: string, body: string) => fetch(url, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body });

  // A commercial email: both headers, and the signed links in the body.
  const promo = await notify(nats.nc, {
    recipients: ["ana", "bo"], category: "marketing", channels: ["email"],
    content: { email: { subject: "Winter sale", text: "Sale starts now. Unsubscribe: {{unsubscribe_url}} Preferences: {{preferences_url}}" } },
  });
  t.ok(await done(promo.id), "the commercial email completes");
  const anaMail = mails(promo.id).find((d) => d.token === "ana@example.com")!;
  const lu = headersOf(anaMail)?.["List-Unsubscribe"] ?? "";
  const unsub = /^<(http:\/\/127\.0\.0\.1:\d+\/v1\/consent\/u\/[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)>, <mailto:unsubscribe@example\.com\?subject=unsubscribe%20[^>]+>$/.exec(lu)?.[1];
  t.ok(unsub, `List-Unsubscribe names a signed HTTPS-style URL and the mailto (${lu})`);
  t.equal(headersOf(anaMail)?.["List-Unsubscribe-Post"], "List-Unsubscribe=One-Click", "and List-Unsubscribe-Post asks for one-click");
  t.match(anaMail.body, `Unsubscribe: ${unsub} Preferences: ${cfg.engagement.baseUrl}/v1/consent/p/`, "{{unsubscribe_url}} and {{preferences_url}} filled in the body");
  t.not(headersOf(mails(promo.id).find((d) => d.token === "bo@example.com")!)?.["List-Unsubscribe"], lu, "each recipient has their own link");

  // A tampered or expired link is refused, says why, and changes nothing.
  // One character well inside the token changed to one that differs in all six bits (the last character of base64url
  // can carry unused bits: changing only those would leave the decoded token as it was).
  const k = unsub!.length - 8;
  const tampered = unsub!.slice(0, k) + (unsub![k] === "_" ? "A" : "_") + unsub!.slice(k + 1);
  const r1 = await post(tampered, "List-Unsubscribe=One-Click");
  t.equal(r1.status, 403, "a tampered link is refused");
  t.match(await r1.text(), /signature does not match[\s\S]*Nothing was changed/, "saying why");
  const old = new ConsentLinks(cfg.engagement.secret, cfg.engagement.baseUrl, 60, () => Date.now() - 3_600_000).unsubscribeUrl("ana", "marketing");
  const r2 = await post(old, "List-Unsubscribe=One-Click");
  t.equal(r2.status, 403, "an expired link is refused");
  t.match(await r2.text(), /expired/, "saying so");
  t.same((await getUser(redis, shards, "ana"))?.preferences, undefined, "neither changed ana's preferences");

  // One-click: a POST with List-Unsubscribe=One-Click, no login, no confirmation; a repeat changes nothing more.
  const r3 = await post(unsub!, "List-Unsubscribe=One-Click");
  t.equal(r3.status, 200, "the one-click POST succeeds");
  t.match(await r3.text(), /<html lang="de"[\s\S]*marketing/, "and the page, in ana's language (de-DE → de), says which category");
  t.equal((await post(unsub!, "List-Unsubscribe=One-Click")).status, 200, "again: still 200");
  t.same((await getUser(redis, shards, "ana"))?.preferences?.categories?.marketing, { email: false }, "ana's marketing email is off");
  t.equal((await consentLog(redis, shards, "ana")).filter((e) => e.via === "unsubscribe_link").length, 1, "logged once");
  t.equal((await fetch(unsub!)).status, 200, "a GET of the link shows the page and changes nothing");

  // The next campaign skips ana for email only; a transactional email has no unsubscribe and still reaches her.
  const camp = await notify(nats.nc, { segment: "all", category: "marketing", channels: ["email", "push"], content: { email: { subject: "Last day", text: "Sale ends" }, push: { title: "Last day", body: "Sale ends" } } });
  t.ok(await eventually(() => mails(camp.id).length === 1 && rec.accepted("apns").filter((d) => d.nid === camp.id).length === 2, 30_000), "the campaign went out");
  t.same(mails(camp.id).map((d) => d.token), ["bo@example.com"], "email only to bo");
  t.same(rec.accepted("apns").filter((d) => d.nid === camp.id).map((d) => d.token).sort(), ["tok-ana", "tok-bo"], "push to both: ana turned off email only");
  const receipt = await notify(nats.nc, { recipients: ["ana"], category: "transactional", channels: ["email"], content: { email: { subject: "Receipt", text: "Paid 12 EUR" } } });
  t.ok(await done(receipt.id));
  t.equal(mails(receipt.id).length, 1, "the transactional email reached ana");
  t.equal(headersOf(mails(receipt.id)[0])?.["List-Unsubscribe"], undefined, "without List-Unsubscribe");

  // The preference page in headless Chromium: opened from the email's link, a category switched off, saved.
  t.ok(existsSync(CHROMIUM), `${CHROMIUM} is installed`);
  const prefsUrl = /Preferences: (\S+)/.exec(mails(promo.id).find((d) => d.token === "bo@example.com")!.body ?? "")![1];
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--headless=new"] });
  t.teardown(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 900, height: 900 } });
  const problems: string[] = [];
  page.on("pageerror", (e) => void problems.push(String(e)));
  page.on("console", (m) => void (m.type() === "error" && problems.push(m.text())));
  await page.goto(prefsUrl);
  const pushBox = page.locator('input[name="c.marketing.push"]');
  t.ok(await pushBox.isChecked(), "bo's marketing push is on");
  t.ok(await page.locator('input[type="checkbox"][disabled]').count() > 0, "transactional categories are shown always on");
  await pushBox.uncheck();
  await page.locator('button[type="submit"], input[type="submit"]').first().click();
  await page.waitForLoadState("load");
  t.notOk(await page.locator('input[name="c.marketing.push"]').isChecked(), "saved: the page shows it off");
  mkdirSync(fileURLToPath(new URL("../../../test-results/", import.meta.url)), { recursive: true });
  await page.screenshot({ path: SHOT, fullPage: true });
  t.ok(statSync(SHOT).size > 5000, `screenshot saved to ${SHOT}`);
  t.same(problems, [], "no script error or CSP violation on the page");
  t.match(JSON.parse((await nfx("users", "get", "bo")).stdout), { preferences: { categories: { marketing: { push: false, email: true } } } }, "nfx users get shows the change");
  const next = await notify(nats.nc, { recipients: ["bo"], category: "marketing", channels: ["push"], content: { push: { title: "Flash sale", body: "1 hour" } } });
  t.ok(await done(next.id));
  t.match((await nfx("explain", next.id, "bo")).stdout, /preferences\s+suppress:preference_off\s+marketing: push=off/, "the next send's explain shows the preference that stopped it");

  // The JSON API for apps, with a user token: a transactional category cannot be switched off; stopping all marketing holds.
  const bearer = { authorization: `Bearer ${await new UserTokens(cfg.ws.secret).mint("bo", 600)}`, "content-type": "application/json" };
  const mine = (await (await fetch(`${cluster.httpUrl}/v1/preferences`, { headers: bearer })).json()) as { categories: { name: string; commercial: boolean }[] };
  t.same(mine.categories.filter((c) => c.commercial).map((c) => c.name), ["marketing"], "GET /v1/preferences lists the categories, marketing commercial");
  const refused = await fetch(`${cluster.httpUrl}/v1/preferences`, { method: "PATCH", headers: bearer, body: JSON.stringify({ categories: { security: { push: false } } }) });
  t.equal(refused.status, 400, "switching a transactional category off is refused");
  t.match(await refused.json(), { error: { field: "categories.security" } }, "naming the category");
  t.equal((await fetch(`${cluster.httpUrl}/v1/preferences`, { method: "PATCH", headers: bearer, body: JSON.stringify({ marketingOptOut: true }) })).status, 200, "bo stops all marketing");
  const stopped = await notify(nats.nc, { recipients: ["bo"], category: "marketing", channels: ["email"], content: { email: { subject: "More", text: "x" } } });
  t.ok(await done(stopped.id));
  t.match((await status(nats.nc, stopped.id)).lines, [{ user: "bo", outcome: "suppressed", reason: "marketing_opt_out" }], "a commercial send after it is suppressed");
  t.match((await nfx("explain", stopped.id, "bo")).stdout, /consent\s+suppress:marketing_opt_out/, "explain names the rule");

  // SMS: Twilio's inbound webhook, signed; STOP ends SMS for the number, START resumes it, HELP answers.
  const sms = cfg.gateways.sms.apps[0];
  const inbound = (body: string, authToken = sms.authToken) => postInboundSms({ url: `${cfg.engagement.baseUrl}/v1/webhooks/twilio/inbound`, accountSid: sms.accountSid, authToken, from: SAM, to: sms.from, body });
  const text = (body: string) => notify(nats.nc, { recipients: ["sam"], category: "transactional", channels: ["sms"], content: { sms: { text: body } } });
  const texts = () => rec.accepted("twilio").filter((d) => d.token === SAM).map((d) => d.body);
  t.equal((await inbound("STOP", "wrong-token")).status, 401, "an inbound message with a bad signature is refused");
  const s1 = await inbound(" stop ");
  t.match(s1, { status: 200, contentType: /text\/xml/ }, "STOP is answered with TwiML");
  t.match(s1.body, cfg.consent.smsStopText, "with the stop confirmation");
  const afterStop = await text("Your code is 123456");
  t.ok(await done(afterStop.id));
  t.match((await status(nats.nc, afterStop.id)).lines, [{ user: "sam", outcome: "suppressed", reason: "sms_opted_out" }], "an opted-out number is not sent to, even a transactional text");
  t.match((await nfx("explain", afterStop.id, "sam")).stdout, /sms_stop\s+suppress:sms_opted_out\s+the number replied STOP/, "explain shows the rule");
  t.same(texts(), [], "Twilio got nothing");
  t.match((await inbound("HELP")).body, cfg.consent.smsHelpText, "HELP gets the help text");
  t.match((await inbound("Start")).body, cfg.consent.smsStartText, "START resumes");
  const afterStart = await text("Your code is 654321");
  t.ok(await done(afterStart.id));
  t.same(texts(), ["Your code is 654321"], "and the next text arrives");

  // The consent log: every change, who and through what.
  const log = await consentLog(redis, shards, "sam");
  t.match(log.map((e) => [e.via, e.by, e.change]), [["sms_keyword", "STOP", { sms: "stopped", number: SAM }], ["sms_keyword", "START", { sms: "started", number: SAM }]], "sam's log: STOP then START");
  t.match((await consentLog(redis, shards, "bo")).map((e) => e.via), ["preference_page", "user_token"], "bo's: the page, then the app");
  t.match((await nfx("users", "consent", "ana")).stdout, /unsubscribe_link\s+marketing\s+\{"categories":\{"marketing":\{"email":false\}\}\}/, "nfx users consent prints ana's");
  const http = await fetch(`${cluster.httpUrl}/v1/users/ana/consent`, { headers: { authorization: `Bearer ${cluster.apiKey}` } });
  t.match(await http.json(), { user: "ana", entries: [{ via: "unsubscribe_link", by: "marketing" }] }, "and GET /v1/users/{id}/consent");
});
