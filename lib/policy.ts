// Per-recipient policy: the ordered rules that decide whether, when and where one user is notified, each leaving a step in the decision trail.
import type { Config } from "./config.js";
import type { DedupWindow } from "./dedup-window.js";
import { parseHhmm, quietUntil, type QuietWindow } from "./quiet-hours.js";
import type { Cap, RateBuckets } from "./rate-buckets.js";
import type { Channel, Priority } from "./subjects.js";
import type { ContentChannel, NotificationBrief, UserRecord } from "./types.js";

/** Policy settings of one category. */
export interface CategoryPolicy {
  /** Frequency cap per user; none means uncapped. */
  cap?: Cap;
  /** Route to in-app instead of push while the user is online. */
  presenceRouting: boolean;
  /** Respect quiet hours (critical never does). */
  quietHours: boolean;
}

/** Everything the rules read besides the user and the notification. Built once from config. */
export interface PolicyConfig {
  categories: Readonly<Record<string, CategoryPolicy>>;
  /** Quiet hours of users who set none; null for none. */
  defaultQuietHours: QuietWindow | null;
  /** Channels tried one at a time, in order, when the notification's own channels reach nobody. */
  fallback: Readonly<Record<Priority, readonly ContentChannel[]>>;
  /** Content channels that have a gateway in this cluster. */
  available: ReadonlySet<ContentChannel>;
}

/** The per-user state the owner of a shard keeps (and checkpoints). */
export interface PolicyState {
  buckets: RateBuckets;
  dedup: DedupWindow;
}

/** One device-level destination. `token` is the device token, email address or phone number. */
export interface Target {
  channel: Channel;
  device: string;
  token: string;
}

export type Verdict =
  | { kind: "suppress"; reason: string }
  | { kind: "defer"; until: number }
  | { kind: "send"; targets: Target[] };

/**
 * A decision trail being written: one line per rule, `rule|verdict|values it
 * saw...`. A string (not arrays) because a campaign writes one per recipient:
 * concatenation is the cheapest form, and identical trails in a chunk are
 * stored once (lib/trails.ts).
 */
export interface Trail {
  s: string;
}

/** What the rules know about one recipient. */
export interface Recipient {
  user: UserRecord;
  /** Holds a live in-app connection (presence key present). */
  online: boolean;
}

/** The notification-level inputs of a decision. */
export interface DecideContext {
  n: NotificationBrief;
  now: number;
  /** This chunk is a release of sends deferred by quiet hours: that rule has already waited. */
  released: boolean;
}

const NO_CATEGORY: CategoryPolicy = { presenceRouting: false, quietHours: true };

/** Content channel of a delivery channel. */
export const contentOf = (c: Channel): ContentChannel => (c === "apns" || c === "fcm" ? "push" : c);

/** The destinations `user` has on content channel `ch` (push: one per device with a token). */
export function targetsOn(ch: ContentChannel, r: Recipient): Target[] {
  const u = r.user;
  switch (ch) {
    case "push": {
      const out: Target[] = [];
      for (const d of u.devices ?? []) {
        if (!d.token) continue;
        if (d.platform === "ios") out.push({ channel: "apns", device: d.id, token: d.token });
        else if (d.platform === "android") out.push({ channel: "fcm", device: d.id, token: d.token });
      }
      return out;
    }
    case "email":
      return u.email ? [{ channel: "email", device: "email", token: u.email }] : [];
    case "sms":
      return u.phone ? [{ channel: "sms", device: "sms", token: u.phone }] : [];
    case "inapp":
      return r.online ? [{ channel: "inapp", device: "inapp", token: "" }] : [];
  }
}

/** Dedup keys of a delivered decision: the notification for this user, and its collapse key for this user. */
export const dedupKeys = (n: NotificationBrief, user: string): string[] => (n.collapseKey ? [`n|${n.id}|${user}`, `c|${n.collapseKey}|${user}`] : [`n|${n.id}|${user}`]);

/**
 * Decides one recipient. Rules in order, the first that says no decides:
 * expiry; global opt-out; preferences per category × channel; quiet hours in
 * the user's zone (defer to the window's end, or drop when the notification
 * expires first); frequency cap; dedup window (notification, and collapse
 * key); presence routing (online → in-app instead of push); the route: the
 * notification's own channels, then the priority's fallback channels one at a
 * time, first that reaches the user. Critical skips quiet hours and caps but
 * never a channel the user turned off. A "send" takes a cap token and records
 * the dedup keys; nothing else changes state. Steps are appended to `trail`
 * when given.
 */
export function decideUser(cfg: PolicyConfig, st: PolicyState, ctx: DecideContext, r: Recipient, trail?: Trail): Verdict {
  const { n, now } = ctx;
  const u = r.user;
  const cat = cfg.categories[n.category] ?? NO_CATEGORY;
  const critical = n.priority === "critical";
  const step = (rule: string, verdict: string, ...seen: (string | number)[]): void => {
    if (trail) trail.s += seen.length ? `${rule}|${verdict}|${seen.join("|")}\n` : `${rule}|${verdict}\n`;
  };
  const suppress = (rule: string, reason: string, ...seen: (string | number)[]): Verdict => {
    step(rule, `suppress:${reason}`, ...seen);
    return { kind: "suppress", reason };
  };

  if (n.expiresAt <= now) return suppress("expiry", "expired", n.expiresAt);
  step("expiry", "pass", n.expiresAt);

  if (u.optedOut) return suppress("opt_out", "opted_out", "opted out of everything");
  step("opt_out", "pass", "not opted out");

  // Channels in play: the notification's own, then the fallback ones (and in-app for presence routing), those with a gateway.
  const prefs = u.preferences?.categories?.[n.category];
  const candidates: ContentChannel[] = [];
  const extra = cat.presenceRouting ? [...cfg.fallback[n.priority], "inapp" as const] : cfg.fallback[n.priority];
  for (const ch of [...n.channels, ...extra]) if (cfg.available.has(ch) && !candidates.includes(ch)) candidates.push(ch);
  if (candidates.length === 0) return suppress("preferences", "no_wanted_channel", n.channels.join(","));
  const allowed = prefs ? candidates.filter((ch) => prefs[ch] !== false) : candidates;
  if (allowed.length === 0) return suppress("preferences", "preference_off", `${n.category}: ${candidates.map((c) => `${c}=off`).join(",")}`);
  step("preferences", "pass", allowed.join(","));

  if (critical) step("quiet_hours", "skip", "critical");
  else if (ctx.released) step("quiet_hours", "skip", "released after quiet hours");
  else if (!cat.quietHours) step("quiet_hours", "skip", `category ${n.category} ignores quiet hours`);
  else {
    const w = u.quietHours ?? cfg.defaultQuietHours;
    if (!w) step("quiet_hours", "pass", "none set");
    else {
      const tz = u.timezone ?? "UTC";
      const q = quietUntil(tz, w, now);
      if (q.until !== null) {
        if (n.expiresAt <= q.until) return suppress("quiet_hours", "expires_in_quiet_hours", tz, q.local, w.start, w.end, q.until);
        step("quiet_hours", "defer", tz, q.local, w.start, w.end, q.until);
        return { kind: "defer", until: q.until };
      }
      step("quiet_hours", "pass", tz, q.local, w.start, w.end);
    }
  }

  if (critical) step("frequency_cap", "skip", "critical");
  else if (!cat.cap) step("frequency_cap", "skip", "uncapped");
  else {
    const b = st.buckets.take(u.id, n.category, cat.cap, false);
    if (!b.ok) return suppress("frequency_cap", "frequency_cap", cat.cap.count, cat.cap.periodSec, b.retryInMs);
    step("frequency_cap", "pass", cat.cap.count, cat.cap.periodSec, b.left);
  }

  const keys = dedupKeys(n, u.id);
  if (st.dedup.has(keys[0]!)) return suppress("dedup", "duplicate", keys[0]!);
  if (keys[1] && st.dedup.has(keys[1])) return suppress("dedup", "duplicate_collapse_key", n.collapseKey!);
  step("dedup", "pass", keys.length);

  let targets: Target[] = [];
  if (cat.presenceRouting && r.online && allowed.includes("inapp")) {
    targets = targetsOn("inapp", r);
    step("presence", "inapp", "online: in-app instead of push");
  } else step("presence", "pass", r.online ? "online" : "offline");

  if (targets.length === 0) {
    // The notification's own channels together, then each fallback channel alone.
    const own = allowed.filter((ch) => n.channels.includes(ch));
    const plan: ContentChannel[][] = [own, ...allowed.filter((ch) => !own.includes(ch)).map((ch) => [ch])];
    const tried: string[] = [];
    for (const group of plan) {
      if (group.length === 0) continue;
      targets = group.flatMap((ch) => targetsOn(ch, r));
      tried.push(group.join("+"));
      if (targets.length > 0) break;
    }
    if (targets.length === 0) return suppress("route", "no_devices", tried.join(" > "));
    step("route", "send", tried.join(" > "), targets.length);
  }

  if (!critical && cat.cap) st.buckets.take(u.id, n.category, cat.cap, true);
  for (const k of keys) st.dedup.add(k);
  return { kind: "send", targets };
}

/** The policy settings of a validated configuration. */
export function policyFrom(cfg: Config): PolicyConfig {
  const q = cfg.policy.defaultQuietHours;
  return {
    categories: Object.fromEntries(Object.entries(cfg.categories).map(([k, v]) => [k, { ...(v.cap ? { cap: v.cap } : {}), presenceRouting: v.presenceRouting, quietHours: v.quietHours }])),
    defaultQuietHours: q ? { start: parseHhmm(q.start), end: parseHhmm(q.end) } : null,
    fallback: cfg.policy.fallback,
    available: new Set(cfg.ingest.channels),
  };
}
