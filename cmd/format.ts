// Text renderings of status and sandbox reports for the CLI and the demo.
import type { CampaignStatus } from "../lib/campaign/campaigns.js";
import { outstanding, shedByReason, total } from "../lib/campaign/counters.js";
import { hhmm } from "../lib/directory/quiet-hours.js";
import type { NotificationStatus } from "../lib/tracking/status.js";

/**
 * What `sent` and `delivered` mean, printed under the counts whenever some
 * sends are not (yet) confirmed: a push send stays `sent` for good, since
 * APNs and FCM give no delivery receipts. Null when every send is confirmed.
 * `pushOnly` (every send went to APNs/FCM) picks the shorter, definite wording.
 */
export function sentHint(sent: number, delivered: number, pushOnly: boolean): string | null {
  if (sent === 0 || delivered >= sent) return null;
  return pushOnly
    ? "note: push only: sent = accepted by APNs/FCM, which give no delivery receipts, so push stays at sent (apps can report delivered with POST /v1/events)"
    : "note: sent = accepted by the provider; delivered = confirmed by the provider (SendGrid, Twilio) or the app (in-app ack, POST /v1/events); APNs/FCM confirm nothing, so push stays at sent";
}

/** The `nfx status` report: a summary line, then one line per recipient or device. */
export function formatStatus(s: NotificationStatus, maxLines = Infinity): string {
  const c = s.counts;
  const sentVia = s.lines.filter((l) => l.outcome === "sent" || l.outcome === "delivered").map((l) => l.channel);
  const pushOnly = sentVia.length > 0 && sentVia.every((ch) => ch === "apns" || ch === "fcm");
  const hint = sentHint(c.sent, c.delivered, pushOnly);
  const out = [
    `notification ${s.id}  priority=${s.priority} category=${s.category} recipients=${s.recipients} created=${new Date(s.createdAt).toISOString()}`,
    `accepted=${c.accepted} sent=${c.sent} delivered=${c.delivered} failed=${c.failed} expired=${c.expired} queued=${c.queued} suppressed=${c.suppressed} deferred=${c.deferred}${c.digested ? ` digested=${c.digested}` : ""} cancelled=${c.cancelled} fallback=${c.fallback} shed=${c.shed} pending=${c.pending}  ${s.complete ? "complete" : "in progress"}`,
    ...(hint ? [hint] : []),
    ...(c.shed > 0 ? [`shed under overload: ${reasons(c.shedReasons)}`] : []),
    `opened=${c.opened} clicked=${c.clicked}`,
  ];
  if (s.lines.length > 0) out.push("", "USER                 CHANNEL  DEVICE           OUTCOME     DETAIL");
  if (s.campaign) out.splice(2 + (hint ? 1 : 0) + (c.shed > 0 ? 1 : 0), 0, "", formatCampaign(s.campaign));
  for (const l of s.lines.slice(0, maxLines)) {
    out.push(
      `${l.user.padEnd(20)} ${(l.channel ?? "-").padEnd(8)} ${(l.device ?? "-").padEnd(16)} ${l.outcome.padEnd(11)} ${l.reason ?? l.providerId ?? ""}`.trimEnd(),
    );
  }
  if (s.lines.length > maxLines) out.push(`... ${s.lines.length - maxLines} more lines (nfx status ${s.id})`);
  return out.join("\n");
}

/** `reason n, reason n` sorted by count. */
export const reasons = (m: Record<string, number>): string =>
  Object.entries(m).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(", ") || "none";

/** One-paragraph text of a campaign's status. */
export function formatCampaign(s: CampaignStatus): string {
  const c = s.counters;
  if (s.path === "read") {
    return [
      `campaign ${s.id}  segment=${s.segment}  state=${s.state === "expanded" ? "stored" : s.state}  path=broadcast (fan-out on read)`,
      `broadcast  stored once for an audience of ${s.total} listed users; no per-recipient sends or inbox writes: each member's inbox merges it when read,`,
      `           with opt-out, category preferences and expiry applied then (nfx explain ${s.id} <user>)`,
      `engagement opened ${c.opened}, clicked ${c.clicked}`,
    ].join("\n");
  }
  return [
    `campaign ${s.id}  segment=${s.segment}  state=${s.state}${s.complete ? " (complete)" : ""}  rate=${s.rate || "unlimited"}  path=fan-out on write`,
    `expansion  ${s.scanned}/${s.total} users listed, ${s.members} in the segment, ${s.chunks} chunks, ${s.shardsDone}/${s.shards} shards done`,
    ...(s.throttle ? [`throttled  ${(s.throttle.ms / 1000).toFixed(1)} s held back for urgent traffic (least factor ${s.throttle.min.toFixed(2)}, last ${new Date(s.throttle.at).toISOString()})`] : []),
    `recipients accepted ${c.accepted}, decided ${c.decided}, deferred ${c.deferred}`,
    `sends      queued ${c.queued}, sent ${c.sent}, delivered ${c.delivered}, failed ${total(c.failed)} (${reasons(c.failed)}), expired ${c.expired}, fallback ${c.fallback}, in flight ${outstanding(c)}`,
    ...(c.sent > c.delivered ? [`           ${sentHint(c.sent, c.delivered, false)!.replace(/^note: /, "")}`] : []),
    `engagement opened ${c.opened}, clicked ${c.clicked}`,
    ...wavesOf(s),
    `suppressed ${total(c.suppressed)} (${reasons(c.suppressed)})`,
    `cancelled  ${c.cancelled} recipients, ${c.cancelledSends} queued sends`,
    `shed       ${total(c.shed)} recipients, ${total(c.shedSends)} queued sends (${reasons(shedByReason(c))})`,
  ].join("\n");
}


/**
 * The waves of a campaign's deferred recipients, by release time: local-time delivery (each labelled with the UTC
 * offset whose local time it is) or quiet hours; at most 12 lines, then the next release still to come.
 */
export function wavesOf(s: CampaignStatus, now = Date.now()): string[] {
  const waves = Object.entries(s.counters.waves ?? {}).map(([k, w]) => ({ at: Number(k), ...w })).sort((a, b) => a.at - b.at);
  if (waves.length === 0) return [];
  const label = (at: number): string => {
    if (!s.deliverAt) return "";
    let off = (s.deliverAt.localTime - Math.floor((at % 86_400_000) / 60_000) + 1440) % 1440;
    if (off > 720) off -= 1440;
    const a = Math.abs(off);
    return ` (${hhmm(s.deliverAt.localTime)} at UTC${off < 0 ? "-" : "+"}${hhmm(a)})`;
  };
  const next = waves.find((w) => w.released < w.held && w.at >= now - 60_000);
  return [
    `waves      ${waves.length} release time(s), ${waves.reduce((a, w) => a + w.held, 0)} held, ${waves.reduce((a, w) => a + w.released, 0)} released${next ? `; next ${new Date(next.at).toISOString()}` : ""}`,
    ...waves.slice(0, 12).map((w) => `           ${new Date(w.at).toISOString()}${label(w.at)}: held ${w.held}, released ${w.released}`),
    ...(waves.length > 12 ? [`           … ${waves.length - 12} more`] : []),
  ];
}

/** One delivery log line as text. */
export function formatLogLine(l: { at: number; user: string; notification?: string; channel?: string; device?: string; outcome: string; reason?: string; providerId?: string }): string {
  return `${new Date(l.at).toISOString()}  ${(l.notification ?? l.user).padEnd(28)} ${(l.channel ?? "-").padEnd(6)} ${(l.device ?? "-").padEnd(20)} ${l.outcome.padEnd(10)} ${l.reason ?? l.providerId ?? ""}`.trimEnd();
}
