// The web status page in headless Chromium during a running campaign: progress and per-channel rates show live; a screenshot is saved.
import { existsSync, mkdirSync, statSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";
import t from "tap";

import type { UserRecord } from "../../lib/core/types.js";
import { writeUsers } from "../../lib/directory/directory.js";
import { listProcesses } from "../../lib/infra/processes.js";
import { notify } from "../../lib/intake/api-client.js";
import { clientsFor, startTestCluster } from "../helpers/cluster.js";

const CHROMIUM = "/usr/bin/chromium";
/** Where the screenshot goes (kept out of git). */
const SHOT = fileURLToPath(new URL("../../../test-results/status-page.png", import.meta.url));

t.test("the status page shows a campaign's progress and send rates while it runs", async (t) => {
  t.ok(existsSync(CHROMIUM), `${CHROMIUM} is installed (npm test installs Debian's chromium)`);
  // The gateways in processes of their own: the cluster table has three rows, one naming the other roles together.
  const cluster = await startTestCluster(t, { own: ["gateway-apns", "gateway-fcm"], overrides: { campaign: { chunkSize: 250 } } });
  const { nats, redis } = await clientsFor(t, cluster.cfg);
  const users: UserRecord[] = Array.from({ length: 6000 }, (_, i) => ({
    id: `s${i}`,
    lastActive: Date.now(),
    devices: [{ id: `d${i}`, platform: i % 2 ? "android" : "ios", token: `${i % 25 === 0 ? "gone" : "tok"}-${i}-abcdef` }],
  }));
  await writeUsers(redis, cluster.cfg.cluster.shards, users);

  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--headless=new"] });
  t.teardown(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors: string[] = [];
  page.on("pageerror", (e) => void errors.push(String(e)));

  // Someone who never used the CLI: a wrong key is refused in words, the right one shows the cluster.
  await page.goto(`${cluster.httpUrl}/status#key=wrong-key-0123456789`);
  await page.locator("#auth-msg").filter({ hasText: "The API key was refused" }).waitFor({ timeout: 10_000 });
  t.pass("a wrong key is refused in plain words");
  await page.goto(`${cluster.httpUrl}/status#key=${cluster.apiKey}`);
  await page.reload();
  await page.waitForFunction(() => document.getElementById("conn")?.textContent === "live", undefined, { timeout: 10_000 });
  t.pass("the page is live");

  // A campaign paced at 600 users/s runs about ten seconds.
  const { id } = await notify(nats.nc, { segment: "all", category: "marketing", content: { push: { title: "Sale", body: "Starts now" } }, campaign: { rate: 600 } });
  const block = page.locator(`.campaign[data-id="${id}"]`);
  await block.waitFor({ timeout: 15_000 });
  t.pass("the campaign appears");
  // Mid-run: progress between 0 and 100, and push sends per second above zero.
  await page.waitForFunction(
    (cid) => {
      const bar = document.querySelector(`.campaign[data-id="${cid}"] .progress`);
      const pct = Number(bar?.getAttribute("aria-valuenow") ?? 0);
      const rate = Number((document.getElementById("rate-push")?.textContent ?? "").replace(/[^0-9]/g, "") || 0);
      return pct > 10 && pct < 100 && rate > 0;
    },
    id,
    { timeout: 30_000, polling: 200 },
  );
  const midPct = Number(await block.locator(".progress").getAttribute("aria-valuenow"));
  const rateText = (await page.locator("#rate-push").textContent()) ?? "";
  t.ok(midPct > 10 && midPct < 100, `progress shows mid-run: ${midPct}%`);
  t.match(rateText, /^[1-9][0-9,]*\/s$/, `push sends per second show: ${rateText}`);
  await new Promise((r) => setTimeout(r, 2500)); // a few more chart points
  t.ok(await page.locator("#chart-push .line-sent").count(), "the push chart draws its sent line");
  mkdirSync(fileURLToPath(new URL("../../../test-results/", import.meta.url)), { recursive: true });
  await page.screenshot({ path: SHOT });
  t.ok(statSync(SHOT).size > 10_000, `screenshot saved: ${SHOT}`);

  // To the end: complete, 100%, and the failed reasons readable.
  await block.locator('[data-f="complete"]').waitFor({ state: "visible", timeout: 60_000 });
  t.equal(await block.locator(".progress").getAttribute("aria-valuenow"), "100", "100% when complete");
  const sent = Number(((await block.locator('.stat[data-stat="sent"] .stat-value').textContent()) ?? "").replace(/[^0-9]/g, ""));
  const gone = users.filter((_, i) => i % 25 === 0).length;
  t.equal(sent, users.length - gone, "the page's sent count is every device but the gone ones");
  t.match(await block.locator('details.reasons[data-reasons="failed"]').textContent(), /Unregistered|UNREGISTERED/, "the failure reasons name the provider's answer");
  const registered = await listProcesses(nats);
  t.equal(await page.locator("#processes-body tr").count(), registered.length, `the cluster table lists the ${registered.length} processes`);
  t.ok(registered.length >= 3, "(at least the two gateways and the rest)");
  const table = (await page.locator("#processes-body").textContent()) ?? "";
  t.ok(["gateway-apns", "gateway-fcm", "shard", "tracker"].every((r) => table.includes(r)), "naming their roles");
  t.same(errors, [], "no page errors");
});
