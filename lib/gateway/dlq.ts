// The dead-letter stream: store, list, show, replay and purge sends whose retries ran out.
import { decode, encode } from "../core/codec.js";
import { NotFound } from "../core/errors.js";
import { deliveryKey } from "../core/ids.js";
import { type Channel, dlqAll, dlqSubject, MSGID, sendSubjectOf, STREAM } from "../core/subjects.js";
import type { DeadLetter, SendBatch } from "../core/types.js";
import { readStored } from "../flow/stream-read.js";
import type { Nats } from "../infra/nats.js";

export interface DeadLetterEntry extends DeadLetter {
  seq: number;
}

/**
 * Stores dead letter `dl` of a send batch delivered under `batchId` on
 * `nfx.dlq.<channel>`, with a message id from the batch id and the send's
 * delivery key (a redelivered batch's dead letter is dropped as a duplicate).
 * Resolves once JetStream stored it; rejects when the publish failed.
 */
export async function storeDeadLetter(n: Nats, dl: DeadLetter, batchId: string): Promise<void> {
  const s = dl.send;
  await n.js.publish(dlqSubject(dl.channel), encode(dl), { msgID: MSGID.dead(`${batchId}|${deliveryKey(s.nid, s.user, dl.channel, s.device)}`) });
}

/** Every dead letter (optionally of one channel), oldest first. */
export async function listDeadLetters(n: Nats, channel?: Channel): Promise<DeadLetterEntry[]> {
  const out: DeadLetterEntry[] = [];
  await readStored(n, STREAM.dlq, (m) => void out.push({ ...decode<DeadLetter>(m.data), seq: m.seq }), channel ? dlqSubject(channel) : dlqAll);
  return out;
}

/** One dead letter by its stream sequence. Throws {@link NotFound}. */
export async function getDeadLetter(n: Nats, seq: number): Promise<DeadLetterEntry> {
  const m = await n.jsm.streams.getMessage(STREAM.dlq, { seq }).catch(() => null);
  if (!m) throw new NotFound(`dead letter ${seq} not found`, { field: "seq" });
  return { ...decode<DeadLetter>(m.data), seq };
}

/**
 * Sends a dead letter again: republishes it as a one-send batch on its
 * channel's send stream (message id `rpl:<seq>`, so replaying twice sends
 * once), then removes it from the dead-letter stream. The new outcome's
 * receipt replaces the dead letter's failure in the counters. A webhook
 * delivery goes to its endpoint's partition lane (`webhookPartitions`:
 * `endpoints.partitions`).
 */
export async function replayDeadLetter(n: Nats, seq: number, webhookPartitions: number): Promise<DeadLetterEntry> {
  const dl = await getDeadLetter(n, seq);
  // A replay starts with fresh attempts.
  const { attempt: _a, waits: _w, ...send } = dl.send;
  const batch: SendBatch = {
    type: "send_batch", channel: dl.channel, shard: dl.shard, notifications: { [dl.notification.id]: dl.notification },
    sends: [send], replayOf: `dead_letter:${dl.reason}`,
  };
  await n.js.publish(sendSubjectOf(dl.channel, dl.notification.priority, send.user, webhookPartitions), encode(batch), { msgID: MSGID.replay(seq) });
  await n.jsm.streams.deleteMessage(STREAM.dlq, seq);
  return dl;
}

/** Deletes dead letters without sending them: the given sequences, or all (of one channel). Returns how many went. */
export async function purgeDeadLetters(n: Nats, which: number[] | { all: true; channel?: Channel }): Promise<number> {
  if (Array.isArray(which)) {
    let k = 0;
    for (const seq of which) if (await n.jsm.streams.deleteMessage(STREAM.dlq, seq).catch(() => false)) k++;
    return k;
  }
  const r = await n.jsm.streams.purge(STREAM.dlq, which.channel ? { filter: dlqSubject(which.channel) } : undefined);
  return r.purged;
}
