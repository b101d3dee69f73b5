// Broadcasts: an in-app notification to a large audience stored once; each member's inbox merges it when read, with the policy that must hold at read time (fan-out on read).
import type { Config } from "../core/config.js";
import { BROADCAST_INDEX_KEY, BROADCASTS_KEY, inboxItemsKey, lastActiveKey } from "../core/keys.js";
import { ownValue } from "../core/own-keys.js";
import { shardOf } from "../core/shard-hash.js";
import type { Notification, UserRecord } from "../core/types.js";
import { readUsers } from "../directory/directory.js";
import { sourceOf } from "../directory/segments.js";
import type { Redis } from "../infra/redis.js";
import { type ScriptRedis, withScripts } from "../infra/scripts.js";
import type { StoredItem } from "./inbox.js";

/**
 * A broadcast as stored (once, whatever the audience): the notification's inbox item, its audience (a segment name, a
 * built-in one or `topic:<name>`, evaluated when read), its category (preferences are checked when read) and expiry.
 */
export interface Broadcast {
  /** The notification id (also the inbox item's id). */
  id: string;
  at: number;
  expiresAt: number;
  category: string;
  /** The audience: `all`, `active_<N>d` (active within N days of `at`), a named segment, or `topic:<name>`. */
  segment: string;
  item: StoredItem;
}

/**
 * Whether a segment or topic notification takes the broadcast path: in-app is its only channel, its content is inline
 * (one rendering for everyone: a template renders per recipient), it has no collapse key (a per-user claim), and the
 * audience listed is at least `minAudience` (0: never). Every other notification is fanned out on write.
 */
export function isBroadcast(n: Pick<Notification, "channels" | "template" | "collapseKey" | "content">, audience: number, minAudience: number): boolean {
  return minAudience > 0 && audience >= minAudience && n.channels.length === 1 && n.channels[0] === "inapp" && !n.template && !n.collapseKey && n.content?.inapp !== undefined;
}

/** A broadcast that reaches a user, with the user's own state bits of it (SEEN 1, READ 2, ARCHIVED 4; 0 until the user acts). */
export interface Reaching {
  b: Broadcast;
  state: number;
}

/** One rule of the read-time policy as `nfx explain` shows it. */
export interface ReadTimeStep {
  rule: "audience" | "expiry" | "opt_out" | "preferences";
  verdict: "pass" | "hide";
  saw: string;
}

/**
 * The policy that must hold when a broadcast is read or shown live, rule by rule, stopping at the first that hides it:
 * the user is in the audience (`member`, from Redis), the broadcast has not expired, the user has not opted out, and
 * the user has not turned in-app off for its category. A user with no record is outside every audience. With `why`
 * false each step's `saw` is left empty: the verdicts alone, for the inbox read of every user (no dates formatted).
 */
export function readTimePolicy(b: Broadcast, u: UserRecord | null, member: boolean, now: number, why = true): ReadTimeStep[] {
  const steps: ReadTimeStep[] = [];
  const step = (rule: ReadTimeStep["rule"], pass: boolean, saw: () => string): boolean => {
    steps.push({ rule, verdict: pass ? "pass" : "hide", saw: why ? saw() : "" });
    return pass;
  };
  const audience = (): string => {
    const src = sourceOf(b.segment, b.at);
    return src.filter ? `${b.segment}: last active since ${new Date(src.filter.activeSince).toISOString()}` : b.segment;
  };
  if (!step("audience", member && u !== null, () => `${member && u ? "member of" : u ? "not in" : "no such user in"} ${audience()}`)) return steps;
  if (!step("expiry", b.expiresAt > now, () => `expires ${new Date(b.expiresAt).toISOString()}`)) return steps;
  if (!step("opt_out", !u!.optedOut, () => (u!.optedOut ? "opted out of everything" : "not opted out"))) return steps;
  const off = ownValue(u!.preferences?.categories, b.category)?.inapp === false;
  step("preferences", !off, () => `${b.category}: inapp=${off ? "off" : "on"}`);
  return steps;
}

const passes = (steps: readonly ReadTimeStep[]): boolean => steps.every((s) => s.verdict === "pass");

/**
 * The broadcasts of a cluster: stored once in Redis (a hash of records and an index by time, one hash slot), read
 * through a per-process list refreshed every `refreshMs` (a new one can be added at once with {@link note}).
 */
export class Broadcasts {
  private readonly r: ScriptRedis;
  /** Records by id: immutable once stored, so kept as long as they are listed. */
  private readonly records = new Map<string, Broadcast>();
  private list: Broadcast[] = [];
  private loadedAt = -Infinity;
  private loading: Promise<void> | null = null;
  /** Ids announced to this process ({@link note}): each is shown live once, even if a refresh listed it first. */
  private readonly noted = new Set<string>();

  constructor(private readonly redis: Redis, private readonly o: { shards: number; max: number; refreshMs: number; retentionMs: number }) {
    this.r = withScripts(redis);
  }

  /** Stores `b` unless stored already (a redelivered notification), record and index entry in one script; resolves whether this call stored it. */
  async store(b: Broadcast): Promise<boolean> {
    return (await this.r.nfxBroadcastStore(BROADCASTS_KEY, BROADCAST_INDEX_KEY, b.id, JSON.stringify(b), b.at)) === 1;
  }

  /** The stored broadcast `id`, or null (never one, withdrawn, or pruned after expiry). */
  async get(id: string): Promise<Broadcast | null> {
    const j = await this.redis.hget(BROADCASTS_KEY, id);
    return j ? (JSON.parse(j) as Broadcast) : null;
  }

  /** Removes broadcast `id` from every inbox (a cancelled campaign). Idempotent. */
  async withdraw(id: string): Promise<void> {
    // Index first: a reader that still finds the record but not the index entry lists nothing.
    await this.redis.zrem(BROADCAST_INDEX_KEY, id);
    await this.redis.hdel(BROADCASTS_KEY, id);
    this.list = this.list.filter((b) => b.id !== id);
    this.records.delete(id);
  }

  /** Deletes broadcasts that expired before `now`; resolves how many. */
  async prune(now: number): Promise<number> {
    const ids = await this.redis.zrange(BROADCAST_INDEX_KEY, "0", "-1");
    const gone: string[] = [];
    for (let i = 0; i < ids.length; i += 500) {
      const part = ids.slice(i, i + 500);
      const recs = await this.redis.hmget(BROADCASTS_KEY, ...part);
      recs.forEach((j, k) => {
        if (!j || (JSON.parse(j) as Broadcast).expiresAt <= now) gone.push(part[k]);
      });
    }
    for (let i = 0; i < gone.length; i += 500) {
      await this.redis.zrem(BROADCAST_INDEX_KEY, ...gone.slice(i, i + 500));
      await this.redis.hdel(BROADCASTS_KEY, ...gone.slice(i, i + 500));
    }
    return gone.length;
  }

  /** Adds a just-announced broadcast to this process's list at once; false when it was announced here before (a redelivered announcement). */
  note(b: Broadcast): boolean {
    if (this.noted.has(b.id)) return false;
    this.noted.add(b.id);
    if (!this.records.has(b.id)) {
      this.records.set(b.id, b);
      this.list = [b, ...this.list].sort((x, y) => y.at - x.at || (y.id < x.id ? -1 : 1)).slice(0, this.o.max);
    }
    return true;
  }

  /** The newest `max` broadcasts not expired at `now` and within the inbox retention, newest first. */
  async current(now: number): Promise<Broadcast[]> {
    if (now - this.loadedAt >= this.o.refreshMs) {
      this.loading ??= this.load(now).finally(() => (this.loading = null));
      await this.loading;
    }
    return this.list.filter((b) => b.expiresAt > now && b.at > now - this.o.retentionMs);
  }

  private async load(now: number): Promise<void> {
    const ids = await this.redis.zrevrange(BROADCAST_INDEX_KEY, 0, this.o.max - 1);
    const missing = ids.filter((id) => !this.records.has(id));
    if (missing.length > 0) {
      const recs = await this.redis.hmget(BROADCASTS_KEY, ...missing);
      recs.forEach((j) => {
        if (j) {
          const b = JSON.parse(j) as Broadcast;
          this.records.set(b.id, b);
        }
      });
    }
    const listed = new Set(ids);
    for (const id of this.records.keys()) if (!listed.has(id)) this.records.delete(id);
    for (const id of this.noted) if (!listed.has(id)) this.noted.delete(id);
    this.list = ids.map((id) => this.records.get(id)).filter((b): b is Broadcast => b !== undefined);
    this.loadedAt = now;
  }

  /**
   * The broadcasts (of `candidates`, else of {@link current}) that reach `user` at `now` with the user's state of each:
   * membership and state in one script call in the user's hash slot, the user's record read beside it, then
   * {@link readTimePolicy}. Resolves [] at once when there is no candidate.
   */
  async reaching(user: string, now: number, candidates?: readonly Broadcast[]): Promise<Reaching[]> {
    const list = candidates ?? (await this.current(now));
    if (list.length === 0) return [];
    const s = shardOf(user, this.o.shards);
    const keys = [inboxItemsKey(s, user)];
    const argv: (string | number)[] = [user];
    for (const b of list) {
      const src = sourceOf(b.segment, b.at);
      keys.push(src.filter ? lastActiveKey(s) : src.key(s));
      argv.push(b.id, src.filter ? src.filter.activeSince : "z");
    }
    const [hits, [u]] = await Promise.all([this.r.nfxInboxBroadcasts(keys.length, ...keys, ...argv), readUsers(this.redis, s, [user])]);
    const out: Reaching[] = [];
    for (let i = 0; i + 1 < hits.length; i += 2) {
      const b = list[Number(hits[i]) - 1];
      if (passes(readTimePolicy(b, u, true, now, false))) out.push({ b, state: Number(hits[i + 1]) });
    }
    return out;
  }

  /** Why broadcast `b` does or does not reach `user` now, rule by rule, and the user's state of it (for `nfx explain`). */
  async explain(b: Broadcast, user: string, now: number): Promise<{ shard: number; steps: ReadTimeStep[]; state: number }> {
    const s = shardOf(user, this.o.shards);
    const src = sourceOf(b.segment, b.at);
    const [hits, [u]] = await Promise.all([
      this.r.nfxInboxBroadcasts(2, inboxItemsKey(s, user), src.filter ? lastActiveKey(s) : src.key(s), user, b.id, src.filter ? src.filter.activeSince : "z"),
      readUsers(this.redis, s, [user]),
    ]);
    return { shard: s, steps: readTimePolicy(b, u, hits.length > 0, now), state: hits.length > 0 ? Number(hits[1]) : 0 };
  }

  /** Sets state `bits` on broadcasts `ids` (each one that reaches the user: the caller checked) in the user's inbox; resolves the ids that changed. */
  async mark(user: string, bits: number, ids: readonly string[]): Promise<string[]> {
    if (ids.length === 0) return [];
    const s = shardOf(user, this.o.shards);
    return this.r.nfxInboxMarkBroadcasts(inboxItemsKey(s, user), String(bits), Math.round(this.o.retentionMs), ...ids);
  }
}

/** The broadcast store of a cluster with its `ws` settings (shards, how many an inbox considers, refresh, retention). */
export const broadcastsFor = (cfg: Config, redis: Redis): Broadcasts =>
  new Broadcasts(redis, { shards: cfg.cluster.shards, max: cfg.ws.broadcastsPerInbox, refreshMs: cfg.ws.broadcastRefreshMs, retentionMs: cfg.ws.inboxRetentionDays * 86_400_000 });
