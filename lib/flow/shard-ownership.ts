// Partition ownership: live processes of a group (shard actors of a lane class, webhook gateways) announce themselves in KV, each takes its rendezvous-hash share of the partitions by lease, and hands partitions over when membership changes.
import type { JetStreamManager } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";

import { decodeJson, encodeJson } from "../core/codec.js";
import { hash53 } from "../core/hash53.js";
import type { Logger } from "../core/log.js";
import { BUCKET, LEASE_KEY, type OwnershipGroup } from "../core/subjects.js";
import { Lease } from "../flow/lease.js";
import { kvKeys } from "../infra/nats.js";

export interface OwnershipOptions {
  /** The leases bucket ({@link BUCKET.leases}). */
  kv: KV;
  /** Lists the members' keys (stream info; creates no consumer). */
  jsm: JetStreamManager;
  /** The group sharing the partitions out: a lane class of user shards (each class of a shard has its own lease, and processes join the membership of the classes they run), or the webhook gateways' endpoint partitions. */
  cls: OwnershipGroup;
  shards: number;
  /** This process's owner id (unique per process run). */
  owner: string;
  /** Share the partitions out evenly ({@link balancedOwners}) rather than by plain rendezvous hashing ({@link preferredOwner}), which moves fewer partitions when members come and go. */
  balanced?: boolean;
  /** Lease and membership TTL. Ticks run every sixth of it. */
  leaseMs: number;
  log: Logger;
  /** Starts owning `shard` under `lease`. A throw releases the lease; the shard is retried next tick. */
  acquired(shard: number, lease: Lease): Promise<void>;
  /**
   * Stops owning `shard`. `graceful`: hand over (finish, checkpoint, then the
   * lease is released); otherwise the lease is already lost and nothing may be written.
   */
  released(shard: number, graceful: boolean): Promise<void>;
}

/** The member that should own `shard` among `members`: highest rendezvous hash wins (stable when others join or leave). */
export function preferredOwner(shard: number, members: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestScore = -1;
  for (const m of members) {
    const s = hash53(`${shard}|${m}`);
    if (s > bestScore || (s === bestScore && m > best!)) {
      best = m;
      bestScore = s;
    }
  }
  return best;
}

/**
 * Owners of partitions `0..shards-1` among `members`, each member taking at most `ceil(shards / members)`: partition by
 * partition, the highest rendezvous hash among the members with room. For a few partitions over a few processes (the
 * webhook gateways' endpoint partitions), where plain rendezvous hashing often gives one member all of them (two
 * members, four partitions: one time in eight). Deterministic: every member computes the same owners.
 */
export function balancedOwners(shards: number, members: readonly string[]): string[] {
  const cap = Math.ceil(shards / Math.max(1, members.length));
  const load = new Map<string, number>(members.map((m) => [m, 0]));
  const out: string[] = [];
  for (let s = 0; s < shards; s++) {
    const m = preferredOwner(s, members.filter((x) => load.get(x)! < cap))!;
    load.set(m, load.get(m)! + 1);
    out.push(m);
  }
  return out;
}

/**
 * Runs ownership for one process. Every tick: refresh this process's
 * membership record, list live members, and for each shard compare the
 * preferred owner with what this process holds: take a preferred shard whose
 * lease is free or expired, hand over a held shard preferred elsewhere. A
 * member that stops heartbeating drops out after `leaseMs`, its leases expire
 * by then too, and the survivors take its shards on their next tick. After
 * the leases bucket did not answer this process for a while (a nats-server
 * cluster electing its leader), members that were live when it last answered
 * still count for one `leaseMs`: they could not heartbeat either, and taking
 * their shards would move shards between live processes.
 */
export class ShardOwnership {
  private readonly held = new Map<number, Lease>();
  private readonly busy = new Set<number>();
  private timer: NodeJS.Timeout | null = null;
  private ticking = false;
  private stopped = false;
  /** When this process's last heartbeat was written. */
  private lastBeat = 0;
  /** After an outage of the bucket: until when members live at {@link graceFrom} still count. */
  private graceUntil = 0;
  private graceFrom = 0;
  /** Takes and hand-overs under way: a tick starts them and does not wait, so a slow shard start never holds back the heartbeat. */
  private readonly moving = new Set<Promise<void>>();

  constructor(private readonly o: OwnershipOptions) {}

  /** Shards held now. */
  owned(): number[] {
    return [...this.held.keys()].sort((a, b) => a - b);
  }

  /** Starts ticking; resolves after the first tick and the shard starts it began. */
  async start(): Promise<void> {
    await this.tick();
    await Promise.all(this.moving);
    this.timer = setInterval(() => void this.tick(), Math.max(50, this.o.leaseMs / 6));
  }

  /**
   * Members whose heartbeat record was valid at `liveAt` (now; during a grace after an outage, when the bucket last
   * answered). The keys come from {@link kvKeys}, not `kv.keys()`: that creates a consumer through the JetStream meta
   * leader on every tick, and after a nats-server loss, with every reader being recreated, those requests timed out for
   * minutes and no dead member's shards were taken.
   */
  async members(liveAt = Date.now()): Promise<string[]> {
    const out: string[] = [];
    for (const k of await kvKeys(this.o.jsm, BUCKET.leases, LEASE_KEY.members(this.o.cls))) {
      const e = await this.o.kv.get(k);
      if (!e || e.operation !== "PUT") continue;
      const r = decodeJson<{ expiresAt: number }>(e.value);
      if (r.expiresAt > liveAt) out.push(k.slice(LEASE_KEY.member(this.o.cls, "").length));
    }
    return out;
  }

  private async tick(): Promise<void> {
    if (this.ticking || this.stopped) return;
    this.ticking = true;
    try {
      await this.o.kv.put(LEASE_KEY.member(this.o.cls, this.o.owner), encodeJson({ expiresAt: Date.now() + this.o.leaseMs }));
      const now = Date.now();
      // Half a lease without a heartbeat written: the bucket was out, for the others too.
      if (this.lastBeat > 0 && now - this.lastBeat > this.o.leaseMs / 2) {
        this.graceFrom = this.lastBeat;
        this.graceUntil = now + this.o.leaseMs;
        this.o.log.warn({ outMs: now - this.lastBeat }, "leases bucket was out; members live before it count for one lease");
      }
      this.lastBeat = now;
      const members = await this.members(now < this.graceUntil ? this.graceFrom : now);
      if (!members.includes(this.o.owner)) members.push(this.o.owner);
      const owners = this.o.balanced ? balancedOwners(this.o.shards, members) : null;
      for (let s = 0; s < this.o.shards; s++) {
        if (this.busy.has(s) || this.stopped) continue;
        const want = (owners ? owners[s] : preferredOwner(s, members)) === this.o.owner;
        const lease = this.held.get(s);
        if (lease && !want) this.track(this.handOver(s, lease));
        else if (!lease && want) this.track(this.take(s));
      }
    } catch (err) {
      this.o.log.warn({ err }, "ownership tick failed");
    } finally {
      this.ticking = false;
    }
  }

  /** Keeps `p` in {@link moving} until it settles (it never rejects: take and handOver log their own failures). */
  private track(p: Promise<void>): void {
    const q = p.catch((err) => this.o.log.warn({ err }, "shard move failed")).finally(() => this.moving.delete(q));
    this.moving.add(q);
  }

  private async take(s: number): Promise<void> {
    this.busy.add(s);
    try {
      const lease = await Lease.acquire(this.o.kv, LEASE_KEY.shard(this.o.cls, s), this.o.owner, this.o.leaseMs, Date.now, () => void this.lost(s, lease!)).catch((err: unknown) => {
        // The bucket did not answer (a nats-server cluster electing a leader): asked again next tick.
        this.o.log.warn({ err, shard: s }, "shard lease not taken: leases bucket did not answer");
        return null;
      });
      if (!lease) return;
      this.held.set(s, lease);
      try {
        await this.o.acquired(s, lease);
        this.o.log.info({ shard: s, epoch: lease.revision }, "shard acquired");
      } catch (err) {
        this.o.log.warn({ err, shard: s }, "shard start failed; releasing");
        this.held.delete(s);
        await this.o.released(s, false).catch(() => undefined);
        await lease.release();
      }
    } finally {
      this.busy.delete(s);
    }
  }

  private async handOver(s: number, lease: Lease): Promise<void> {
    this.busy.add(s);
    try {
      this.held.delete(s);
      await this.o.released(s, true).catch((err) => this.o.log.warn({ err, shard: s }, "hand-over failed"));
      await lease.release();
      this.o.log.info({ shard: s }, "shard handed over");
    } finally {
      this.busy.delete(s);
    }
  }

  private lost(s: number, lease: Lease): void {
    if (this.held.get(s) !== lease) return;
    this.held.delete(s);
    this.o.log.warn({ shard: s, reason: lease.lostReason }, "shard lease lost; stopping it without writing");
    void this.o.released(s, false).catch(() => undefined);
  }

  /** Gives up `shard` after its owner failed (lease released, state not written); the next tick takes it afresh from its checkpoint. */
  async drop(shard: number): Promise<void> {
    const lease = this.held.get(shard);
    if (!lease) return;
    this.held.delete(shard);
    await lease.release();
  }

  /** Hands every shard over and leaves the membership. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    while (this.ticking) await new Promise((r) => setTimeout(r, 10));
    await Promise.all(this.moving);
    await Promise.all([...this.held].map(([s, l]) => this.handOver(s, l)));
    await this.o.kv.delete(LEASE_KEY.member(this.o.cls, this.o.owner)).catch(() => undefined);
  }
}
