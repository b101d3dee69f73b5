// Per-recipient policy: the ordered rules that decide whether, when and where one user is notified, each leaving a step in the decision trail.
import type { Config } from "../core/config.js";
import { hash53After, hash53Of2, type Hash53Prefix, hash53Prefix } from "../core/hash53.js";
import { ownValue } from "../core/own-keys.js";
import type { Channel, Priority } from "../core/subjects.js";
import type { ContentChannel, DigestSpec, NotificationBrief, UserRecord } from "../core/types.js";
import { localTimeRelease, parseHhmm, quietUntil, type QuietWindow } from "../directory/quiet-hours.js";
import { type OverloadRule, shedDeadline, type ShedReason, shedReason } from "../flow/shedding.js";
import type { DedupWindow } from "./dedup-window.js";
import type { DigestBook } from "./digests.js";
import { type Cap, RateBuckets } from "./rate-buckets.js";
import type { Trail } from "./trails.js";

/** Policy settings of one category. */
export interface CategoryPolicy {
  /** Frequency cap per user; none means uncapped. */
  cap?: Cap;
  /** Route to in-app instead of push while the user is online. */
  presenceRouting: boolean;
  /** Respect quiet hours (critical never does). */
  quietHours: boolean;
  /** Overload handling; absent means `delay` (never shed). */
  overload?: OverloadRule;
  /** Commercial (marketing): a user who stopped all marketing gets none of it. */
  commercial?: boolean;
}

/** Everything the rules read besides the user and the notification. Built once from config. */
export interface PolicyConfig {
  categories: Readonly<Record<string, CategoryPolicy>>;
  /** Time zone of users who set none (quiet hours, local-time delivery); absent: UTC. */
  defaultTimezone?: string;
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
  /** Held digests (lib/shard/digests.ts); without it, notifications asking for a digest are sent one by one. */
  digests?: DigestBook;
}

/** One device-level destination. `token` is the device token, email address or phone number. */
export interface Target {
  channel: Channel;
  device: string;
  token: string;
  /** The device's app (bundle id / package), which picks the provider app. */
  app?: string;
}

export type Verdict =
  | { kind: "suppress"; reason: string }
  | { kind: "defer"; until: number }
  /** Held for a digest: the caller adds it to `state.digests` (it has the content to list); caps and the route apply when the digest is sent. */
  | { kind: "hold"; spec: DigestSpec }
  /** Dropped under overload: past the category's shed deadline (lib/flow/shedding.ts). */
  | { kind: "shed"; reason: ShedReason; deadline: number }
  /** `fallback`: when every target is in-app, where the send goes instead if no client acknowledges it in time (the route without in-app). */
  | { kind: "send"; targets: Target[]; fallback?: Target[] };

/** What the rules know about one recipient. */
export interface Recipient {
  user: UserRecord;
  /** Holds a live in-app connection (presence key present). */
  online: boolean;
  /** Another notification holds this notification's collapse key for the user (lib/shard/collapse-claims.ts). */
  collapsed?: boolean;
  /** The user's phone number replied STOP (when and with which keyword): no SMS (lib/consent/sms-keywords.ts). */
  smsStopped?: { at: number; keyword: string } | null;
}

/** The notification-level inputs of a decision. */
export interface DecideContext {
  n: NotificationBrief;
  now: number;
  /** This chunk is a release of sends deferred by quiet hours: that rule has already waited. */
  released: boolean;
  /** A released chunk: when the quiet hours ended (the max delay counts from here, not from acceptance). */
  releasedAt?: number;
}

const NO_CATEGORY: CategoryPolicy = { presenceRouting: false, quietHours: true };

/** Content channel of a delivery channel. */
export const contentOf = (c: Exclude<Channel, "webhook">): ContentChannel => (c === "apns" || c === "fcm" ? "push" : c);

/** The destinations `user` has on content channel `ch` (push: one per device with a token). */
export function targetsOn(ch: ContentChannel, r: Recipient): Target[] {
  const u = r.user;
  switch (ch) {
    case "push": {
      const out: Target[] = [];
      for (const d of u.devices ?? []) {
        if (!d.token || (d.platform !== "ios" && d.platform !== "android")) continue;
        const t: Target = { channel: d.platform === "ios" ? "apns" : "fcm", device: d.id, token: d.token };
        if (d.app) t.app = d.app;
        out.push(t);
      }
      return out;
    }
    case "email":
      return u.email ? [{ channel: "email", device: "email", token: u.email }] : [];
    case "sms":
      return u.phone ? [{ channel: "sms", device: "sms", token: u.phone }] : [];
    case "inapp":
      // Always reachable: the inbox keeps it, and the in-app dispatcher falls back when no client takes it live.
      return [{ channel: "inapp", device: "inapp", token: "" }];
  }
}

/** What the rules need of a notification, computed once per chunk rather than per recipient. */
export interface NotificationPlan {
  cat: CategoryPolicy;
  critical: boolean;
  /** Channels in play: the notification's own, then fallback ones (and in-app for presence routing), with a gateway. */
  candidates: ContentChannel[];
  /** The notification's own channels among the candidates. */
  own: ContentChannel[];
  /** In-app is a route of its own (a channel of the notification or of the priority's fallback), not only the presence-routing substitute for push. */
  inappRoutable: boolean;
  /** Push is the in-app fallback of last resort: available, not already a candidate, and the notification has push content. */
  pushFallback: boolean;
  /** What follows the recipient's id in its cap bucket's key. */
  capKey: string;
  /** The notification's dedup keys' shared prefix `n|<nid>|`, hashed once (a recipient's key is `hash53After(dedupHash, user)`). */
  dedupHash: Hash53Prefix;
  /** Trail lines that are the same for every recipient. */
  lines: { expiry: string; prefs: string; quietSkip: string | null; capSkip: string | null; dedup: string; consent: string; capPass: readonly string[] };
  /** Trail lines that repeat across the recipients of a chunk, each built once: quiet hours passed, per zone; the route taken, per channels tried and targets. */
  memo: { quiet: Map<string, { local: number; start: number; end: number; line: string }>; route: Map<string, string[]> };
  /** The notification's own channels as a route tries them, with and without in-app (the fallback route), and their names in trails. */
  ownRoute: Record<"withInApp" | "noInApp", OwnRoute>;
}

/** Channels a route tries together, and how a trail names them. */
interface OwnRoute {
  mine: readonly ContentChannel[];
  tried: string;
}

/** `own` as a route tries it: in-app left out when `noInApp`. */
const ownRouteOf = (own: readonly ContentChannel[], noInApp: boolean): OwnRoute => {
  const mine = noInApp ? own.filter((ch) => ch !== "inapp") : own;
  return { mine, tried: mine.join("+") };
};

/** The trail line of a frequency cap passed with `left` tokens left after the send. */
const capPassLine = (cap: Cap, left: number): string => `frequency_cap|pass|${cap.count}|${cap.periodSec}|${left}\n`;

/** Builds the per-notification part of the rules. */
export function planFor(cfg: PolicyConfig, n: NotificationBrief): NotificationPlan {
  const cat = ownValue(cfg.categories, n.category) ?? NO_CATEGORY;
  const critical = n.priority === "critical";
  const extra = cat.presenceRouting ? [...cfg.fallback[n.priority], "inapp" as const] : cfg.fallback[n.priority];
  const candidates: ContentChannel[] = [];
  for (const ch of [...n.channels, ...extra]) if (cfg.available.has(ch) && !candidates.includes(ch)) candidates.push(ch);
  const own = candidates.filter((ch) => n.channels.includes(ch));
  return {
    cat, critical, candidates,
    own,
    inappRoutable: n.channels.includes("inapp") || cfg.fallback[n.priority].includes("inapp"),
    pushFallback: cfg.available.has("push") && !candidates.includes("push") && (n.content?.push !== undefined || n.template?.template.channels.push !== undefined),
    capKey: RateBuckets.suffix(n.category),
    dedupHash: hash53Prefix(`n|${n.id}|`),
    lines: {
      expiry: `expiry|pass|${n.expiresAt}\n`,
      prefs: `preferences|pass|${candidates.join(",")}\n`,
      quietSkip: critical ? "quiet_hours|skip|critical\n" : !cat.quietHours ? `quiet_hours|skip|category ${n.category} ignores quiet hours\n` : null,
      capSkip: n.priority === "critical" || n.priority === "high" ? `frequency_cap|skip|${n.priority}\n` : !cat.cap ? "frequency_cap|skip|uncapped\n" : null,
      dedup: `dedup|pass|${n.collapseKey ? 2 : 1}\n`,
      consent: `consent|pass|${n.category} is commercial; marketing not stopped\n`,
      // Tokens left after a send, 0 to count - 1 (at most 64 lines; a larger cap builds the rest per recipient).
      capPass: cat.cap ? Array.from({ length: Math.min(cat.cap.count, 64) }, (_, left) => capPassLine(cat.cap!, left)) : [],
    },
    memo: { quiet: new Map(), route: new Map() },
    ownRoute: { withInApp: ownRouteOf(own, false), noInApp: ownRouteOf(own, true) },
  };
}

/**
 * Decides one recipient. Rules in order, the first that says no decides:
 * overload (a normal or bulk recipient of a category with `overload: "shed"`
 * past its shed deadline is shed); expiry; global opt-out; a commercial category for a user who stopped all
 * marketing; preferences per category × channel; no SMS to a number that replied STOP; quiet hours in
 * the user's zone (defer to the window's end, or drop when the notification
 * expires first); frequency cap; dedup window (notification, and collapse
 * key); presence routing (online → in-app instead of push); the route: the
 * notification's own channels, then the priority's fallback channels one at a
 * time, first that reaches the user. Critical skips quiet hours, critical and
 * high skip caps (caps are held by the owner of the bulk lane class: docs/priorities.md),
 * but never a channel the user turned off. A "send" takes a cap token and records
 * the notification's dedup key; nothing else changes state (the collapse key is
 * claimed in Redis before the chunk is decided: `r.collapsed`). Steps are appended to `trail`
 * when given. `plan` may be passed when deciding many users of one notification.
 */
export function decideUser(cfg: PolicyConfig, st: PolicyState, ctx: DecideContext, r: Recipient, trail?: Trail, plan?: NotificationPlan): Verdict {
  const { n, now } = ctx;
  const p = plan ?? planFor(cfg, n);
  const u = r.user;
  const { cat, lines } = p;
  const suppress = (rule: string, reason: string, ...seen: (string | number)[]): Verdict => {
    if (trail) trail.add(`${rule}|suppress:${reason}${seen.length ? `|${seen.join("|")}` : ""}\n`);
    return { kind: "suppress", reason };
  };

  // Overload: a normal or bulk recipient of a shedding category past its deadline is shed, not sent late (docs/architecture.md, "Overload and shedding").
  const shedBy = shedDeadline(cat.overload, n, ctx.releasedAt ?? n.createdAt);
  if (shedBy !== null) {
    const why = shedReason(shedBy, n.expiresAt, now);
    if (trail) trail.add(`overload|${why ? `shed|${why}` : "pass"}|${shedBy}\n`);
    if (why) return { kind: "shed", reason: why, deadline: shedBy };
  }
  if (n.expiresAt <= now) return suppress("expiry", "expired", n.expiresAt);
  if (trail) trail.add(lines.expiry);

  if (u.optedOut) return suppress("opt_out", "opted_out", "opted out of everything");
  if (trail) trail.add("opt_out|pass|not opted out\n");
  if (cat.commercial) {
    if (u.marketingOptOut) return suppress("consent", "marketing_opt_out", `${n.category} is commercial; the user stopped all marketing`);
    if (trail) trail.add(lines.consent);
  }

  if (p.candidates.length === 0) return suppress("preferences", "no_wanted_channel", n.channels.join(","));
  const prefs = ownValue(u.preferences?.categories, n.category);
  let allowed = prefs ? p.candidates.filter((ch) => prefs[ch] !== false) : p.candidates;
  if (allowed.length === 0) return suppress("preferences", "preference_off", `${n.category}: ${p.candidates.map((c) => `${c}=off`).join(",")}`);
  if (trail) trail.add(allowed === p.candidates ? lines.prefs : `preferences|pass|${allowed.join(",")}\n`);
  // A number that replied STOP gets no SMS, whatever the category.
  const smsStop = r.smsStopped && allowed.includes("sms") ? r.smsStopped : null;
  if (smsStop) {
    allowed = allowed.filter((ch) => ch !== "sms");
    if (allowed.length === 0) return suppress("sms_stop", "sms_opted_out", smsStop.keyword, smsStop.at);
    if (trail) trail.add(`sms_stop|off|${smsStop.keyword}|${smsStop.at}\n`);
  }

  // Local-time delivery: held until the recipient's wall-clock time (a released chunk already waited for it).
  if (n.deliverAt) {
    const tz = u.timezone ?? cfg.defaultTimezone ?? "UTC";
    if (ctx.released) {
      if (trail) trail.add("local_time|skip|released at the local time\n");
    } else {
      const lt = localTimeRelease(tz, n.deliverAt.localTime, n.deliverAt.windowMin, now);
      if (lt.until !== null) {
        if (n.expiresAt <= lt.until) return suppress("local_time", "expires_before_local_time", tz, lt.local, n.deliverAt.localTime, lt.until);
        if (trail) trail.add(`local_time|defer|${tz}|${lt.local}|${n.deliverAt.localTime}|${lt.until}\n`);
        return { kind: "defer", until: lt.until };
      }
      if (trail) trail.add(`local_time|pass|${tz}|${lt.local}|${n.deliverAt.localTime}|${n.deliverAt.windowMin}\n`);
    }
  }

  if (lines.quietSkip !== null) {
    if (trail) trail.add(lines.quietSkip);
  } else if (ctx.released) {
    if (trail) trail.add("quiet_hours|skip|released after quiet hours\n");
  } else {
    const w = u.quietHours ?? cfg.defaultQuietHours;
    if (!w) {
      if (trail) trail.add("quiet_hours|pass|none set\n");
    } else {
      const tz = u.timezone ?? cfg.defaultTimezone ?? "UTC";
      const q = quietUntil(tz, w, now);
      if (q.until !== null) {
        if (n.expiresAt <= q.until) return suppress("quiet_hours", "expires_in_quiet_hours", tz, q.local, w.start, w.end, q.until);
        if (trail) trail.add(`quiet_hours|defer|${tz}|${q.local}|${w.start}|${w.end}|${q.until}\n`);
        return { kind: "defer", until: q.until };
      }
      if (trail) trail.add(quietPassLine(p, tz, q.local, w));
    }
  }

  // Digest: held with the (user, key)'s other notifications; the digest is decided (cap, dedup, route) when it is sent, as one send. Critical never waits.
  if (n.digest && !p.critical && st.digests) {
    const hn = hash53After(p.dedupHash, u.id);
    if (st.dedup.hasHash(hn)) return suppress("dedup", "duplicate", `n|${n.id}|${u.id}`);
    st.dedup.addHash(hn);
    return { kind: "hold", spec: n.digest };
  }

  let bucket = 0;
  if (lines.capSkip !== null) {
    if (trail) trail.add(lines.capSkip);
  } else {
    const cap = cat.cap!;
    bucket = hash53Of2(u.id, p.capKey);
    const b = st.buckets.takeHash(bucket, cap, false);
    if (!b.ok) return suppress("frequency_cap", "frequency_cap", cap.count, cap.periodSec, b.retryInMs);
    if (trail) trail.add(b.left < lines.capPass.length ? lines.capPass[b.left] : capPassLine(cap, b.left));
  }

  const hn = hash53After(p.dedupHash, u.id);
  if (st.dedup.hasHash(hn)) return suppress("dedup", "duplicate", `n|${n.id}|${u.id}`);
  if (n.collapseKey && r.collapsed) return suppress("dedup", "duplicate_collapse_key", n.collapseKey);
  if (trail) trail.add(lines.dedup);

  let targets: Target[] = [];
  if (cat.presenceRouting && r.online && allowed.includes("inapp")) {
    targets = targetsOn("inapp", r);
    if (trail) trail.add("presence|inapp|online: in-app instead of push\n");
  } else if (trail) trail.add(r.online ? "presence|pass|online\n" : "presence|pass|offline\n");

  const own = allowed === p.candidates ? p.own : p.own.filter((ch) => allowed.includes(ch));
  // The plan's own channels are prepared once per notification; a recipient's narrower set (preferences) is prepared by the route.
  const planned = own === p.own ? p.ownRoute : null;
  if (targets.length === 0) {
    const rt = route(own, allowed, r, !p.inappRoutable, planned);
    targets = rt.targets;
    // Nothing else reaches a user whose number replied STOP: the stop is why.
    if (targets.length === 0) return smsStop ? suppress("sms_stop", "sms_opted_out", smsStop.keyword, smsStop.at) : suppress("route", "no_devices", rt.tried);
    if (trail) trail.add(routeLine(p, rt.tried, targets.length));
  }
  let fallback: Target[] | undefined;
  if (targets.every((t) => t.channel === "inapp")) {
    const fb = route(own, allowed, r, true, planned);
    if (fb.targets.length === 0 && p.pushFallback && prefs?.push !== false) {
      fb.targets = targetsOn("push", r);
      fb.tried = fb.tried ? `${fb.tried} > push` : "push";
    }
    if (fb.targets.length > 0) fallback = fb.targets;
    if (trail) trail.add(`inapp_fallback|${fb.targets.length > 0 ? `plan|${fb.tried}|${fb.targets.length}` : `none|${fb.tried || "-"}`}\n`);
  }

  if (bucket !== 0) st.buckets.takeHash(bucket, cat.cap!, true);
  st.dedup.addHash(hn);
  return fallback ? { kind: "send", targets, fallback } : { kind: "send", targets };
}

/** The route: the notification's own channels together, then each other allowed channel alone, the first that reaches the user. `noInApp` leaves in-app out (the fallback route). */
function route(own: readonly ContentChannel[], allowed: readonly ContentChannel[], r: Recipient, noInApp: boolean, planned: NotificationPlan["ownRoute"] | null): { targets: Target[]; tried: string } {
  let targets: Target[] = [];
  let tried = "";
  const o = planned ? planned[noInApp ? "noInApp" : "withInApp"] : ownRouteOf(own, noInApp);
  const mine = o.mine;
  if (mine.length > 0) {
    targets = mine.length === 1 ? targetsOn(mine[0], r) : mine.flatMap((ch) => targetsOn(ch, r));
    tried = o.tried;
  }
  for (let i = 0; targets.length === 0 && i < allowed.length; i++) {
    const ch = allowed[i];
    if (own.includes(ch) || (noInApp && ch === "inapp")) continue;
    targets = targetsOn(ch, r);
    tried = tried ? `${tried} > ${ch}` : ch;
  }
  return { targets, tried };
}

/** The trail line of quiet hours passed in zone `tz` at local minute `local`, built once per zone while the minute and window stay the same. */
function quietPassLine(p: NotificationPlan, tz: string, local: number, w: QuietWindow): string {
  const m = p.memo.quiet.get(tz);
  if (m && m.local === local && m.start === w.start && m.end === w.end) return m.line;
  const line = `quiet_hours|pass|${tz}|${local}|${w.start}|${w.end}\n`;
  p.memo.quiet.set(tz, { local, start: w.start, end: w.end, line });
  return line;
}

/** The trail line of a route sent to `count` targets after trying `tried`, built once per (tried, count). */
function routeLine(p: NotificationPlan, tried: string, count: number): string {
  let byCount = p.memo.route.get(tried);
  if (!byCount) p.memo.route.set(tried, (byCount = []));
  return (byCount[count] ??= `route|send|${tried}|${count}\n`);
}

/** The policy settings of a validated configuration. */
export function policyFrom(cfg: Config): PolicyConfig {
  const q = cfg.policy.defaultQuietHours;
  return {
    categories: Object.fromEntries(Object.entries(cfg.categories).map(([k, v]) => [k, { ...(v.cap ? { cap: v.cap } : {}), presenceRouting: v.presenceRouting, quietHours: v.quietHours, ...overloadOf(v), ...(v.commercial ? { commercial: true } : {}) }])),
    defaultQuietHours: q ? { start: parseHhmm(q.start), end: parseHhmm(q.end) } : null,
    defaultTimezone: cfg.policy.defaultTimezone,
    fallback: cfg.policy.fallback,
    available: new Set(cfg.ingest.channels),
  };
}

/** The overload rule of a configured category, only when it sheds (a delaying category carries none). */
const overloadOf = (v: Config["categories"][string]): Pick<CategoryPolicy, "overload"> =>
  v.overload === "shed" ? { overload: { overload: "shed", ...(v.maxDelaySec !== undefined ? { maxDelaySec: v.maxDelaySec } : {}) } } : {};
