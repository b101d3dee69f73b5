// Digests: notifications for one (user, digest key) held in the owning shard actor's state while their window is open, then sent once as one notification listing them.
import { decode, encodePlain } from "../core/codec.js";
import { hash53 } from "../core/hash53.js";
import type { DigestSpec, NotificationBrief } from "../core/types.js";

/** One held notification, as the digest lists it. */
export interface DigestItem {
  nid: string;
  /** When the notification was accepted (its place in the window). */
  at: number;
  title?: string;
  body?: string;
}

/** The digest of one (user, key) being collected. */
export interface HeldDigest {
  /** Its notification id: the first item's id and a hash of user and key (the same on every replay). */
  id: string;
  user: string;
  key: string;
  /** The first item's notification (category, priority, channels, content or template the digest is sent with). */
  brief: NotificationBrief;
  spec: DigestSpec;
  /** Items kept (at most `spec.maxItems`), oldest first. */
  items: DigestItem[];
  /** Items held in all, kept or not. */
  count: number;
  first: number;
  last: number;
  /** When the window closes: fixed `first + windowSec`, or quiet-period `min(last + quietSec, first + maxSec)`. */
  until: number;
}

const SEP = "\u0000";

/** When `d`'s window closes, by its spec. */
export const closesAt = (d: Pick<HeldDigest, "first" | "last" | "spec">): number =>
  d.spec.quietSec !== undefined ? Math.min(d.last + d.spec.quietSec * 1000, d.first + d.spec.maxSec * 1000) : d.first + d.spec.windowSec * 1000;

/** The id of the digest whose first item is `nid`, for `user` and `key`: a notification id of its own. */
export const digestIdOf = (nid: string, user: string, key: string): string => `${nid}-dg${hash53(`${user}${SEP}${key}`).toString(36)}`;

/**
 * The held digests of one shard owner. Deterministic: an item's place is its notification's acceptance time, so a
 * shard replayed from its checkpoint after a crash holds exactly what it held, and a digest sent again after a crash
 * has the same id and content (its sends are dropped as duplicates). Packed whole into every checkpoint.
 */
export class DigestBook {
  private readonly open = new Map<string, HeldDigest>();
  /** Digests whose window closed when a later item came in before they were sent (sent at the next tick). */
  private closed: HeldDigest[] = [];

  get size(): number {
    return this.open.size + this.closed.length;
  }

  /**
   * Holds notification `n` (item `item`) for `user` under `key` with `spec`: into the open digest of that key, or a new
   * one when there is none or the open one's window closed before `n` was accepted. Resolves the digest's id, when it
   * closes, and how many it holds.
   */
  hold(user: string, n: NotificationBrief, spec: DigestSpec, item: DigestItem): { id: string; until: number; count: number } {
    const k = `${user}${SEP}${spec.key}`;
    let d = this.open.get(k);
    if (d && d.until <= item.at) {
      this.closed.push(d);
      this.open.delete(k);
      d = undefined;
    }
    if (!d) {
      d = { id: digestIdOf(n.id, user, spec.key), user, key: spec.key, brief: n, spec, items: [], count: 0, first: item.at, last: item.at, until: 0 };
      this.open.set(k, d);
    }
    if (d.items.length < spec.maxItems) d.items.push(item);
    d.count++;
    d.last = Math.max(d.last, item.at);
    d.until = closesAt(d);
    return { id: d.id, until: d.until, count: d.count };
  }

  /** Digests whose window closed by `now`, oldest first (still held until {@link remove}). */
  due(now: number): HeldDigest[] {
    return [...this.closed, ...[...this.open.values()].filter((d) => d.until <= now)].sort((a, b) => a.until - b.until);
  }

  /** Forgets digest `id` (sent). */
  remove(id: string): void {
    this.closed = this.closed.filter((d) => d.id !== id);
    for (const [k, d] of this.open) if (d.id === id) this.open.delete(k);
  }

  /** Everything held, for a checkpoint. */
  pack(): Buffer {
    return encodePlain([...this.closed, ...this.open.values()]);
  }

  /** Replaces the held digests with a checkpoint's. */
  restore(packed: Uint8Array | undefined): void {
    this.open.clear();
    this.closed = [];
    if (!packed || packed.length === 0) return;
    for (const d of decode<HeldDigest[]>(packed)) {
      const k = `${d.user}${SEP}${d.key}`;
      // Two digests of one key: the later is the open one.
      const o = this.open.get(k);
      if (o && o.first > d.first) this.closed.push(d);
      else {
        if (o) this.closed.push(o);
        this.open.set(k, d);
      }
    }
  }
}

/**
 * The notification a digest is sent as: the first item's, under the digest's id, with its content listing the items.
 * Inline push: the first title, and "N updates" with the latest body; email and SMS list each item; in-app carries
 * `{digest: {count, events}}`. A template renders with `digest` (`count`, `events`, `first`, `last`) in its variables.
 */
export function digestNotification(d: HeldDigest): NotificationBrief {
  // The digest itself is not held again.
  const { digest: _spec, ...n } = d.brief;
  const events = d.items.map((i) => ({ id: i.nid, at: new Date(i.at).toISOString(), ...(i.title ? { title: i.title } : {}), ...(i.body ? { body: i.body } : {}) }));
  const digest = { count: d.count, events, first: events[0], last: events[events.length - 1] };
  const more = d.count > d.items.length ? ` (and ${d.count - d.items.length} more)` : "";
  const lines = events.map((e) => `- ${[e.title, e.body].filter(Boolean).join(": ")}`).join("\n") + more;
  const first = events[0];
  const last = events[events.length - 1];
  const title = d.count === 1 ? (first.title ?? "") : `${first.title ?? "Updates"} and ${d.count - 1} more`;
  const body = d.count === 1 ? (first.body ?? "") : `${d.count} updates. Latest: ${last.body ?? last.title ?? ""}`;
  const c = n.content;
  return {
    ...n,
    id: d.id,
    ...(n.template
      ? { template: { ...n.template, digest } }
      : {
          content: {
            ...(c?.push ? { push: { ...c.push, title, body, data: { ...(c.push.data ?? {}), nfx_digest: String(d.count) } } } : {}),
            ...(c?.email ? { email: { subject: title, text: `${body}\n\n${lines}` } } : {}),
            ...(c?.sms ? { sms: { text: `${title}: ${body}`.slice(0, 1600) } } : {}),
            ...(c?.inapp ? { inapp: { payload: { ...c.inapp.payload, digest } } } : {}),
          },
        }),
  };
}
