// Shard actor: owns user shards by lease; for each fan chunk of an owned shard runs the per-recipient policy, emits sends, deferrals, receipts and trails, and checkpoints its state.
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";

import { type ConsumerMessages, DeliverPolicy, type JsMsg } from "@nats-io/jetstream";

import { Cancellations } from "../lib/campaign/cancellations.js";
import { backoffMs } from "../lib/core/backoff.js";
import { encode } from "../lib/core/codec.js";
import type { Config } from "../lib/core/config.js";
import { Fenced } from "../lib/core/errors.js";
import type { Logger } from "../lib/core/log.js";
import { ownValue } from "../lib/core/own-keys.js";
import { BUCKET, fanSubject, PRIORITIES, type Priority, STREAM } from "../lib/core/subjects.js";
import type { FanChunk } from "../lib/core/types.js";
import { readUsers } from "../lib/directory/directory.js";
import { JsPublisher } from "../lib/flow/js-publisher.js";
import { decodeAs, PoisonMessage, UrgencyGate } from "../lib/flow/lanes.js";
import type { Lease } from "../lib/flow/lease.js";
import { PriorityBuffer } from "../lib/flow/priority-buffer.js";
import { Semaphore } from "../lib/flow/semaphore.js";
import { presenceReader, PresenceView } from "../lib/inapp/presence.js";
import { shedTotal, stageItems } from "../lib/infra/metrics.js";
import { connectNats, type Nats } from "../lib/infra/nats.js";
import type { Redis } from "../lib/infra/redis.js";
import { type ChunkDecision, decideChunk, usesUserFields } from "../lib/shard/chunk-decision.js";
import { chunkOutputs } from "../lib/shard/chunk-outputs.js";
import { DedupWindow } from "../lib/shard/dedup-window.js";
import { type PolicyConfig, policyFrom } from "../lib/shard/policy.js";
import { RateBuckets } from "../lib/shard/rate-buckets.js";
import { CheckpointStore, startPositions } from "../lib/shard/shard-checkpoint.js";
import { ShardOwnership } from "../lib/shard/shard-ownership.js";

export interface ShardDeps {
  cfg: Config;
  nats: Nats;
  redis: Redis;
  log: Logger;
  now?: () => number;
  /** Owner id of this process (default host-pid-random). */
  owner?: string;
}

/** Shared by every shard a process owns. */
interface Shared {
  d: ShardDeps;
  owner: string;
  now: () => number;
  policy: PolicyConfig;
  store: CheckpointStore;
  cancellations: Cancellations;
  /** Urgent (critical, high) chunks go first: bulk chunks wait for them between heavy steps. */
  urgency: UrgencyGate;
  /**
   * Connections of their own for urgent chunks: on the shared ones an urgent
   * read or publish would queue behind megabytes of campaign reads and send
   * batches (Redis and NATS answer each connection in order).
   */
  fast: { js: Nats["js"]; redis: Redis; pub: JsPublisher; readPresence: (shard: number, users: readonly string[]) => Promise<boolean[]> };
  /** Presence from events, used instead of the Redis keys once warm. */
  presence: PresenceView;
  /** Presence from the Redis keys, while the view is not warm. */
  readPresence: (shard: number, users: readonly string[]) => Promise<boolean[]>;
  gate: Semaphore;
  /** Pipelined JetStream publishes (lib/flow/js-publisher.ts): no per-call error objects on the hot path. */
  pub: JsPublisher;
  log: Logger;
  /** Called when an owner stopped itself (fenced or failed): its shard is dropped and taken afresh. */
  dropped(shard: number): void;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * One owned shard. Reads each priority lane of `nfx.fan.<prio>.<shard>` from
 * the checkpointed position (ordered consumers; no acks: the checkpoint is
 * the position), decides chunks (up to `chunksInFlight` at once, the most
 * urgent lane first), and every `checkpointMs` pauses, waits for chunks in
 * flight, and writes positions + dedup window + buckets by compare-and-set.
 * Every emit and checkpoint first passes the fence (`Lease.fence`: the lease
 * on the monotonic clock); a checkpoint write after a takeover fails. Either
 * way the owner stops without writing.
 */
class ShardOwner {
  private readonly state: { buckets: RateBuckets; dedup: DedupWindow };
  private pos = startPositions();
  private rev = 0;
  private gen: string | undefined;
  /** Chunks read ahead, up to 8 per lane, taken most urgent first. */
  private readonly buf = new PriorityBuffer<JsMsg>(8);
  private readonly pending: Record<Priority, { seq: number; done: boolean }[]> = { critical: [], high: [], normal: [], bulk: [] };
  private readonly iters: ConsumerMessages[] = [];
  private inflight = 0;
  private paused = false;
  private stopping = false;
  private dirty = false;
  private waiters: (() => void)[] = [];
  private loop: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | null = null;
  private checkpointing: Promise<void> | null = null;
  private readonly log: Logger;
  /** Names this owner in {@link Fenced} messages. */
  private readonly holder: string;

  constructor(private readonly sh: Shared, readonly shard: number, private readonly lease: Lease) {
    this.log = sh.log.child({ shard, epoch: lease.revision });
    this.holder = `shard ${shard}`;
    this.state = { buckets: new RateBuckets(), dedup: new DedupWindow(sh.d.cfg.shard.dedupWindowSec * 1000, sh.now) };
  }

  private notify(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private wait(): Promise<void> {
    return new Promise((r) => this.waiters.push(r));
  }

  /** Restores the checkpoint, fences earlier owners by writing it back under this lease, then starts reading. */
  async start(): Promise<void> {
    const cfg = this.sh.d.cfg;
    const loaded = await this.sh.store.load(this.shard);
    if (loaded.cp) {
      this.pos = loaded.cp.pos;
      this.state.dedup.restore(loaded.cp.dedup);
      this.state.buckets.restore(loaded.cp.buckets, Date.now() - loaded.cp.at);
    }
    this.rev = loaded.rev;
    this.gen = loaded.gen;
    await this.writeCheckpoint();
    this.log.info({ pos: this.pos, dedup: this.state.dedup.size, buckets: this.state.buckets.size, from: loaded.cp?.owner }, "shard restored");
    for (const p of PRIORITIES) await this.pump(p);
    this.loop = this.run();
    this.timer = setInterval(() => void this.checkpoint().catch((err) => this.fail(err)), cfg.shard.checkpointMs);
  }

  private async pump(p: Priority): Promise<void> {
    const from = this.pos[p];
    // Urgent lanes are read on the fast connection, not behind campaign chunks on the shared one.
    const js = p === "critical" || p === "high" ? this.sh.fast.js : this.sh.d.nats.js;
    const c = await js.consumers.get(STREAM.fan, {
      filter_subjects: fanSubject(p, this.shard),
      ...(from > 0 ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: from + 1 } : { deliver_policy: DeliverPolicy.All }),
    });
    const it = await c.consume({ max_messages: 8 });
    this.iters.push(it);
    void (async () => {
      for await (const m of it) {
        if (this.stopping) break;
        this.buf.push(p, m);
        this.notify();
        await this.buf.waitForRoom(p, () => this.stopping);
      }
    })().catch((err) => this.log.error({ err, lane: p }, "lane read failed"));
  }

  /**
   * Starts chunks, most urgent lane first. Critical and high chunks have a
   * budget of their own (`chunksInFlight` more) and skip the process-wide
   * gate, so a shard busy with campaign chunks still takes an urgent one at
   * once rather than after its bulk work.
   */
  private async run(): Promise<void> {
    const limit = this.sh.d.cfg.shard.chunksInFlight;
    let urgentInflight = 0;
    while (!this.stopping) {
      const urgentWaiting = this.buf.size("critical") > 0 || this.buf.size("high") > 0;
      const room = urgentWaiting ? urgentInflight < limit : this.inflight - urgentInflight < limit;
      if (this.paused || !room) {
        await this.wait();
        continue;
      }
      const next = this.buf.take();
      if (!next) {
        await this.wait();
        continue;
      }
      const [m, p] = next;
      const urgent = p === "critical" || p === "high";
      const entry = { seq: m.seq, done: false };
      this.pending[p].push(entry);
      this.inflight++;
      if (urgent) urgentInflight++;
      void (urgent ? this.sh.urgency.urgent(() => this.handle(m, false)) : this.sh.gate.run(() => this.handle(m, true)))
        .then(() => {
          entry.done = true;
          this.advance(p);
        })
        .catch((err) => this.fail(err))
        .finally(() => {
          this.inflight--;
          if (urgent) urgentInflight--;
          this.notify();
        });
    }
  }

  /** Moves a lane's position past every leading chunk that is done. */
  private advance(p: Priority): void {
    const q = this.pending[p];
    while (q.length > 0 && q[0].done) {
      this.pos[p] = q.shift()!.seq;
      this.dirty = true;
    }
  }

  /** Retries `fn` until it succeeds or this owner stops; a lost lease ends it at once. */
  private async retry<T>(what: string, fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      if (this.stopping) throw new Fenced(`shard ${this.shard} stopped`);
      this.lease.fence(this.holder);
      try {
        return await fn();
      } catch (err) {
        if (err instanceof Fenced) throw err;
        this.log.warn({ err, attempt }, `${what} failed; retrying`);
        await sleep(backoffMs(attempt, { baseMs: 100, maxMs: 5000 }));
      }
    }
  }

  /** Decides one fan chunk and publishes its outputs. A `yielding` (non-urgent) chunk waits for urgent work before each heavy step. */
  private async handle(m: JsMsg, yielding: boolean): Promise<void> {
    let chunk: FanChunk;
    try {
      chunk = decodeAs<FanChunk>(m.data, "fan_chunk");
    } catch (err) {
      this.log.error({ err, seq: m.seq }, "poison fan chunk skipped");
      if (err instanceof PoisonMessage) return;
      throw err;
    }
    const { d, policy } = this.sh;
    const n = chunk.notification;
    const needsProfile = usesUserFields(n) || [...n.channels, ...policy.fallback[n.priority]].some((c) => (c === "email" || c === "sms") && policy.available.has(c));
    const wantsPresence = (ownValue(policy.categories, n.category)?.presenceRouting ?? false) && policy.available.has("inapp");
    const [users, online] = await this.retry("directory read", () =>
      Promise.all([
        readUsers(yielding ? d.redis : this.sh.fast.redis, this.shard, chunk.users, { profile: needsProfile }),
        !wantsPresence ? Promise.resolve(null) : this.sh.presence.warm() ? Promise.resolve(chunk.users.map((u) => this.sh.presence.online(u))) : (yielding ? this.sh.readPresence : this.sh.fast.readPresence)(this.shard, chunk.users),
      ]),
    );
    if (yielding) await this.sh.urgency.clear();
    // Decided once: the decision changed the dedup window and buckets, so a failed publish is retried with the same decision.
    const decidedAt = this.sh.now();
    const decision = decideChunk(chunk, { users, online, now: decidedAt, cancelled: this.sh.cancellations.has(n.id), policy, state: this.state, trails: d.cfg.policy.trails });
    if (yielding) await this.sh.urgency.clear();
    await this.retry("publish", () => this.emit(chunk, decision, decidedAt, yielding ? this.sh.pub : this.sh.fast.pub));
    stageItems.inc({ stage: "shard" }, chunk.users.length);
    for (const e of decision.receipts) if (e.outcome === "shed") shedTotal.inc({ stage: "shard", priority: n.priority, reason: e.reason ?? "" });
  }

  /** Publishes a decided chunk's outputs (lib/shard/chunk-outputs.ts), all with message ids derived from the chunk's. */
  private emit(chunk: FanChunk, dec: ChunkDecision, decidedAt: number, pub: JsPublisher): Promise<unknown> {
    // The fence: nothing is published once the lease is gone (checked on the monotonic clock, right before the publishes leave).
    this.lease.fence(this.holder);
    const outs = chunkOutputs(chunk, dec, { decidedAt, owner: this.sh.owner, epoch: this.lease.revision, sendBatchSize: this.sh.d.cfg.shard.sendBatchSize });
    return Promise.all(outs.map((o) => pub.publish(o.subject, encode(o.body), o.msgId)));
  }

  /** Writes the state as of the current positions (call only with nothing in flight). */
  private async writeCheckpoint(): Promise<void> {
    this.lease.fence(this.holder);
    const cp = { owner: this.sh.owner, epoch: this.lease.revision, at: Date.now(), pos: { ...this.pos }, dedup: this.state.dedup.pack(), buckets: this.state.buckets.pack() };
    const r = await this.sh.store.write(this.shard, cp, this.rev, this.gen);
    this.rev = r.rev;
    this.gen = r.gen;
    this.dirty = false;
    // Chunks up to the checkpoint are never read again: drop them from the stream.
    const jsm = this.sh.d.nats.jsm;
    for (const p of PRIORITIES) {
      if (cp.pos[p] > 0) void jsm.streams.purge(STREAM.fan, { filter: fanSubject(p, this.shard), seq: cp.pos[p] + 1 }).catch(() => undefined);
    }
  }

  /** Pauses intake, waits for chunks in flight, and checkpoints if anything moved. */
  checkpoint(): Promise<void> {
    if (this.checkpointing) return this.checkpointing;
    this.checkpointing = (async () => {
      try {
        if (!this.dirty) return;
        this.paused = true;
        while (this.inflight > 0) await this.wait();
        await this.writeCheckpoint();
      } finally {
        this.paused = false;
        this.checkpointing = null;
        this.notify();
      }
    })();
    return this.checkpointing;
  }

  private fail(err: unknown): void {
    if (this.stopping) return;
    if (err instanceof Fenced) this.log.warn({ err: err.message }, "fenced: stopping this shard without writing");
    else this.log.error({ err }, "shard owner failed; stopping it");
    void this.stop(false).finally(() => this.sh.dropped(this.shard));
  }

  /** Stops reading. `graceful`: finishes chunks in flight and writes a final checkpoint; otherwise writes nothing. */
  async stop(graceful: boolean): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (graceful && !this.stopping) {
      this.paused = true;
      while (this.inflight > 0) await this.wait();
      await this.checkpointing?.catch(() => undefined);
      await this.writeCheckpoint().catch((err) => this.log.warn({ err }, "final checkpoint failed"));
    }
    this.stopping = true;
    this.buf.wakeAll();
    this.notify();
    await Promise.all(this.iters.map((it) => it.close().catch(() => undefined)));
    await this.loop;
  }
}

/**
 * Starts the shard actor: joins shard ownership (lib/shard/shard-ownership.ts) and
 * runs a {@link ShardOwner} for every shard this process holds.
 */
export async function startUserShard(d: ShardDeps): Promise<{ stop(): Promise<void>; owned(): number[] }> {
  const owner = d.owner ?? `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
  const log = d.log.child({ actor: "user-shard", owner });
  const fastRedis = d.redis.duplicate();
  const fastNats = await connectNats(d.cfg, log, "nfx-shard-urgent", "shard");
  const sh: Shared = {
    d, owner, log,
    now: d.now ?? Date.now,
    policy: policyFrom(d.cfg),
    store: new CheckpointStore(await d.nats.kvm.open(BUCKET.checkpoints)),
    cancellations: await Cancellations.watch(await d.nats.kvm.open(BUCKET.campaigns)),
    presence: new PresenceView(d.nats, d.cfg.ws.presenceTtlSec * 1000),
    readPresence: presenceReader(d.redis),
    urgency: new UrgencyGate(),
    fast: { js: fastNats.js, redis: fastRedis, pub: new JsPublisher(fastNats.nc), readPresence: presenceReader(fastRedis) },
    gate: new Semaphore(d.cfg.shard.concurrency),
    pub: new JsPublisher(d.nats.nc),
    dropped: (s) => void ownership.drop(s),
  };
  const owners = new Map<number, ShardOwner>();
  const ownership = new ShardOwnership({
    kv: await d.nats.kvm.open(BUCKET.leases),
    shards: d.cfg.cluster.shards,
    owner,
    leaseMs: d.cfg.shard.leaseMs,
    log,
    acquired: async (s, lease) => {
      const o = new ShardOwner(sh, s, lease);
      owners.set(s, o);
      await o.start();
    },
    released: async (s, graceful) => {
      const o = owners.get(s);
      owners.delete(s);
      await o?.stop(graceful);
    },
  });
  await ownership.start();
  log.info({ shards: ownership.owned().length }, "user-shard ready");
  return {
    owned: () => ownership.owned(),
    async stop() {
      await ownership.stop();
      sh.cancellations.stop();
      sh.presence.close();
      sh.pub.close();
      sh.fast.pub.close();
      await fastNats.nc.drain().catch(() => undefined);
      fastRedis.disconnect();
    },
  };
}
