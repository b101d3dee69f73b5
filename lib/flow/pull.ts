// How long a JetStream pull request waits (it also sets how soon a reader notices that its nats-server is gone), and a durable reader that is never left unread.
import type { ConsumerMessages, JetStreamClient, JsMsg } from "@nats-io/jetstream";

import { backoffMs } from "../core/backoff.js";
import type { Logger } from "../core/log.js";

/**
 * `expires` of every `consume()` (pull consumers and the shard actor's ordered readers). The client asks for server
 * heartbeats every half of it and, after two missed, issues its pull again (or, for an ordered reader, recreates it) —
 * so after a nats-server's loss a reader moves again within about this long, rather than the client's default 30 s.
 * The cost is one pull request per idle reader every 5 s.
 */
export const PULL_EXPIRES_MS = 5000;

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
 * Reads durable consumer `consumer` of `stream` until `stopping()`, handing each message to `onMsg` in order. Status
 * events that mean trouble are logged; a reader that ends or fails (its consumer gone a while, a nats-server lost for
 * longer than the client retries) is opened again after a growing delay, so the consumer is never left unread while
 * the process runs. Resolves once stopped; `close()` of the reader it holds is what `stop` calls.
 */
export function readDurable(o: {
  js: JetStreamClient; stream: string; consumer: string; maxMessages: number; log: Logger;
  onMsg: (m: JsMsg) => void | Promise<void>;
}): { done: Promise<void>; stop(): Promise<void> } {
  let stopping = false;
  let current: ConsumerMessages | null = null;
  const done = (async () => {
    for (let attempt = 0; !stopping; attempt++) {
      try {
        const c = await o.js.consumers.get(o.stream, o.consumer);
        const it = (current = await c.consume({ max_messages: o.maxMessages, expires: PULL_EXPIRES_MS }));
        void (async () => {
          for await (const s of it.status()) {
            if (s.type === "heartbeats_missed" || s.type === "consumer_not_found" || s.type === "consumer_deleted" || s.type === "stream_not_found") o.log.warn({ consumer: o.consumer, status: s.type }, "consumer status");
          }
        })().catch(() => undefined);
        for await (const m of it) {
          attempt = 0;
          await o.onMsg(m);
        }
        if (stopping) return;
        o.log.warn({ consumer: o.consumer }, "reader ended; opening it again");
      } catch (err) {
        if (stopping) return;
        o.log.warn({ err, consumer: o.consumer, attempt }, "reader failed; opening it again");
      }
      await new Promise((r) => setTimeout(r, backoffMs(attempt, { baseMs: 250, maxMs: 5000 })));
    }
  })();
  return {
    done,
    async stop() {
      stopping = true;
      await current?.close().catch(() => undefined);
      await done;
    },
  };
}
