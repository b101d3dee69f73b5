// `npm run demo`: boots a throw-away local cluster, seeds users, sends one notification through the API and prints the delivery report.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import type { CampaignStatus } from "../lib/campaign/campaigns.js";
import { API } from "../lib/core/subjects.js";
import type { DeviceRecord, UserRecord } from "../lib/core/types.js";
import { writeUsers } from "../lib/directory/directory.js";
import { callApi, notify, status } from "../lib/intake/api-client.js";
import type { NotificationStatus } from "../lib/tracking/status.js";
import { openClients } from "./cli-context.js";
import { formatCampaign, formatStatus } from "./format.js";
import { startLocalCluster } from "./local-cluster.js";
import { UP_PROCESSES } from "./roles.js";

/**
 * Deterministic demo users: 1-3 devices, iOS and Android mixed; every 37th
 * user opted out, every 53rd with no device, six in ten active within 30 days,
 * and a few tokens the sandboxes answer as unregistered (`gone-`) or malformed (`bad-`).
 */
export function demoUsers(count: number, now = Date.now()): UserRecord[] {
  const out: UserRecord[] = [];
  for (let i = 0; i < count; i++) {
    const id = `demo-${String(i).padStart(6, "0")}`;
    const n = i % 53 === 0 ? 0 : 1 + (i % 3);
    const devices = Array.from({ length: n }, (_, d) => {
      const ios = (i + d) % 2 === 0;
      const prefix = i % 97 === 5 && d === 0 ? "gone-" : i % 89 === 7 && d === 0 ? "bad-" : "";
      const platform: DeviceRecord["platform"] = ios ? "ios" : "android";
      return { id: `${ios ? "iphone" : "pixel"}-${d}`, platform, token: `${prefix}${ios ? "a" : "f"}${i.toString(16).padStart(8, "0")}${d}` };
    });
    // Six in ten active within the last 30 days, the rest 40-100 days ago.
    const lastActive = now - ((i % 10) < 6 ? (i % 30) * 86_400_000 : (40 + (i % 60)) * 86_400_000);
    out.push({ id, locale: ["en-US", "de-DE", "ja-JP", "pt-BR"][i % 4], timezone: ["America/New_York", "Europe/Berlin", "Asia/Tokyo", "America/Sao_Paulo"][i % 4], optedOut: i % 37 === 3, lastActive, devices });
  }
  return out;
}

const tally = (s: NotificationStatus, outcome: string, by: "reason" | "channel"): string =>
  Object.entries(
    s.lines.filter((l) => l.outcome === outcome).reduce<Record<string, number>>((a, l) => ((a[l[by] ?? "-"] = (a[l[by] ?? "-"] ?? 0) + 1), a), {}),
  )
    .map(([k, v]) => `${k} ${v}`)
    .join(", ");

/** Runs the demo; resolves with the process exit code (0 when every send nfx reports arrived exactly once). */
export async function runDemo(o: { users: number }): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), "nfx-demo-"));
  const t0 = Date.now();
  console.log("nfx demo: starting a local cluster (nats-server, redis-server, sandbox APNs + FCM, one process per role, lane roles one per lane class)...");
  const cluster = await startLocalCluster({
    dataDir: dir, natsPort: 0, redisPort: 0, httpPort: 0, persist: false,
    sandbox: {}, roles: UP_PROCESSES,
    overrides: { log: { level: "warn" } },
    onLine: (role, line) => {
      if (/"level":(50|60)/.test(line)) console.error(`[${role}] ${line}`);
    },
  });
  try {
    const cfg = cluster.cfg;
    console.log(`  up in ${((Date.now() - t0) / 1000).toFixed(1)} s: nats ${cluster.nats.url}, redis ${cluster.redis.url}, sandbox apns :${cluster.sandbox!.ports.apns} fcm :${cluster.sandbox!.ports.fcm}, processes ${UP_PROCESSES.join(", ")}`);
    const clients = await openClients(cfg, "nfx-demo");
    const { nats, redis } = clients;
    const users = demoUsers(o.users);
    await writeUsers(redis, cfg.cluster.shards, users);
    console.log(`  seeded ${users.length} users with ${users.reduce((a, u) => a + u.devices.length, 0)} devices`);
    console.log(`\nTransactional: "Your order shipped" to 2,000 explicit recipients, priority high`);

    const t1 = Date.now();
    const { id } = await notify(nats.nc, {
      recipients: users.slice(0, 2000).map((u) => u.id), priority: "high", category: "transactional",
      content: { push: { title: "Your order shipped", body: "Package 1Z999 is on its way.", data: { order: "1Z999" } } },
      collapseKey: "order-1Z999",
    });
    console.log(`  notification ${id} accepted in ${Date.now() - t1} ms`);
    let s = await status(nats.nc, id);
    while (!s.complete && Date.now() - t1 < 60_000) {
      await new Promise((r) => setTimeout(r, 200));
      s = await status(nats.nc, id);
    }
    const secs = (Date.now() - t1) / 1000;
    const sb = cluster.sandbox!.recorder.stats();
    console.log("\nDelivery report");
    console.log(`  ${s.recipients} recipients, finished ${s.complete ? "in" : "NOT within"} ${secs.toFixed(2)} s`);
    console.log(`  sent        ${s.counts.sent}  (${tally(s, "sent", "channel")}): accepted by APNs/FCM`);
    console.log(`  delivered   ${s.counts.delivered}  (APNs and FCM give no delivery receipts: a push send stays "sent"; apps can report delivery with POST /v1/events)`);
    console.log(`  failed      ${s.counts.failed}  (${tally(s, "failed", "reason")})`);
    console.log(`  suppressed  ${s.counts.suppressed} users  (${tally(s, "suppressed", "reason")})`);
    if (s.counts.shed > 0) console.log(`  shed        ${s.counts.shed}  (${tally(s, "shed", "reason")}): dropped under overload, past their deadline`);
    console.log(`  sandbox APNs accepted ${sb.apns.accepted} (duplicates ${sb.apns.duplicates}), rejected ${sb.apns.rejected}`);
    console.log(`  sandbox FCM  accepted ${sb.fcm.accepted} (duplicates ${sb.fcm.duplicates}), rejected ${sb.fcm.rejected}`);
    const ok = s.complete && sb.apns.accepted + sb.fcm.accepted === s.counts.sent && sb.apns.duplicates + sb.fcm.duplicates === 0;
    console.log(`  check: every send nfx reports as sent arrived at a sandbox exactly once: ${ok ? "OK" : "MISMATCH"}`);
    console.log(`\nFirst lines of \`nfx status ${id}\`:\n`);
    console.log(formatStatus(s, 8));

    // Part two: a campaign to everyone active in the last 30 days, expanded at 4,000 users/s.
    console.log(`\nCampaign: "active_30d" (marketing, bulk), expansion limited to 4,000 users/s`);
    const before = { apns: sb.apns.accepted, fcm: sb.fcm.accepted };
    const camp = await notify(nats.nc, {
      segment: "active_30d", category: "marketing", content: { push: { title: "The sale starts now", body: "Everything 20% off until midnight." } }, campaign: { rate: 4000 },
    });
    let cs: CampaignStatus | null = null;
    const t2 = Date.now();
    while (Date.now() - t2 < 120_000) {
      cs = await callApi<CampaignStatus>(nats.nc, API.campaign, { id: camp.id, action: "status" }).catch(() => null);
      if (cs) console.log(`  ${((Date.now() - t2) / 1000).toFixed(1)}s  listed ${cs.scanned}/${cs.total}  decided ${cs.counters.decided}  queued ${cs.counters.queued}  sent ${cs.counters.sent}  ${cs.state}`);
      if (cs?.complete) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    const sb2 = cluster.sandbox!.recorder.stats();
    const campAccepted = sb2.apns.accepted - before.apns + sb2.fcm.accepted - before.fcm;
    console.log("");
    // No status answered within the two minutes (the campaign actor never came up): said so, and the check fails.
    console.log(cs ? formatCampaign(cs) : `  campaign ${camp.id}: no status answered within 120 s`);
    const ok2 = Boolean(cs?.complete) && campAccepted === cs!.counters.sent && sb2.apns.duplicates + sb2.fcm.duplicates === 0;
    console.log(`  check: the sandboxes accepted ${campAccepted} campaign sends, nfx counted ${cs?.counters.sent} sent, duplicates ${sb2.apns.duplicates + sb2.fcm.duplicates}: ${ok2 ? "OK" : "MISMATCH"}`);
    console.log("\nWatch a cluster live: `nfx up`, then open the status page it prints, or run `nfx top`.");
    await clients.close();
    return ok && ok2 ? 0 : 1;
  } finally {
    await cluster.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
