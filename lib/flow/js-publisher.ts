// Pipelined JetStream publishing: many publishes in flight on one reply subscription, acks matched by id.
import { createInbox, headers, type NatsConnection, type Subscription } from "@nats-io/transport-node";

import { decodeJson } from "../core/codec.js";

/** JetStream's answer to a publish. */
export interface PubAck {
  stream: string;
  seq: number;
  duplicate?: boolean;
}

/** A publish JetStream refused (`code` from its API error) or that got no answer in time. */
export class PublishFailed extends Error {
  constructor(message: string, readonly code?: number, readonly subject?: string) {
    super(message);
    this.name = "PublishFailed";
  }
}

interface Pending {
  resolve: (a: PubAck) => void;
  reject: (e: Error) => void;
  at: number;
  subject: string;
}

/**
 * Publishes to JetStream over core NATS with a reply subject per message on
 * one wildcard subscription, the way nats.go's PublishAsync does. It avoids
 * the per-request subscription and error objects of `js.publish`, which cost
 * about a fifth of ingest's CPU (measured with --cpu-prof in bench:ingest).
 * Each publish resolves with the PubAck once the stream has stored (or
 * deduplicated) the message, rejects with {@link PublishFailed} on a JetStream
 * error or after `timeoutMs` without an answer (then it may or may not be
 * stored: retry with the same message id).
 */
export class JsPublisher {
  private readonly prefix: string;
  private readonly pending = new Map<number, Pending>();
  private readonly sub: Subscription;
  private readonly sweeper: NodeJS.Timeout;
  private next = 0;

  constructor(private readonly nc: NatsConnection, private readonly timeoutMs = 5000) {
    // The connection's own inbox prefix: its user may subscribe only there (lib/infra/nats-auth.ts).
    this.prefix = `${createInbox((nc as unknown as { options?: { inboxPrefix?: string } }).options?.inboxPrefix)}.`;
    this.sub = nc.subscribe(`${this.prefix}*`, {
      callback: (_err, m) => {
        const id = Number(m.subject.slice(this.prefix.length));
        const p = this.pending.get(id);
        if (!p) return;
        this.pending.delete(id);
        if (m.data.length === 0) return p.reject(new PublishFailed("no answer from JetStream (no responders)", 503, p.subject));
        try {
          const a = decodeJson<PubAck & { error?: { code: number; description: string } }>(m.data);
          if (a.error) p.reject(new PublishFailed(a.error.description, a.error.code, p.subject));
          else p.resolve(a);
        } catch (err) {
          p.reject(err as Error);
        }
      },
    });
    this.sweeper = setInterval(() => {
      const limit = Date.now() - this.timeoutMs;
      for (const [id, p] of this.pending) {
        if (p.at > limit) break; // insertion order = age order
        this.pending.delete(id);
        p.reject(new PublishFailed(`no JetStream ack within ${this.timeoutMs} ms`, undefined, p.subject));
      }
    }, Math.min(1000, this.timeoutMs));
    this.sweeper.unref();
  }

  /** Publishes `data` on `subject` with `Nats-Msg-Id: msgId` (JetStream drops a repeat within its duplicate window). */
  publish(subject: string, data: Uint8Array, msgId: string): Promise<PubAck> {
    const id = this.next++;
    const h = headers();
    h.set("Nats-Msg-Id", msgId);
    return new Promise<PubAck>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, at: Date.now(), subject });
      try {
        this.nc.publish(subject, data, { reply: `${this.prefix}${id}`, headers: h });
      } catch (err) {
        this.pending.delete(id);
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
  }

  /** Stops listening; publishes still pending are rejected. */
  close(): void {
    clearInterval(this.sweeper);
    this.sub.unsubscribe();
    for (const p of this.pending.values()) p.reject(new PublishFailed("publisher closed"));
    this.pending.clear();
  }
}
