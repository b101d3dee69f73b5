// The demo page in headless Chromium (Debian's, driven by playwright-core): a notification sent with `nfx send` appears live, is marked read, and a screenshot is saved.
import { existsSync, mkdirSync, statSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";
import t from "tap";

import { writeUsers } from "../../lib/directory/directory.js";
import { status } from "../../lib/intake/api-client.js";
import { nfxRunner } from "../helpers/cli.js";
import { clientsFor, eventually, startTestCluster } from "../helpers/cluster.js";

const CHROMIUM = "/usr/bin/chromium";
/** Where the screenshot goes (kept out of git). */
const SHOT = fileURLToPath(new URL("../../../test-results/demo-inbox.png", import.meta.url));

t.test("the demo page shows a live notification and marks it read", async (t) => {
  t.ok(existsSync(CHROMIUM), `${CHROMIUM} is installed (npm test installs Debian's chromium)`);
  const cluster = await startTestCluster(t, { overrides: { ingest: { channels: ["push", "inapp"] } } });
  const { nats, redis } = await clientsFor(t, cluster.cfg);
  await writeUsers(redis, cluster.cfg.cluster.shards, [{ id: "zoe", devices: [{ id: "zoe-phone", platform: "ios", token: "tok-zoe" }] }]);
  const nfx = nfxRunner({ NFX_CONFIG: cluster.configFile });
  const token = (await nfx("token", "zoe", "--ttl", "600")).stdout.trim();

  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--headless=new"] });
  t.teardown(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 900, height: 640 } });
  const errors: string[] = [];
  page.on("pageerror", (e) => void errors.push(String(e)));
  await page.goto(`${cluster.wsUrl}/demo?token=${token}`);
  await page.waitForFunction(() => document.getElementById("status")?.textContent === "connected", undefined, { timeout: 15_000 });
  t.pass("the page connected");

  const id = (await nfx("send", "--to", "zoe", "--category", "social", "--title", "Sale starts", "--body", "Up to 50% off today", "--channels", "inapp", "--payload", '{"url":"/sale"}')).stdout.trim();
  const li = page.locator(`#inbox li[data-id="${id}"]`);
  await li.waitFor({ timeout: 15_000 });
  t.match(await li.textContent(), /Sale starts[\s\S]*Up to 50% off today[\s\S]*\/sale/, "the notification appears with its title, body and payload");
  t.equal(await li.getAttribute("class"), "unread", "unread at first");
  t.equal(await page.locator("#unread").textContent(), "1", "unread count 1");
  t.match(await page.locator("#toast").textContent(), /Sale starts/, "and as a toast");

  await li.locator(".mark-read").click();
  await page.waitForFunction(() => document.getElementById("unread")?.textContent === "0", undefined, { timeout: 10_000 });
  t.notMatch((await li.getAttribute("class")) ?? "", /unread/, "marked read on the page");
  mkdirSync(fileURLToPath(new URL("../../../test-results/", import.meta.url)), { recursive: true });
  await page.screenshot({ path: SHOT, fullPage: true });
  t.ok(statSync(SHOT).size > 5000, `screenshot saved to ${SHOT}`);

  t.ok(await eventually(async () => (await status(nats.nc, id)).complete, 15_000), "the notification completes");
  t.match((await status(nats.nc, id)).lines, [{ user: "zoe", channel: "inapp", outcome: "delivered" }], "delivered in-app (acknowledged by the page)");
  const inbox = (await (await fetch(`${cluster.wsUrl}/v1/inbox`, { headers: { authorization: `Bearer ${token}` } })).json()) as { unread: number; items: { id: string; read: boolean }[] };
  t.match(inbox, { unread: 0, items: [{ id, read: true }] }, "the server's inbox has it read");
  t.same(cluster.sandbox!.recorder.accepted("apns").filter((d) => d.nid === id), [], "no push was needed");
  t.same(errors, [], "no page errors");
});
