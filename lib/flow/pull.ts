// How long a JetStream pull request waits (it also sets how soon a reader notices that its nats-server is gone), and a durable reader that is never left unread.
import type { Consumer, ConsumerMessages, JetStreamClient, JsMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";

import { backoffMs } from "../core/backoff.js";
import type { Logger } from "../core/log.js";

/**
 * `expires` of every `consume()` (pull consumers and the shard actor's ordered readers). The client asks for server
 * heartbeats every half of it and, after two missed, issues its pull again (or, for an ordered reader, recreates it) —
 * so after a nats-server's loss a reader moves again within about this long, rather than the client's default 30 s.
 * The cost is one pull request per idle reader every 5 s.
 */
export const PULL_EXPIRES_MS = 5000;

/** Heartbeats missed in a row (nats.js counts them every `PULL_EXPIRES_MS / 2`) after which {@link readDurable} opens its reader again. */
export const MISSED_HEARTBEATS_REOPEN = 6;

/**
 * How often a {@link readDurable} reader that has received nothing for that long asks its consumer's state; twice in a
 * row with messages waiting for it and no pull request of any reader waiting at the server, it is opened again. The
 * cost is one consumer look-up per idle reader every 15 s.
 */
export const STALL_CHECK_MS = 15_000;

/** When the stream stored message `m`, in µs since the epoch (the server's clock). */
export const storedAtUs = (m: JsMsg): number => Math.floor(Number(m.info.timestampNanos) / 1000);

/** A stored message's time (RFC 3339 with up to ns, as `StoredMsg.timestamp` gives it) in µs since the epoch. */
export function isoToUs(iso: string): number {
  const m = /^(.*?)(?:\.(\d+))?Z$/.exec(iso);
  if (!m) return Number.NaN;
  return Date.parse(`${m[1]}Z`) * 1000 + Number((m[2] ?? "").padEnd(6, "0").slice(0, 6));
}

/** A consumer start time (RFC 3339, µs) from a stored time in µs: deliveries begin with the first message stored at or after it. */
export function startTimeOf(us: number): string {
  const iso = new Date(Math.floor(us / 1000)).toISOString();
  return `${iso.slice(0, -1)}${String(us % 1000).padStart(3, "0")}Z`;
}

/**
 * Heartbeats in a row an ordered reader may miss (the server sends one every
 * half {@link PULL_EXPIRES_MS} while a pull waits) before it is opened again:
 * about 10 s in which its consumer sent nothing at all. An ordered reader's
 * consumer lives on one server (one replica, in memory); while that server
 * is down the client only asks it again and again, never creating the
 * consumer elsewhere, so a reader on a dead machine would wait for that
 * machine to come back (docs/operations.md, "On N machines").
 */
export const STALL_MISSED_HEARTBEATS = 4;

/**
 * How long an ordered reader may go without resuming (no new pull asked) after its client reconnected, or spend
 * recreating its consumer, before it is opened again. nats.js 3.4, after a reconnect, asks for the consumer's info
 * until its server answers, with its heartbeat watch off and no status: for a consumer whose only server is gone it
 * waits, silent, until that server comes back (docs/operations.md, "On N machines").
 */
export const RESUME_STALL_MS = 10_000;

/** A watched ordered reader: since when it has been expected to resume (0: it is moving), and why. */
interface Watched {
  since: number;
  why: string;
  onStuck: (why: string) => void;
}

const watched = new Set<Watched>();
let sweep: NodeJS.Timeout | null = null;
/** The watched readers of each connection, told of its reconnects by one status loop per connection. */
const byConn = new WeakMap<NatsConnection, Set<Watched>>();

function readersOf(nc: NatsConnection): Set<Watched> {
  let set = byConn.get(nc);
  if (!set) {
    const s = (set = new Set());
    byConn.set(nc, s);
    void (async () => {
      for await (const st of nc.status()) {
        if (st.type === "reconnect") for (const w of s) if (w.since === 0) Object.assign(w, { since: Date.now(), why: "not resumed after a reconnect" });
      }
    })().catch(() => undefined);
  }
  return set;
}

/** Calls the stuck readers' `onStuck` (again every {@link RESUME_STALL_MS} while they stay stuck). */
function sweepStuck(): void {
  const now = Date.now();
  for (const w of watched) {
    if (w.since > 0 && now - w.since > RESUME_STALL_MS) {
      w.since = now;
      w.onStuck(w.why);
    }
  }
}

/**
 * Watches ordered reader `it` on connection `nc` and calls `onStuck(why)` when it is stuck: it missed
 * {@link STALL_MISSED_HEARTBEATS} heartbeats in a row, or for longer than {@link RESUME_STALL_MS} it has been
 * recreating its consumer or has not resumed after the client reconnected. The caller replaces the reader (from the
 * message after the last one it read) and stops the watch; `onStuck` is called again while it stays stuck. `onReset`
 * is told when the client starts recreating the consumer. Costs one shared 1 s timer per process.
 */
export function watchOrdered(it: ConsumerMessages, nc: NatsConnection, onStuck: (why: string) => void, onReset?: () => void): { stop(): void } {
  const w: Watched = { since: 0, why: "", onStuck };
  const conn = readersOf(nc);
  let stopped = false;
  void (async () => {
    for await (const st of it.status()) {
      if (stopped) break;
      if (st.type === "heartbeats_missed" && st.count >= STALL_MISSED_HEARTBEATS) onStuck(`${st.count} heartbeats missed`);
      else if (st.type === "reset") {
        if (w.since === 0) {
          Object.assign(w, { since: Date.now(), why: "consumer not recreated" });
          onReset?.();
        }
      } else if (st.type === "next" || st.type === "ordered_consumer_recreated") w.since = 0;
    }
  })().catch(() => undefined);
  conn.add(w);
  watched.add(w);
  sweep ??= setInterval(sweepStuck, 1000).unref();
  return {
    stop() {
      stopped = true;
      conn.delete(w);
      watched.delete(w);
      if (watched.size === 0 && sweep) {
        clearInterval(sweep);
        sweep = null;
      }
    },
  };
}

/**
 * Reads durable consumer `consumer` of `stream` until stopped, handing each message to `onMsg` in order (awaited:
 * `onMsg` may hold the reader back). Status events that mean trouble are logged; a reader that ends or fails (its
 * consumer gone a while, a nats-server lost for longer than the client retries) is opened again after a growing
 * delay, so the consumer is never left unread while the process runs; so is a reader found idle with messages
 * pending for it and no pull request waiting ({@link STALL_CHECK_MS}). `opened` resolves when the first reader is
 * open; with `firstOpenFails`, a first open that fails rejects it and ends the loop (a role then fails to start
 * rather than wait). `done` resolves once stopped; `stop` closes the reader it holds.
 */
export function readDurable(o: {
  js: JetStreamClient; stream: string; consumer: string; maxMessages: number; log: Logger;
  onMsg: (m: JsMsg) => void | Promise<void>;
  firstOpenFails?: boolean;
  /** Each pull's `expires` ({@link PULL_EXPIRES_MS}); heartbeats are expected every half of it. */
  expiresMs?: number;
  /** {@link STALL_CHECK_MS}. */
  stallCheckMs?: number;
}): { opened: Promise<void>; done: Promise<void>; stop(): Promise<void> } {
  let stopping = false;
  let current: ConsumerMessages | null = null;
  let markOpened: () => void = () => undefined;
  let failOpen: (err: unknown) => void = () => undefined;
  const opened = new Promise<void>((res, rej) => ((markOpened = res), (failOpen = rej)));
  opened.catch(() => undefined);
  let first = true;
  const done = (async () => {
    for (let attempt = 0; !stopping; attempt++) {
      try {
        const c = await o.js.consumers.get(o.stream, o.consumer);
        const it = (current = await c.consume({ max_messages: o.maxMessages, expires: o.expiresMs ?? PULL_EXPIRES_MS }));
        first = false;
        markOpened();
        const watch = watchStall(c, it, o.stallCheckMs ?? STALL_CHECK_MS, () => o.log.warn({ consumer: o.consumer }, "messages waiting and no pull request at the server; opening the reader again"));
        void (async () => {
          for await (const s of it.status()) {
            if (s.type === "heartbeats_missed" || s.type === "consumer_not_found" || s.type === "consumer_deleted" || s.type === "stream_not_found") o.log.warn({ consumer: o.consumer, status: s.type }, "consumer status");
            // A consumer deleted under the reader (the consumer watch recreating it, lib/flow/stranded.ts) leaves nats.js's
            // reader pulling from the old one for good: end it, so the loop opens a reader on the consumer as it is now.
            if (s.type === "consumer_deleted") it.stop();
            // nats.js answers missed heartbeats by looking the consumer up and pulling again, one look-up at a time; one
            // that never succeeds leaves the reader without a pull for good (seen after a leader kill: a critical lane's
            // consumer with a message pending and no pull waiting for minutes). Past MISSED_HEARTBEATS_REOPEN in a row
            // (about 15 s) the reader is ended, and the loop opens a new one.
            if (s.type === "heartbeats_missed" && s.count >= MISSED_HEARTBEATS_REOPEN) {
              o.log.warn({ consumer: o.consumer, missed: s.count }, "no heartbeats from the consumer; opening the reader again");
              it.stop();
            }
          }
        })().catch(() => undefined);
        try {
          for await (const m of it) {
            attempt = 0;
            watch.busy = true;
            await o.onMsg(m);
            watch.busy = false;
            watch.lastAt = Date.now();
          }
        } finally {
          watch.stop();
        }
        if (stopping) return;
        o.log.warn({ consumer: o.consumer }, "reader ended; opening it again");
      } catch (err) {
        if (first && o.firstOpenFails) {
          failOpen(err);
          return;
        }
        if (stopping) return;
        o.log.warn({ err, consumer: o.consumer, attempt }, "reader failed; opening it again");
      }
      await new Promise((r) => setTimeout(r, backoffMs(attempt, { baseMs: 250, maxMs: 5000 })));
    }
  })();
  return {
    opened,
    done,
    async stop() {
      stopping = true;
      await current?.close().catch(() => undefined);
      await done;
    },
  };
}

/**
 * Watches durable reader `it` of consumer `c`: every `everyMs`, when the reader is not busy with a message and has
 * had none for `everyMs`, the consumer's state is looked up; messages pending for it with no pull request waiting at
 * the server, twice in a row, mean the reader stopped asking (nats.js's own heartbeat watch was seen not to notice
 * this after a JetStream leader kill, leaving a critical lane unread for minutes): `onStall` is called and `it` is
 * stopped, so {@link readDurable} opens it again. A look-up that fails counts as nothing.
 */
function watchStall(c: Consumer, it: ConsumerMessages, everyMs: number, onStall: () => void): { busy: boolean; lastAt: number; stop(): void } {
  let strikes = 0;
  let looking = false;
  const w = {
    busy: false,
    lastAt: Date.now(),
    stop: () => clearInterval(timer),
  };
  const timer = setInterval(() => {
    if (w.busy || looking || Date.now() - w.lastAt < everyMs) return;
    looking = true;
    void c
      .info(false)
      .then((info) => {
        if (w.busy || Date.now() - w.lastAt < everyMs) return void (strikes = 0);
        strikes = info.num_pending > 0 && info.num_waiting === 0 ? strikes + 1 : 0;
        if (strikes < 2) return;
        strikes = 0;
        onStall();
        it.stop();
      })
      .catch(() => undefined)
      .finally(() => (looking = false));
  }, everyMs);
  timer.unref();
  return w;
}
