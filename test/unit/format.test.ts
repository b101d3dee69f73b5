// The CLI's text reports say what push's `sent` means: APNs and FCM give no delivery receipts, so push stays at sent.
import t from "tap";

import { formatCampaign, formatStatus, sentHint } from "../../cmd/format.js";
import type { CampaignStatus } from "../../lib/campaign/campaigns.js";
import { emptyCounters } from "../../lib/campaign/counters.js";
import type { NotificationStatus } from "../../lib/tracking/status.js";

const status = (lines: NotificationStatus["lines"]): NotificationStatus => {
  const counts = { accepted: lines.length, sent: 0, delivered: 0, failed: 0, expired: 0, queued: 0, suppressed: 0, deferred: 0, digested: 0, cancelled: 0, fallback: 0, shed: 0, shedReasons: {} as Record<string, number>, opened: 0, clicked: 0, pending: 0 };
  for (const l of lines) {
    if (l.outcome === "sent" || l.outcome === "delivered") counts.sent++;
    if (l.outcome === "delivered") counts.delivered++;
  }
  return { id: "n_1", priority: "high", category: "transactional", createdAt: 0, expiresAt: 1, recipients: lines.length, counts, complete: true, lines, path: "write" };
};

t.test("nfx status: a push-only notification says push stays at sent", async (t) => {
  const out = formatStatus(status([{ user: "ana", channel: "apns", device: "p", outcome: "sent" }, { user: "ben", channel: "fcm", device: "q", outcome: "sent" }]));
  t.match(out, "sent=2 delivered=0", "the counts as before");
  t.match(out, /note: push only: sent = accepted by APNs\/FCM, which give no delivery receipts/, "and what they mean");
});

t.test("nfx status: mixed channels get the general note; all confirmed gets none", async (t) => {
  const mixed = formatStatus(status([{ user: "ana", channel: "apns", device: "p", outcome: "sent" }, { user: "ana", channel: "email", device: "e", outcome: "delivered" }]));
  t.match(mixed, /note: sent = accepted by the provider; delivered = confirmed by the provider/);
  t.notMatch(mixed, "push only");
  const confirmed = formatStatus(status([{ user: "ana", channel: "email", device: "e", outcome: "delivered" }]));
  t.notMatch(confirmed, "note:", "nothing to explain when every send is confirmed");
  t.equal(sentHint(0, 0, true), null, "nor when nothing was sent");
});

t.test("campaign status explains sent under the sends line", async (t) => {
  const c = { ...emptyCounters(), queued: 10, sent: 10, decided: 5, accepted: 5 };
  const s: CampaignStatus = { id: "n_2", segment: "all", state: "expanded", createdAt: 0, rate: 0, total: 5, scanned: 5, members: 5, chunks: 1, shardsDone: 1, shards: 1, counters: c, throttle: null, complete: true, path: "write" };
  const out = formatCampaign(s);
  t.notMatch(out, "throttled", "no throttle line when admission never held it back");
  t.match(formatCampaign({ ...s, throttle: { ms: 12_345, min: 0.05, at: Date.UTC(2026, 0, 2, 3, 4, 5) } }), "throttled  12.3 s held back for urgent traffic (least factor 0.05, last 2026-01-02T03:04:05.000Z)");
  t.match(out, "sent 10, delivered 0, failed 0");
  t.match(out, /\n {11}sent = accepted by the provider; delivered = confirmed/, "the meaning, right under it");
  t.notMatch(formatCampaign({ ...s, counters: { ...c, delivered: 10 } }), "sent = accepted", "not when every send was confirmed");
});

t.test("nfx status and the campaign paragraph show what was shed, by reason", async (t) => {
  const s = status([{ user: "ana", outcome: "shed", reason: "max_delay" }, { user: "ben", channel: "apns", device: "p", outcome: "shed", reason: "expired" }]);
  s.counts.shed = 2;
  s.counts.shedReasons = { max_delay: 1, expired: 1 };
  const out = formatStatus(s);
  t.match(out, "shed=2", "counted in the summary line");
  t.match(out, /shed under overload: (max_delay 1, expired 1|expired 1, max_delay 1)/, "with its reasons");
  t.match(out, /ana .* shed +max_delay/, "and a line per recipient");
  const c = { ...emptyCounters(), decided: 3, queued: 2, sent: 1, shed: { max_delay: 1 }, shedSends: { max_delay: 1 } };
  const camp: CampaignStatus = { id: "n_3", segment: "all", state: "expanded", createdAt: 0, rate: 0, total: 3, scanned: 3, members: 3, chunks: 1, shardsDone: 1, shards: 1, counters: c, throttle: null, complete: true, path: "write" };
  t.match(formatCampaign(camp), "shed       1 recipients, 1 queued sends (max_delay 2)");
});

t.test("a broadcast's status names its path: stored once, merged into inboxes when read", async (t) => {
  const c = { ...emptyCounters(), opened: 7 };
  const s: CampaignStatus = { id: "n_4", segment: "topic:news", state: "expanded", createdAt: 0, rate: 0, total: 50_000, scanned: 0, members: 0, chunks: 0, shardsDone: 0, shards: 64, counters: c, throttle: null, complete: true, path: "read" };
  const out = formatCampaign(s);
  t.match(out, "path=broadcast (fan-out on read)");
  t.match(out, "stored once for an audience of 50000 listed users");
  t.match(out, "engagement opened 7");
  t.notMatch(out, "expansion", "no expansion line: nothing was expanded");
  t.match(formatCampaign({ ...s, path: "write" }), "path=fan-out on write", "the other path says so too");
});
