// Shard actor: owns user shards by lease; for each fan chunk of an owned shard runs the per-recipient policy, emits sends, deferrals, receipts and trails, and checkpoints its state.
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";

import { type ConsumerMessages, DeliverPolicy, type JsMsg } from "@nats-io/jetstream";

import { Cancellations } from "../lib/campaign/cancellations.js";
import { backoffMs } from "../lib/core/backoff.js";
import { policyClock } from "../lib/core/clock.js";
import { encode } from "../lib/core/codec.js";
import type { Config } from "../lib/core/config.js";
import { Fenced } from "../lib/core/errors.js";
import { fanDecidedKey, receiptFoldedKey } from "../lib/core/keys.js";
import type { Logger } from "../lib/core/log.js";
import { ownValue } from "../lib/core/own-keys.js";
import { BUCKET, CLASS_PRIORITIES, fanSubject, GATEWAY_CHANNELS, LANE_CLASSES, type LaneClass, MSGID, PRIORITIES, type Priority, STREAM } from "../lib/core/subjects.js";
import type { FanChunk } from "../lib/core/types.js";
import { readStoredUsers } from "../lib/directory/directory.js";
import { Admission, LatencyReporter } from "../lib/flow/admission.js";
import { chunksReconciled } from "../lib/flow/fan-publisher.js";
import { JsPublisher } from "../lib/flow/js-publisher.js";
import { decodeAs, oldestAgeMs, PoisonMessage, UrgencyGate } from "../lib/flow/lanes.js";
import type { Lease } from "../lib/flow/lease.js";
import { PriorityBuffer } from "../lib/flow/priority-buffer.js";
import { isoToUs, PULL_EXPIRES_MS, startTimeOf, storedAtUs, watchOrdered } from "../lib/flow/pull.js";
import { Semaphore } from "../lib/flow/semaphore.js";
import { ShardOwnership } from "../lib/flow/shard-ownership.js";
import { reconcileWanted, StreamReconciler } from "../lib/flow/stream-reconciler.js";
import { publishChecked, type TakenMark } from "../lib/flow/stream-reconciler.js";
import { presenceReader, PresenceView } from "../lib/inapp/presence.js";
import { perLaneClass } from "../lib/infra/lane-connections.js";
import { readerReopens, shedTotal, stageItems } from "../lib/infra/metrics.js";
import { type Nats, retryTransient } from "../lib/infra/nats.js";
import type { Redis } from "../lib/infra/redis.js";
import { type ChunkDecision, decideChunk, needsProfile, stopsOf, wantsSms } from "../lib/shard/chunk-decision.js";
import { chunkOutputs } from "../lib/shard/chunk-outputs.js";
import { CollapseClaims, unsentUsers } from "../lib/shard/collapse-claims.js";
import { DedupWindow } from "../lib/shard/dedup-window.js";
import { DigestBook, digestNotification } from "../lib/shard/digests.js";
import { type PolicyConfig, policyFrom } from "../lib/shard/policy.js";
import { RateBuckets } from "../lib/shard/rate-buckets.js";
import { CheckpointStore, emptyHead, startPositions } from "../lib/shard/shard-checkpoint.js";
import { takenKeys } from "../lib/shard/taken-keys.js";

export interface ShardDeps {
  cfg: Config;
  nats: Nats;
  redis: Redis;
  log: Logger;
  now?: () => number;
  /** Owner id of this process (default host-pid-random). */
  owner?: string;
  /** The lane classes this process owns shards of (default both); `nfx run shard --lanes urgent|bulk` runs one. */
  lanes?: readonly LaneClass[];
}


/** One output of a decided chunk, encoded: where, under which message id, and the keys its reconciler checks (null: unchecked). */
interface EncodedOutput {
  subject: string;
  msgId: string;
  data: Uint8Array;
  keys: TakenMark[] | null;
}
/** Shared by every shard a process owns, of either lane class. */
interface Shared {
  d: ShardDeps;
  owner: string;
  now: () => number;
  policy: PolicyConfig;
  cancellations: Cancellations;
  /** Urgent chunks go first: in a process that runs both classes, bulk chunks wait for them between heavy steps. */
  urgency: UrgencyGate;
  /** Presence from events, used instead of the Redis keys once warm. */
  presence: PresenceView;
  /**
   * Bounds the lane readers this process opens at once, most urgent lanes first. After a nats-server loss every reader whose
   * consumer it held is opened again through the new JetStream meta leader: all at once, the creations time out and are
   * asked again, and the urgent lanes wait behind the bulk ones.
   */
  readerOpens: Semaphore;
  log: Logger;
}

/**
 * What the owners of one lane class share in a process. A process running
 * both classes gives the urgent class connections of its own: on the shared
 * ones an urgent read or publish would queue behind megabytes of campaign
 * reads and send batches (Redis and NATS answer each connection in order).
 */
interface ClassShared {
  cls: LaneClass;
  prios: readonly Priority[];
  store: CheckpointStore;
  js: Nats["js"];
  /** The connection `js` rides on (its reconnects are watched by the lane readers). */
  nc: Nats["nc"];
  redis: Redis;
  /** Pipelined JetStream publishes (lib/flow/js-publisher.ts): no per-call error objects on the hot path. */
  pub: JsPublisher;
  /** On replicated streams, checks that each send batch reached a gateway and each receipt batch stayed in NFX_RECEIPTS, and publishes again those a stream lost (lib/flow/stream-reconciler.ts); null on one nats-server. */
  reconciler: StreamReconciler | null;
  /** Whether each chunk decided is marked in Redis for its publisher's reconciler (`shard.reconcileChunks`: lib/flow/fan-publisher.ts). */
  marksDecided: boolean;
  /** Presence from the Redis keys, while the view is not warm. */
  readPresence: (shard: number, users: readonly string[]) => Promise<boolean[]>;
  collapse: CollapseClaims;
  /** Chunks in flight across this class's shards (bulk: `shard.concurrency`); null: no process-wide bound (urgent: each shard's `chunksInFlight`). */
  gate: Semaphore | null;
  /** Users of the chunks in flight across this class's shards (bulk: `shard.usersInFlight`, each chunk weighing its users); null when `gate` is. */
  usersGate: Semaphore | null;
  /** Bulk chunks of a process that also runs the urgent class wait for urgent work between heavy steps. */
  yields: boolean;
  /** Latency from acceptance to decision; the urgent class reports it to admission control. */
  latency: LatencyReporter;
  /** The bulk class's pace, set by urgent latency (lib/flow/admission.ts); null for the urgent class. */
  admission: Admission | null;
  /** Called when an owner stopped itself (fenced or failed): its shard is dropped and taken afresh. */
  dropped(shard: number): void;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Lane readers a process opens at once ({@link Shared.readerOpens}). */
const READER_OPENS_AT_ONCE = 4;

/** How long a decided chunk's mark lives (lib/core/keys.ts `fanDecidedKey`): its publisher checks it every 50 s at most. */
const FAN_DECIDED_SEC = 3600;

/** Chunks read ahead per lane. */
const READ_AHEAD = 8;
/** How often held digests whose window closed are looked for. */
const DIGEST_TICK_MS = 500;

/** One lane's ordered reader, its stall watch, the last chunk it read, and whether it is being replaced. */
interface LaneReader {
  it: ConsumerMessages;
  watch: { stop(): void };
  lastSeq: number;
  /** When the stream stored the chunk at `lastSeq` (µs; 0: not known). */
  lastAt: number;
  reopening: boolean;
}

/**
 * One owned shard's lanes of one class. Reads each of its priority lanes of
 * `nfx.fan.<prio>.<shard>` from the checkpointed position (ordered consumers;
 * no acks: the checkpoint is the position), decides chunks (up to
 * `chunksInFlight` at once, the most urgent lane first), and every
 * `checkpointMs` pauses, waits for chunks in flight, and writes positions +
 * dedup window + buckets by compare-and-set (what changed since the last write,
 * or everything when the store asks for it: CheckpointStore.wantsFull). Every emit and checkpoint first
 * passes the fence (`Lease.fence`: the lease on the monotonic clock); a
 * checkpoint write after a takeover fails. Either way the owner stops without writing.
 */
class ShardOwner {
  private readonly state: { buckets: RateBuckets; dedup: DedupWindow; digests: DigestBook };
  private pos = startPositions();
  /** When the stream stored the chunk at each lane's `pos` (µs): a reader starts after it by time, not by sequence. */
  private posAt = startPositions();
  /** Each lane's position its chunks were last dropped from the stream up to. */
  private readonly purged = startPositions();
  /** The stored checkpoint this owner writes on from (revision, full state, changes since). */
  private head = emptyHead();
  /** The last checkpoint write failed: the changes it carried are not stored, so the next one is whole. */
  private lastWriteFailed = false;
  /** Chunks read ahead, up to READ_AHEAD per lane, taken most urgent first. */
  private readonly buf = new PriorityBuffer<JsMsg>(READ_AHEAD);
  private readonly pending: Record<Priority, { seq: number; at: number; done: boolean }[]> = { critical: [], high: [], normal: [], bulk: [] };
  /** Each lane's current reader. */
  private readonly lanes: Partial<Record<Priority, LaneReader>> = {};
  private inflight = 0;
  private paused = false;
  private stopping = false;
  private dirty = false;
  private waiters: (() => void)[] = [];
  private loop: Promise<void> = Promise.resolve();
  /** When this owner started reading (a chunk replayed from the checkpoint has waited only since then). */
  private startedAt = Date.now();
  private timer: NodeJS.Timeout | null = null;
  private digestTimer: NodeJS.Timeout | null = null;
  private digesting = false;
  private checkpointing: Promise<void> | null = null;
  private readonly log: Logger;
  /** Names this owner in {@link Fenced} messages. */
  private readonly holder: string;

  constructor(private readonly sh: Shared, private readonly cl: ClassShared, readonly shard: number, private readonly lease: Lease) {
    this.log = sh.log.child({ shard, lanes: cl.cls, epoch: lease.revision });
    this.holder = `shard ${shard} (${cl.cls})`;
    this.state = { buckets: new RateBuckets(), dedup: new DedupWindow(sh.d.cfg.shard.dedupWindowSec * 1000, sh.now), digests: new DigestBook() };
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
    const loaded = await this.cl.store.load(this.shard);
    if (loaded.cp) {
      this.pos = loaded.cp.pos;
      this.posAt = loaded.cp.posAt;
      // The full state, then each change written since, in order.
      for (const sec of loaded.cp.sections) {
        this.state.dedup.restore(sec.dedup);
        this.state.buckets.restore(sec.buckets, Date.now() - sec.at);
      }
      this.state.digests.restore(loaded.cp.digests);
    }
    this.head = loaded.head;
    // Written whole under this lease: fences earlier owners and starts a new chain of changes.
    await this.writeCheckpoint(true);
    this.log.info({ pos: this.pos, posAt: this.posAt, dedup: this.state.dedup.size, buckets: this.state.buckets.size, digests: this.state.digests.size, from: loaded.cp?.owner, sections: loaded.cp?.sections.length ?? 0 }, "shard restored");
    this.startedAt = Date.now();
    for (const p of this.cl.prios) await this.pump(p);
    this.loop = this.run();
    this.timer = setInterval(() => void this.checkpoint().catch((err) => this.fail(err)), cfg.shard.checkpointMs);
    this.digestTimer = setInterval(() => void this.sendDigests().catch((err) => this.fail(err)), DIGEST_TICK_MS);
  }

  /**
   * Sends every held digest whose window has closed: read its user, decide it as a notification of its own (quiet
   * hours, cap, dedup and route apply: one send against the cap), publish its outputs under message ids of the digest's
   * id, then forget it (the next checkpoint no longer holds it). Counted as a chunk in flight, so a checkpoint never
   * sees it half done. Sent again after a crash before that checkpoint, it has the same id and content: its publishes
   * are dropped as duplicates and the gateways' delivery keys stop a second provider call.
   */
  private async sendDigests(): Promise<void> {
    const digests = this.state.digests;
    if (digests.size === 0 || this.paused || this.stopping || this.digesting) return;
    const due = digests.due(this.sh.now());
    if (due.length === 0) return;
    this.digesting = true;
    this.inflight++;
    try {
      const { d, policy } = this.sh;
      const cl = this.cl;
      for (const h of due) {
        if (this.stopping) return;
        const n = digestNotification(h);
        const chunk: FanChunk = { type: "fan_chunk", shard: this.shard, chunk: 0, notification: n, users: [h.user] };
        const profile = needsProfile(n, policy);
        const users = await this.retry("directory read", () => readStoredUsers(cl.redis, this.shard, [h.user], { profile }));
        const smsStopped = wantsSms(n, policy) ? await this.retry("sms stops", () => stopsOf(cl.redis, users.phones())) : null;
        const stampedAt = Date.now();
        const decidedAt = this.sh.now();
        const decision = decideChunk(chunk, { users, online: null, collapsed: null, now: decidedAt, cancelled: this.sh.cancellations.has(h.brief.id), policy, state: this.state, trails: d.cfg.policy.trails, smsStopped });
        const outs = this.encodeOutputs(chunk, decision, decidedAt, stampedAt);
        await this.retry("publish", () => this.publish(outs, cl.pub));
        digests.remove(h.id);
        this.dirty = true;
        this.log.info({ digest: h.id, user: h.user, key: h.key, items: h.count }, "digest sent");
      }
    } finally {
      this.digesting = false;
      this.inflight--;
      this.notify();
    }
  }

  /**
   * Opens lane `p`'s ordered reader after stream sequence `after` and pushes what it reads into the buffer, in order.
   * A reader replaced for its silent consumer ({@link ShardOwner.reopenStalled}) ends and the loop goes on with its successor; one that
   * ends otherwise (it gave up recreating itself after a nats-server loss) gives the shard up, and the next tick takes
   * it afresh from its checkpoint.
   */
  private async pump(p: Priority): Promise<void> {
    const lane: LaneReader = { ...(await this.openReader(p, this.pos[p], this.posAt[p])), lastSeq: this.pos[p], lastAt: this.posAt[p], reopening: false };
    this.lanes[p] = lane;
    void (async () => {
      for (;;) {
        const it = lane.it;
        for await (const m of it) {
          if (this.stopping) return;
          // A replaced reader may still hand over what its successor reads too. A chunk at or before the last one read
          // by sequence but stored after it is new: the stream's sequence went back (nats-server, docs/operations.md).
          const at = storedAtUs(m);
          if (m.seq <= lane.lastSeq && (lane.lastAt === 0 || at <= lane.lastAt)) continue;
          lane.lastSeq = m.seq;
          lane.lastAt = at;
          this.buf.push(p, m);
          this.notify();
          await this.buf.waitForRoom(p, () => this.stopping);
        }
        if (this.stopping) return;
        if (lane.it === it) throw new Error(`lane ${p} reader ended`);
      }
    })().catch((err) => this.fail(err));
  }

  /**
   * An ordered reader of lane `p` from the chunk after stream sequence `after`, stored at `afterAt` (µs): by time when
   * that is known (a stream whose sequence went back after a nats-server crash gives new chunks sequence numbers at
   * or before `after`; by time they are still after it), else by sequence. On a nats-server cluster consumers are created by
   * the JetStream meta leader: while one is being elected, asks again (the lease is kept meanwhile) rather than give the
   * shard up and make every owner start over.
   */
  private openReader(p: Priority, after: number, afterAt: number): Promise<Pick<LaneReader, "it" | "watch">> {
    const open = async (): Promise<Pick<LaneReader, "it" | "watch">> => {
      const c = await this.cl.js.consumers.get(STREAM.fan, {
        filter_subjects: fanSubject(p, this.shard),
        ...(afterAt > 0 ? { deliver_policy: DeliverPolicy.StartTime, opt_start_time: startTimeOf(afterAt) } : after > 0 ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: after + 1 } : { deliver_policy: DeliverPolicy.All }),
      });
      const it = await c.consume({ max_messages: READ_AHEAD, expires: PULL_EXPIRES_MS });
      // The client recreating the consumer (after a reconnect) starts it by sequence: replaced at once by one that starts by time.
      const watch = watchOrdered(it, this.cl.nc, (why) => void this.reopenStalled(p, it, why).catch((err) => this.fail(err)), () => {
        if (this.lanes[p]?.it !== it) return;
        this.log.warn({ lane: p, after: this.lanes[p].lastSeq }, "shard reader recreating its consumer; opening it again from the time of the last chunk read");
        void this.reopenStalled(p, it, "consumer recreated by the client", true).catch((err) => this.fail(err));
      });
      return { it, watch };
    };
    // Most urgent lanes first: critical, high, normal, bulk.
    return retryTransient(() => this.sh.readerOpens.run(open, PRIORITIES.indexOf(p)), {
      baseMs: 250, maxMs: 3000, attempts: 20, stop: () => this.stopping,
      onRetry: (err, attempt) => this.log.warn({ err, lane: p, attempt }, "shard reader not open yet; retrying"),
    });
  }

  /**
   * Lane `p`'s reader `it` is stuck (`why`, from {@link watchOrdered}: its consumer silent, not recreated, or not
   * resumed after a reconnect, its server most likely down). Unless it is only held back by a full buffer, it is
   * replaced by a new reader from the chunk after the last one read, whose consumer the meta leader places on a live
   * server.
   */
  private async reopenStalled(p: Priority, it: ConsumerMessages, why: string, evenIfFull = false): Promise<void> {
    const lane = this.lanes[p];
    if (!lane || lane.it !== it || lane.reopening || this.stopping || (!evenIfFull && this.buf.size(p) >= READ_AHEAD)) return;
    lane.reopening = true;
    try {
      this.log.warn({ lane: p, after: lane.lastSeq, why }, "shard reader's consumer silent; opening it again");
      const old = lane.watch;
      Object.assign(lane, await this.openReader(p, lane.lastSeq, lane.lastAt));
      readerReopens.inc({ stage: "shard" });
      if (this.stopping) void this.closeLane(lane);
      old.stop();
      void it.close().catch(() => undefined);
    } finally {
      lane.reopening = false;
    }
  }

  /** Starts chunks, most urgent lane first, up to `chunksInFlight` at once (and the class's process-wide gate, if any). */
  private async run(): Promise<void> {
    const limit = this.sh.d.cfg.shard.chunksInFlight;
    while (!this.stopping) {
      if (this.paused || this.inflight >= limit) {
        await this.wait();
        continue;
      }
      const next = this.buf.take();
      if (!next) {
        await this.wait();
        continue;
      }
      const [m, p] = next;
      const entry = { seq: m.seq, at: storedAtUs(m), done: false };
      this.pending[p].push(entry);
      this.inflight++;
      const work = (): Promise<void> => this.handle(m);
      const gate = this.cl.gate;
      // Urgent work is marked as such, so the bulk owners of a process running both classes let it go first.
      void (this.cl.cls === "urgent" ? this.sh.urgency.urgent(work) : gate ? gate.run(work) : work())
        .then(() => {
          entry.done = true;
          this.advance(p);
        })
        .catch((err) => this.fail(err))
        .finally(() => {
          this.inflight--;
          this.notify();
        });
    }
  }

  /** Moves a lane's position past every leading chunk that is done. */
  private advance(p: Priority): void {
    const q = this.pending[p];
    while (q.length > 0 && q[0].done) {
      const e = q.shift()!;
      this.pos[p] = e.seq;
      this.posAt[p] = e.at;
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

  /**
   * Decides one fan chunk and publishes its outputs. A chunk with a collapse
   * key first claims it in Redis for its users, and gives back the claims of
   * users it was not sent to (lib/shard/collapse-claims.ts). Bulk chunks of a
   * process that also runs the urgent class wait for urgent work before each heavy step.
   */
  private async handle(m: JsMsg): Promise<void> {
    const t0 = performance.now();
    let chunk: FanChunk;
    try {
      chunk = decodeAs<FanChunk>(m.data, "fan_chunk");
    } catch (err) {
      this.log.error({ err, seq: m.seq }, "poison fan chunk skipped");
      if (err instanceof PoisonMessage) return this.markDecided(m);
      throw err;
    }
    // A bulk chunk also weighs its users against the process's `usersInFlight` (taken inside its `concurrency` slot, so at most that many decoded chunks wait).
    const users = this.cl.usersGate;
    return users ? users.run(() => this.decideAndPublish(m, chunk, t0), 0, chunk.users.length) : this.decideAndPublish(m, chunk, t0);
  }

  /** {@link handle} of a decoded chunk, `t0` when it started. */
  private async decideAndPublish(m: JsMsg, chunk: FanChunk, t0: number): Promise<void> {
    const cl = this.cl;
    const n = chunk.notification;
    const ck = n.collapseKey;
    // Only the encoded outputs outlive the decision: its records, sends and trails die young instead of
    // being held (and promoted to V8's old generation) while the publishes wait for their acks.
    const done = await this.decide(chunk);
    if (cl.yields) await this.sh.urgency.clear();
    await this.retry("publish", () => this.publish(done.outs, cl.pub));
    if (ck && done.unsent) {
      const unsent = done.unsent;
      await this.retry("collapse release", () => cl.collapse.release(this.shard, ck, n.id, unsent));
    }
    await this.markDecided(m);
    stageItems.inc({ stage: "shard" }, chunk.users.length);
    for (const reason of done.shed) shedTotal.inc({ stage: "shard", priority: n.priority, reason });
    cl.latency.observe(n.priority, n.createdAt, done.stampedAt);
    if (cl.admission) await cl.admission.pace(performance.now() - t0);
  }

  /**
   * Reads what deciding `chunk` needs (directory records, presence, collapse claims, SMS stops), decides it once (the
   * decision changed the dedup window and buckets, so a failed publish is retried with the same outputs) and encodes
   * its outputs. Resolves them with the users a collapse key was claimed for but not sent to, and the shed reasons.
   */
  private async decide(chunk: FanChunk): Promise<{ outs: EncodedOutput[]; unsent: string[] | null; shed: string[]; stampedAt: number }> {
    const { d, policy } = this.sh;
    const cl = this.cl;
    const n = chunk.notification;
    const profile = needsProfile(n, policy);
    const wantsPresence = (ownValue(policy.categories, n.category)?.presenceRouting ?? false) && policy.available.has("inapp");
    const ck = n.collapseKey;
    const [users, online, collapsed] = await this.retry("directory read", () =>
      Promise.all([
        readStoredUsers(cl.redis, this.shard, chunk.users, { profile }),
        !wantsPresence ? Promise.resolve(null) : this.sh.presence.warm() ? Promise.resolve(chunk.users.map((u) => this.sh.presence.online(u))) : cl.readPresence(this.shard, chunk.users),
        ck ? cl.collapse.claim(this.shard, ck, n.id, chunk.users) : Promise.resolve(null),
      ]),
    );
    // SMS in play: which recipients' numbers replied STOP (one HMGET per chunk).
    const smsStopped = wantsSms(n, policy) ? await this.retry("sms stops", () => stopsOf(cl.redis, users.phones())) : null;
    if (cl.yields) await this.sh.urgency.clear();
    const stampedAt = Date.now();
    const decidedAt = this.sh.now();
    const decision = decideChunk(chunk, { users, online, collapsed, now: decidedAt, cancelled: this.sh.cancellations.has(n.id), policy, state: this.state, trails: d.cfg.policy.trails, smsStopped });
    const shed: string[] = [];
    for (const e of decision.receipts) if (e.outcome === "shed") shed.push(e.reason ?? "");
    return { outs: this.encodeOutputs(chunk, decision, decidedAt, stampedAt), unsent: ck && collapsed ? unsentUsers(chunk.users, collapsed, decision) : null, shed, stampedAt };
  }

  /**
   * Marks fan chunk `m` decided (or skipped) for the reconciler of whoever published it (lib/flow/fan-publisher.ts),
   * under the id it was first published as; a no-op when chunks are not checked.
   */
  private async markDecided(m: JsMsg): Promise<void> {
    const id = this.cl.marksDecided ? m.headers?.get("Nats-Msg-Id") : undefined;
    if (!id) return;
    const key = fanDecidedKey(this.shard, MSGID.original(id));
    await this.retry("decided mark", () => this.cl.redis.set(key, "1", "EX", FAN_DECIDED_SEC));
  }

  /** Age in ms of the oldest chunk read but not yet started (0: none waits). */
  waitingMs(now: number): number {
    return oldestAgeMs(this.buf.items(), now, this.startedAt);
  }

  /**
   * A decided chunk's outputs (lib/shard/chunk-outputs.ts), all with message ids derived from the chunk's, encoded once;
   * send and receipt batches with the keys that tell their reconciler they were taken (checked end to end).
   */
  private encodeOutputs(chunk: FanChunk, dec: ChunkDecision, decidedAt: number, stampedAt: number): EncodedOutput[] {
    const outs = chunkOutputs(chunk, dec, { decidedAt, stampedAt, owner: this.sh.owner, epoch: this.lease.revision, sendBatchSize: this.sh.d.cfg.shard.sendBatchSize });
    const checked = this.cl.reconciler !== null;
    return outs.map((o) => ({
      subject: o.subject,
      msgId: o.msgId,
      data: encode(o.body),
      // Send batches are done with once a gateway finished them (their done key), receipt batches once the tracker folded them.
      keys: !checked ? null : o.body.type === "send_batch" ? takenKeys(o.msgId) : o.body.type === "receipts" ? [receiptFoldedKey(o.msgId)] : null,
    }));
  }

  /** Publishes encoded outputs; the fence first: nothing is published once the lease is gone (checked on the monotonic clock, right before the publishes leave). */
  private publish(outs: readonly EncodedOutput[], pub: JsPublisher): Promise<unknown> {
    this.lease.fence(this.holder);
    const rec = this.cl.reconciler;
    return Promise.all(outs.map((o) => (rec && o.keys ? publishChecked(pub, rec, o.subject, o.msgId, o.data, o.keys) : pub.publish(o.subject, o.data, o.msgId))));
  }

  /** Writes the state as of the current positions (call only with nothing in flight). */
  private async writeCheckpoint(whole = false): Promise<void> {
    this.lease.fence(this.holder);
    // Only what changed since the last write, unless the store wants the full state again, the changes outgrew what the
    // last whole write held (their journals dropped them), or the last write failed (its changes are not stored).
    const full = whole || this.lastWriteFailed || CheckpointStore.wantsFull(this.head) || this.state.dedup.changesOverflowed || this.state.buckets.changesOverflowed;
    const st = this.state;
    const cp = { owner: this.sh.owner, epoch: this.lease.revision, at: Date.now(), pos: { ...this.pos }, posAt: { ...this.posAt }, full, dedup: full ? st.dedup.pack() : st.dedup.packChanges(), buckets: full ? st.buckets.pack() : st.buckets.packChanges(), digests: st.digests.pack() };
    this.lastWriteFailed = true;
    this.head = await this.cl.store.write(this.shard, cp, this.head);
    this.lastWriteFailed = false;
    this.dirty = false;
    // Chunks up to the checkpoint are never read again: drop them from the stream.
    for (const p of this.cl.prios) if (cp.pos[p] > 0 && cp.pos[p] !== this.purged[p]) void this.purgeTo(p, cp.pos[p], cp.posAt[p]).catch(() => undefined);
  }

  /**
   * Drops lane `p`'s chunks up to stream sequence `pos` from the stream, if the chunk there is still the one decided
   * (stored at `posAt`): after the stream's sequence went back (nats-server, docs/operations.md) numbers up to `pos`
   * hold new chunks, which stay (the stream's age limit removes them once read).
   */
  private async purgeTo(p: Priority, pos: number, posAt: number): Promise<void> {
    const jsm = this.sh.d.nats.jsm;
    if (posAt > 0) {
      const m = await jsm.streams.getMessage(STREAM.fan, { seq: pos });
      if (!m || m.subject !== fanSubject(p, this.shard) || Math.abs(isoToUs(m.timestamp) - posAt) > 1) return;
    }
    await jsm.streams.purge(STREAM.fan, { filter: fanSubject(p, this.shard), seq: pos + 1 });
    this.purged[p] = pos;
  }

  /** Pauses intake, waits for chunks in flight, and checkpoints if anything moved. */
  checkpoint(): Promise<void> {
    if (this.checkpointing) return this.checkpointing;
    // Nothing moved: nothing to write. (Checked before the promise is kept: a write that settled at once used to clear
    // `checkpointing` before it was set, so an owner whose first tick found nothing to write never wrote again.)
    if (!this.dirty) return Promise.resolve();
    const run = async (): Promise<void> => {
      this.paused = true;
      while (this.inflight > 0) await this.wait();
      await this.writeCheckpoint();
    };
    const p: Promise<void> = run().finally(() => {
      this.paused = false;
      if (this.checkpointing === p) this.checkpointing = null;
      this.notify();
    });
    this.checkpointing = p;
    return p;
  }

  private fail(err: unknown): void {
    if (this.stopping) return;
    if (err instanceof Fenced) this.log.warn({ err: err.message }, "fenced: stopping this shard without writing");
    else this.log.error({ err }, "shard owner failed; stopping it");
    void this.stop(false).finally(() => this.cl.dropped(this.shard));
  }

  /** Stops reading. `graceful`: finishes chunks in flight and writes a final checkpoint; otherwise writes nothing. */
  async stop(graceful: boolean): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.digestTimer) clearInterval(this.digestTimer);
    this.digestTimer = null;
    if (graceful && !this.stopping) {
      this.paused = true;
      while (this.inflight > 0) await this.wait();
      await this.checkpointing?.catch(() => undefined);
      await this.writeCheckpoint().catch((err) => this.log.warn({ err }, "final checkpoint failed"));
    }
    this.stopping = true;
    this.buf.wakeAll();
    this.notify();
    await Promise.all(Object.values(this.lanes).map((l) => this.closeLane(l)));
    await this.loop;
  }

  /** Stops a lane reader's watch and closes it. */
  private closeLane(lane: Pick<LaneReader, "it" | "watch">): Promise<unknown> {
    lane.watch.stop();
    return lane.it.close().catch(() => undefined);
  }
}

/**
 * Starts the shard actor: for each lane class in `d.lanes` (default both),
 * joins that class's shard ownership (lib/flow/shard-ownership.ts) and runs
 * a {@link ShardOwner} for every shard of the class this process holds. A
 * process running both classes opens a second NATS and Redis connection for
 * the urgent class. `owned()`: shards held, per class.
 */
export async function startUserShard(d: ShardDeps): Promise<{ stop(): Promise<void>; owned(cls?: LaneClass): number[] }> {
  const owner = d.owner ?? `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
  const lanes = d.lanes ?? LANE_CLASSES;
  const log = d.log.child({ actor: "user-shard", owner, lanes: lanes.join(",") });
  const sh: Shared = {
    d, owner, log,
    now: d.now ?? policyClock(),
    policy: policyFrom(d.cfg),
    cancellations: await Cancellations.watch(await d.nats.kvm.open(BUCKET.campaigns)),
    presence: new PresenceView(d.nats, d.cfg.ws.presenceTtlSec * 1000),
    urgency: new UrgencyGate(),
    readerOpens: new Semaphore(READER_OPENS_AT_ONCE),
  };
  const both = lanes.length > 1;
  const checkpoints = await d.nats.kvm.open(BUCKET.checkpoints);
  const leases = await d.nats.kvm.open(BUCKET.leases);
  const ownerships = new Map<LaneClass, ShardOwnership>();
  const run = await perLaneClass({ ...d, lanes, as: "shard", name: "nfx-shard" }, async ({ nats, redis }, cls) => {
    const pub = new JsPublisher(nats.nc);
    const streams = [...GATEWAY_CHANNELS.map((c) => STREAM.send(c)), STREAM.receipts];
    const reconciler = reconcileWanted(d.cfg.shard.reconcileSends, d.cfg.streams.replicas) ? new StreamReconciler({ jsm: nats.jsm, redis, pub, log, streams, maxBytes: d.cfg.shard.reconcileMaxMb * 1024 * 1024 }) : null;
    const owners = new Map<number, ShardOwner>();
    const cl: ClassShared = {
      cls, prios: CLASS_PRIORITIES[cls], store: new CheckpointStore(checkpoints, cls, d.cfg.shard.checkpointInlineKb * 1024), js: nats.js, nc: nats.nc, redis, pub, reconciler,
      marksDecided: chunksReconciled(d.cfg),
      readPresence: presenceReader(redis),
      collapse: new CollapseClaims(redis, d.cfg.shard.dedupWindowSec * 1000),
      gate: cls === "bulk" ? new Semaphore(d.cfg.shard.concurrency) : null,
      usersGate: cls === "bulk" ? new Semaphore(d.cfg.shard.usersInFlight) : null,
      yields: cls === "bulk" && both,
      latency: new LatencyReporter(nats, d.cfg, "decided", `shard-${cls}`, cls === "urgent", () => {
        const t = Date.now();
        let worst = 0;
        for (const o of owners.values()) worst = Math.max(worst, o.waitingMs(t));
        return worst;
      }),
      admission: cls === "bulk" ? new Admission(nats, d.cfg, "shard", log) : null,
      dropped: (s) => void ownership.drop(s),
    };
    const ownership: ShardOwnership = new ShardOwnership({
      kv: leases, jsm: d.nats.jsm, cls, shards: d.cfg.cluster.shards, owner, leaseMs: d.cfg.shard.leaseMs, log,
      acquired: async (s, lease) => {
        const o = new ShardOwner(sh, cl, s, lease);
        owners.set(s, o);
        await o.start();
      },
      released: async (s, graceful) => {
        const o = owners.get(s);
        owners.delete(s);
        await o?.stop(graceful);
      },
    });
    ownerships.set(cls, ownership);
    await ownership.start();
    return {
      stop: async () => {
        await ownership.stop();
        cl.latency.close();
        cl.admission?.close();
        reconciler?.stop();
        pub.close();
      },
    };
  });
  log.info(Object.fromEntries([...ownerships].map(([c, o]) => [`${c}_shards`, o.owned().length])), "user-shard ready");
  return {
    owned: (cls?: LaneClass) => [...new Set([...ownerships].filter(([c]) => !cls || c === cls).flatMap(([, o]) => o.owned()))].sort((a, b) => a - b),
    async stop() {
      await run.stop();
      sh.cancellations.stop();
      sh.presence.close();
    },
  };
}
