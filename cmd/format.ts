// Text renderings of status and sandbox reports for the CLI and the demo.
import type { NotificationStatus } from "../lib/status.js";

/** The `nfx status` report: a summary line, then one line per recipient or device. */
export function formatStatus(s: NotificationStatus, maxLines = Infinity): string {
  const c = s.counts;
  const out = [
    `notification ${s.id}  priority=${s.priority} category=${s.category} recipients=${s.recipients} created=${new Date(s.createdAt).toISOString()}`,
    `sent=${c.sent} failed=${c.failed} queued=${c.queued} suppressed=${c.suppressed} pending=${c.pending}  ${s.complete ? "complete" : "in progress"}`,
    "",
    "USER                 CHANNEL  DEVICE           OUTCOME     DETAIL",
  ];
  for (const l of s.lines.slice(0, maxLines)) {
    out.push(
      `${l.user.padEnd(20)} ${(l.channel ?? "-").padEnd(8)} ${(l.device ?? "-").padEnd(16)} ${l.outcome.padEnd(11)} ${l.reason ?? l.providerId ?? ""}`.trimEnd(),
    );
  }
  if (s.lines.length > maxLines) out.push(`... ${s.lines.length - maxLines} more lines (nfx status ${s.id})`);
  return out.join("\n");
}
