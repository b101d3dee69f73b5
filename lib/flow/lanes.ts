// Priority-lane consumption: one pull consumer per priority, handled by a shared worker pool that always takes the most urgent lane first.
import type { JetStreamClient, JsMsg } from "@nats-io/jetstream";

import { backoffMs } from "../core/backoff.js";
import { decode } from "../core/codec.js";
import type { Logger } from "../core/log.js";
import { MSGID, PRIORITIES, type Priority } from "../core/subjects.js";
import { PriorityBuffer } from "./priority-buffer.js";
import { readDurable } from "./pull.js";

/** Thrown by a handler for a message that can never be processed (undecodable, wrong type): it is terminated, not redelivered. */
export class PoisonMessage extends Error {}

/**
 * The id a batch message is handled under: the message id it was first published under (a copy its publisher published
 * again because its stream lost the first is the same batch: {@link MSGID.original}), or `seq:<stream sequence>`
 * without a message id.
 */
export const firstIdOf = (m: JsMsg): string => MSGID.original(m.headers?.get("Nats-Msg-Id") || `seq:${m.seq}`);

/** Decodes a msgpack message body that must be of `type`. Throws {@link PoisonMessage} otherwise. */
export function decodeAs<T extends { type: string }>(data: Uint8Array, type: T["type"]): T {
  let v: T;
  try {
    v = decode<T>(data);
  } catch (err) {
    throw new PoisonMessage(`undecodable ${type} message: ${(err as Error).message}`);
  }
  if (v?.type !== type) throw new PoisonMessage(`expected a ${type} message, got ${String(v?.type)}`);
  return v;
}

/** A message whose handling goes on after its handler resolved: acked when `later` resolves, redelivered (or terminated, for a {@link PoisonMessage}) when it rejects. */
export interface Later {
  later: Promise<void>;
}

export interface LaneOptions {
  js: JetStreamClient;
  stream: string;
  /** Durable consumer name for each priority lane. */
  consumer: (prio: Priority) => string;
  /** The lanes consumed (default every priority). */
  priorities?: readonly Priority[];
  /** Messages handled at once across all lanes. */
  concurrency: number;
  /** Messages pulled ahead per lane. Keep small: a buffered message's ack timer is running (progress is signalled for it too). */
  prefetch: number;
  /** Seconds before an unacked message is redelivered; the runner signals progress at a third of it. */
  ackWaitSec: number;
  log: Logger;
  /**
   * Processes one message. Must resolve only after everything it produces is
   * durably published; the runner then acks. A throw naks the message for
   * redelivery after a delay; a {@link PoisonMessage} terminates it. Resolving
   * a {@link Later} frees the worker at once: the message is settled as above
   * when `later` settles, its progress signalled until then (the handler
   * bounds how many it leaves open).
   */
  handle: (msg: JsMsg, prio: Priority) => Promise<void | Later>;
  /**
   * Messages of each lane out unacked with a previous reader as this one starts (a webhook partition's next holder,
   * once they are all due again): the lane's first that many redeliveries are gathered and handed on oldest first (by
   * stream sequence), since nats-server redelivers in the order messages were handed back or fell due, not in the order
   * they came. Gathering ends early at the lane's first message delivered for the first time (the server sends
   * redeliveries first) or {@link CATCH_UP_IDLE_MS} after the last one.
   */
  catchUp?: Partial<Record<Priority, number>>;
}

/** How long a lane gathering a previous reader's redeliveries ({@link LaneOptions.catchUp}) waits for the next one before it hands on what it has. */
export const CATCH_UP_IDLE_MS = 1000;

export interface Lanes {
  /**
   * Stops pulling, waits for handlers in progress (not for messages they finish {@link Later}: their owner waits for
   * those), and naks what was pulled but not started once the readers are closed, oldest first.
   */
  stop(): Promise<void>;
  /** Resolves when every lane's consumer is bound and pulling. */
  ready: Promise<void>;
  /** Age in ms of the oldest message pulled but not yet started (by its stream timestamp); 0 when none waits. */
  oldestWaitingMs(now?: number): number;
}

/**
 * How long the oldest of `msgs` has waited (0 for none): since it was published, or since `since` (when its reader
 * started) if that is later — a new owner replaying chunks from its checkpoint, or a restarted consumer, has not made
 * them wait. Redelivered messages (a dead reader's) are not counted: their publish time says nothing about this reader.
 */
export function oldestAgeMs(msgs: Iterable<JsMsg>, now = Date.now(), since = 0): number {
  let oldest = Infinity;
  for (const m of msgs) if (m.info.deliveryCount <= 1) oldest = Math.min(oldest, Math.max(since, m.info.timestampNanos / 1e6));
  return oldest === Infinity ? 0 : Math.max(0, now - oldest);
}

/**
 * Starts consuming every priority lane of `stream`. Lanes pull concurrently;
 * a free worker always takes from the most urgent non-empty lane, so a
 * backlog of bulk never delays critical. Ordering and ack rules:
 * docs/architecture.md, "Acks, ordering and ownership".
 */
export function runLanes(o: LaneOptions): Lanes {
  const buf = new PriorityBuffer<JsMsg>(o.prefetch);
  const startedAt = Date.now();
  let stopping = false;
  /** Messages the readers took once stopping, in the order they came: handed back by stop(), after the buffered ones. */
  const late: JsMsg[] = [];
  let wake: (() => void) | null = null;
  const notify = (): void => {
    const w = wake;
    wake = null;
    w?.();
  };

  /** Lanes gathering a previous reader's redeliveries (catchUp): how many are still expected, those held so far. */
  const gathering = new Map<Priority, { want: number; held: JsMsg[]; idle: NodeJS.Timeout }>();
  /** Ends lane `prio`'s gathering: what it held goes into the buffer oldest first (beyond its bound, once). */
  const handOn = (prio: Priority): void => {
    const g = gathering.get(prio);
    if (!g) return;
    gathering.delete(prio);
    clearTimeout(g.idle);
    for (const m of g.held.sort((a, b) => a.seq - b.seq)) buf.push(prio, m);
    notify();
  };
  const lanes = o.priorities ?? PRIORITIES;
  for (const prio of lanes) {
    const want = o.catchUp?.[prio] ?? 0;
    if (want > 0) gathering.set(prio, { want, held: [], idle: setTimeout(() => handOn(prio), CATCH_UP_IDLE_MS) });
  }

  // Each lane is read for as long as the process runs (readDurable: trouble logged, an ended reader opened again).
  const readers = lanes.map((prio) =>
    readDurable({
      js: o.js, stream: o.stream, consumer: o.consumer(prio), maxMessages: o.prefetch, log: o.log.child({ lane: prio }), firstOpenFails: true,
      onMsg: async (m) => {
        // Stopping: handed back once the readers are closed (stop()).
        if (stopping) return void late.push(m);
        const g = gathering.get(prio);
        if (g && m.info.deliveryCount > 1) {
          g.held.push(m);
          if (g.held.length >= g.want) handOn(prio);
          else g.idle.refresh();
          return;
        }
        // The lane's first new message: the server has no more redeliveries for it.
        if (g) handOn(prio);
        buf.push(prio, m);
        notify();
        await buf.waitForRoom(prio, () => stopping);
      },
    }),
  );

  const worker = async (): Promise<void> => {
    while (!stopping) {
      const next = buf.take();
      if (!next) {
        await new Promise<void>((r) => {
          const prev = wake;
          wake = () => {
            prev?.();
            r();
          };
        });
        continue;
      }
      const [m, prio] = next;
      const keepAlive = setInterval(() => m.working(), Math.max(1000, (o.ackWaitSec * 1000) / 3));
      const failed = (err: unknown): void => {
        if (err instanceof PoisonMessage) {
          o.log.error({ err, lane: prio, subject: m.subject, seq: m.seq }, "poison message terminated");
          m.term(err.message);
        } else {
          o.log.warn({ err, lane: prio, subject: m.subject, seq: m.seq, redelivery: m.info.deliveryCount }, "handler failed; will redeliver");
          m.nak(backoffMs(m.info.deliveryCount, { baseMs: 500, maxMs: 30_000 }));
        }
      };
      try {
        const r = await o.handle(m, prio);
        if (r) {
          // Finished later: this worker goes on; the message's progress is signalled until then.
          void r.later.then(() => m.ack(), failed).finally(() => clearInterval(keepAlive));
          continue;
        }
        m.ack();
      } catch (err) {
        failed(err);
      }
      clearInterval(keepAlive);
    }
  };

  // Buffered messages wait for a worker with their ack timers running: signal progress for them too, so a short ack wait redelivers only a dead process's messages.
  const bufferedAlive = setInterval(() => {
    for (const m of buf.items()) m.working();
    for (const g of gathering.values()) for (const m of g.held) m.working();
  }, Math.max(1000, (o.ackWaitSec * 1000) / 3));
  bufferedAlive.unref();

  // Ready once every lane's reader is open; each then reads in the background.
  const ready = Promise.all(readers.map((r) => r.opened)).then(() => undefined);
  const workers = Array.from({ length: o.concurrency }, () => worker());

  return {
    ready,
    oldestWaitingMs: (now?: number) => oldestAgeMs(buf.items(), now, startedAt),
    async stop() {
      stopping = true;
      clearInterval(bufferedAlive);
      await ready.catch(() => undefined);
      buf.wakeAll();
      await Promise.all(readers.map((r) => r.stop()));
      for (const prio of [...gathering.keys()]) handOn(prio);
      // Handed back only once the readers are closed (one handed back while its reader still pulls comes straight back
      // to it, and nats-server 2.9 was seen to deliver a message again as new after that), oldest first: the buffered
      // ones, then those the readers took once stopping.
      for (const m of [...buf.drain(), ...late.splice(0)]) m.nak();
      notify();
      // Wake every idle worker so it sees `stopping`.
      for (let i = 0; i < o.concurrency; i++) notify();
      await Promise.all(workers);
    },
  };
}

/**
 * Lets urgent work go first inside one process. Urgent work runs through
 * {@link UrgencyGate.urgent}; bulk work awaits {@link UrgencyGate.clear}
 * between its heavy synchronous steps, so while anything urgent is in
 * progress the event loop is not handed to bulk work that could hold it for
 * tens of milliseconds. A steady stream of urgent work delays bulk work; that
 * is the point of priority lanes.
 */
export class UrgencyGate {
  private active = 0;
  private waiters: (() => void)[] = [];

  /** Runs `fn` as urgent work. */
  async urgent<T>(fn: () => Promise<T>): Promise<T> {
    this.active++;
    try {
      return await fn();
    } finally {
      if (--this.active === 0) {
        const w = this.waiters;
        this.waiters = [];
        for (const r of w) r();
      }
    }
  }

  /** Resolves at once when no urgent work is in progress, else when the last of it ends. */
  clear(): Promise<void> {
    return this.active === 0 ? Promise.resolve() : new Promise((r) => this.waiters.push(r));
  }
}
