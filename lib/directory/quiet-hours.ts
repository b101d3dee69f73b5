// Quiet hours in a user's time zone: whether an instant falls inside the window, and when the window ends (DST-aware).

/** A daily quiet window in local wall-clock minutes since midnight; start > end wraps past midnight (22:00-07:00). */
export interface QuietWindow {
  start: number;
  end: number;
}

const HHMM = /^([01][0-9]|2[0-3]):([0-5][0-9])$/;

/** Parses "HH:MM" (24 h) into minutes since midnight; throws on anything else. */
export function parseHhmm(s: string): number {
  const m = HHMM.exec(s);
  if (!m) throw new Error(`"${s}" is not a 24-hour HH:MM time`);
  return Number(m[1]) * 60 + Number(m[2]);
}

/** Formats minutes since midnight as "HH:MM". */
export const hhmm = (min: number): string => `${String(Math.floor(min / 60)).padStart(2, "0")}:${String(min % 60).padStart(2, "0")}`;

const formatters = new Map<string, Intl.DateTimeFormat>();
const offsets = new Map<string, number>();
const SLOT = 15 * 60_000;

/**
 * The UTC offset of `tz` at instant `t`, in minutes (local = UTC + offset).
 * Cached per zone and 15-minute slot (every real zone changes offset on a
 * quarter hour). An unknown zone throws RangeError.
 */
export function utcOffsetMin(tz: string, t: number): number {
  const slot = Math.floor(t / SLOT);
  const key = `${tz}|${slot}`;
  const hit = offsets.get(key);
  if (hit !== undefined) return hit;
  let f = formatters.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", { timeZone: tz, hourCycle: "h23", year: "numeric", month: "numeric", day: "numeric", hour: "numeric", minute: "numeric" });
    formatters.set(tz, f);
  }
  const at = slot * SLOT;
  const p: Record<string, number> = {};
  for (const x of f.formatToParts(at)) if (x.type !== "literal") p[x.type] = Number(x.value);
  const asUtc = Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute);
  const off = Math.round((asUtc - at) / 60_000);
  if (offsets.size > 50_000) offsets.clear();
  offsets.set(key, off);
  return off;
}

/** Local minutes since midnight in `tz` at `t`. */
export function localMinute(tz: string, t: number): number {
  const local = t + utcOffsetMin(tz, t) * 60_000;
  return Math.floor(((local % 86_400_000) + 86_400_000) % 86_400_000 / 60_000);
}

/** Whether local minute `m` is inside window `w` (start inclusive, end exclusive; equal bounds mean no quiet hours). */
export function inWindow(w: QuietWindow, m: number): boolean {
  if (w.start === w.end) return false;
  return w.start < w.end ? m >= w.start && m < w.end : m >= w.start || m < w.end;
}

/**
 * If `t` is inside `w` in zone `tz`, the instant the window ends (the first
 * instant whose local time is `w.end`, across a DST change too); otherwise
 * null. `local` is the local minute seen, for decision trails.
 */
export function quietUntil(tz: string, w: QuietWindow, t: number): { local: number; until: number | null } {
  const local = localMinute(tz, t);
  if (!inWindow(w, local)) return { local, until: null };
  return { local, until: nextLocal(tz, t, local, w.end) };
}

/**
 * The first instant after `t` (whose local minute in `tz` is `local`) at which the local time is `target` (minutes
 * since midnight): today if still ahead, else tomorrow. The wall-clock distance is corrected by the offset change in
 * between (DST); in a spring-forward gap, where `target` does not exist that day, it is as far past the gap as
 * `target` is into it (02:30 becomes 03:30), as Temporal's "compatible" disambiguation reads it.
 */
function nextLocal(tz: string, t: number, local: number, target: number): number {
  const ahead = (target - local + 1440) % 1440 || 1440;
  const until = Math.floor(t / 60_000) * 60_000 + ahead * 60_000;
  const shift = utcOffsetMin(tz, until) - utcOffsetMin(tz, t);
  if (shift === 0) return until;
  const fixed = until - shift * 60_000;
  return localMinute(tz, fixed) === target ? fixed : until;
}

/**
 * Local-time delivery (`deliverAt`): for a user in `tz` at instant `t`, null when it goes now (the local time is
 * `target` or at most `windowMin` minutes past it), else the instant of the next local `target`: later today, or
 * tomorrow when today's has passed by more than the window. DST-aware. `local` is the local minute seen, for trails.
 */
export function localTimeRelease(tz: string, target: number, windowMin: number, t: number): { local: number; until: number | null } {
  const local = localMinute(tz, t);
  if ((local - target + 1440) % 1440 < windowMin) return { local, until: null };
  return { local, until: nextLocal(tz, t, local, target) };
}
