// Presence: which users hold a live in-app connection. Redis keys with a TTL (the truth after a restart) plus events on `nfx.presence.<shard>` (what shard actors route by once warm).
import { decodeJson, encodeJson } from "../core/codec.js";
import { presenceKey } from "../core/keys.js";
import type { Logger } from "../core/log.js";
import { groupByShard, shardOf } from "../core/shard-hash.js";
import { presenceAll, presenceSubject } from "../core/subjects.js";
import type { Nats } from "../infra/nats.js";
import { pipelineOf, type Redis } from "../infra/redis.js";
import { type ScriptRedis, withScripts } from "../infra/scripts.js";

/** Users per presence script call: one shard's share of a refresh stays one call unless it is very large. */
const PRESENCE_CALL_MAX = 2000;

/** A presence event: users of one shard that came online (or are still online, on a refresh) or went offline at one gateway. */
export interface PresenceEvent {
  type: "presence";
  shard: number;
  gateway: string;
  online: string[];
  offline: string[];
  /** How long an online entry stands without another event. */
  ttlMs: number;
  at: number;
}

/**
 * Returns a reader of presence keys: whether each of `users` (all of one
 * shard) holds a connection (lib/infra/scripts/existsAll-n.lua). Call it
 * once at start-up: it defines the scripts on a client that has none yet,
 * which must not happen while an auto-pipeline is being filled.
 */
export function presenceReader(redis: Redis): (shard: number, users: readonly string[]) => Promise<boolean[]> {
  const r = withScripts(redis);
  return async (shard, users) => {
    if (users.length === 0) return [];
    const out = await r.nfxExistsAll(users.length, ...users.map((u) => presenceKey(shard, u)));
    return out.map((x) => x === 1);
  };
}

/** The WebSocket gateways holding a connection of `user` now (its presence hash: gateway id -> connections). */
export function gatewaysOf(redis: Redis, shards: number, user: string): Promise<string[]> {
  return redis.hkeys(presenceKey(shardOf(user, shards), user));
}

/** {@link gatewaysOf} for each of `users`, in one pipeline. */
export async function gatewaysOfAll(redis: Redis, shards: number, users: readonly string[]): Promise<Map<string, string[]>> {
  const p = pipelineOf(redis);
  for (const u of users) p.hkeys(presenceKey(shardOf(u, shards), u));
  const res = (await p.exec()) ?? [];
  const out = new Map<string, string[]>();
  users.forEach((u, i) => {
    const [err, v] = res[i] ?? [null, []];
    if (err) throw err;
    out.set(u, v as string[]);
  });
  return out;
}

/**
 * The gateway side: counts this gateway's connections per user and keeps
 * the user's presence key (a hash gateway id -> connections, with a TTL) and
 * presence events in step. Writes are batched per event-loop turn.
 */
export class PresenceWriter {
  private readonly conns = new Map<string, number>();
  private readonly ups = new Set<string>();
  private readonly downs = new Set<string>();
  private flushing: Promise<void> | null = null;
  private readonly timer: NodeJS.Timeout;
  private readonly r: ScriptRedis;

  /** Call it at start-up, before the client is in use: it defines the scripts on a client that has none yet. */
  constructor(
    private readonly d: { nats: Nats; redis: Redis; log: Logger; shards: number; gateway: string; ttlMs: number },
  ) {
    this.r = withScripts(d.redis);
    this.timer = setInterval(() => void this.refresh().catch((err) => d.log.warn({ err }, "presence refresh failed")), Math.max(1000, Math.floor(d.ttlMs / 3)));
    this.timer.unref();
  }

  /** Users with at least one connection here. */
  get users(): number {
    return this.conns.size;
  }

  /** Records a new connection of `user`; resolves once its presence is written (the first connection's key and event). */
  connected(user: string): Promise<void> {
    const n = (this.conns.get(user) ?? 0) + 1;
    this.conns.set(user, n);
    if (n > 1) return Promise.resolve();
    this.downs.delete(user);
    this.ups.add(user);
    return this.schedule();
  }

  /** Records a closed connection; the last one of a user removes this gateway from its presence. */
  disconnected(user: string): void {
    const n = (this.conns.get(user) ?? 1) - 1;
    if (n > 0) return void this.conns.set(user, n);
    this.conns.delete(user);
    this.ups.delete(user);
    this.downs.add(user);
    void this.schedule().catch((err) => this.d.log.warn({ err }, "presence write failed"));
  }

  private schedule(): Promise<void> {
    if (!this.flushing) {
      this.flushing = new Promise<void>((res, rej) => setImmediate(() => void this.flush().then(res, rej)));
    }
    return this.flushing;
  }

  private async flush(): Promise<void> {
    const ups = [...this.ups];
    const downs = [...this.downs];
    this.ups.clear();
    this.downs.clear();
    this.flushing = null;
    const { redis, shards, gateway } = this.d;
    const gone = downs.length > 0 ? pipelineOf(redis) : null;
    for (const u of downs) gone!.hdel(presenceKey(shardOf(u, shards), u), gateway);
    await Promise.all([this.write(ups), gone?.exec()]);
    this.publish(ups, downs);
  }

  /**
   * Writes `users`' presence (this gateway, its connection count, the TTL) with one script call per shard
   * (lib/infra/scripts/presenceSet-n.lua): a refresh of every user held here, or the users of one turn's new
   * connections, makes a few dozen commands rather than two per user, and as little garbage.
   */
  private async write(users: readonly string[]): Promise<void> {
    const { shards, gateway, ttlMs } = this.d;
    const calls: Promise<number>[] = [];
    for (const [s, us] of groupByShard(users, shards)) {
      for (let i = 0; i < us.length; i += PRESENCE_CALL_MAX) {
        const part = us.slice(i, i + PRESENCE_CALL_MAX);
        calls.push(this.r.nfxPresenceSet(part.length, ...part.map((u) => presenceKey(s, u)), gateway, ttlMs, ...part.map((u) => this.conns.get(u) ?? 1)));
      }
    }
    await Promise.all(calls);
  }

  /** Re-announces every user held here and pushes their keys' TTL out; runs every third of the TTL. */
  async refresh(): Promise<void> {
    const users = [...this.conns.keys()];
    await this.write(users);
    this.publish(users, []);
  }

  private publish(online: string[], offline: string[]): void {
    const by = new Map<number, PresenceEvent>();
    const at = Date.now();
    const ev = (u: string): PresenceEvent => {
      const s = shardOf(u, this.d.shards);
      let e = by.get(s);
      if (!e) by.set(s, (e = { type: "presence", shard: s, gateway: this.d.gateway, online: [], offline: [], ttlMs: this.d.ttlMs, at }));
      return e;
    };
    for (const u of online) ev(u).online.push(u);
    for (const u of offline) ev(u).offline.push(u);
    for (const e of by.values()) this.d.nats.nc.publish(presenceSubject(e.shard), encodeJson(e));
  }

  /** Stops refreshing and removes this gateway from every user it held (a clean shutdown). */
  async close(): Promise<void> {
    clearInterval(this.timer);
    const users = [...this.conns.keys()];
    this.conns.clear();
    const p = pipelineOf(this.d.redis);
    for (const u of users) p.hdel(presenceKey(shardOf(u, this.d.shards), u), this.d.gateway);
    await p.exec().catch(() => undefined);
    this.publish([], users);
  }
}

/**
 * The shard-actor side: presence built from events. Once it has listened
 * for a whole TTL, every online user has been announced (gateways refresh
 * at a third of the TTL), so it answers without Redis; before that, and for
 * an entry not refreshed in time, the caller reads the keys. An entry
 * expires a TTL after its last event, as the key would.
 */
export class PresenceView {
  private readonly byUser = new Map<string, Map<string, number>>();
  private readonly since: number;
  private readonly sub: { unsubscribe(): void };
  private readonly sweeper: NodeJS.Timeout;

  /** `ttlMs` is the cluster's presence TTL (`ws.presenceTtlSec`). */
  constructor(nats: Nats, private readonly ttlMs: number, private readonly now: () => number = Date.now) {
    this.since = now();
    this.sweeper = setInterval(() => this.sweep(), ttlMs);
    this.sweeper.unref();
    this.sub = nats.nc.subscribe(presenceAll, {
      callback: (err, m) => {
        if (err) return;
        try {
          this.apply(decodeJson<PresenceEvent>(m.data));
        } catch {
          // A malformed event is ignored; keys remain the truth.
        }
      },
    });
  }

  /** Folds one event in. */
  apply(e: PresenceEvent): void {
    const exp = e.at + e.ttlMs;
    for (const u of e.online) {
      let g = this.byUser.get(u);
      if (!g) this.byUser.set(u, (g = new Map<string, number>()));
      g.set(e.gateway, exp);
    }
    for (const u of e.offline) {
      const g = this.byUser.get(u);
      if (!g) continue;
      g.delete(e.gateway);
      if (g.size === 0) this.byUser.delete(u);
    }
  }

  /** True once events alone are a complete picture: a whole TTL has passed since listening began. */
  warm(): boolean {
    return this.now() - this.since >= this.ttlMs;
  }

  /** Whether `user` is online by the events seen. */
  online(user: string): boolean {
    const g = this.byUser.get(user);
    if (!g) return false;
    const t = this.now();
    for (const [gw, exp] of g) {
      if (exp > t) return true;
      g.delete(gw);
    }
    this.byUser.delete(user);
    return false;
  }

  /** Drops entries whose gateway stopped refreshing (crashed). */
  private sweep(): void {
    for (const u of [...this.byUser.keys()]) this.online(u);
  }

  close(): void {
    clearInterval(this.sweeper);
    this.sub.unsubscribe();
  }
}
