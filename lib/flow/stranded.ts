// Repairs a work-queue consumer that nats-server left past its stream's last sequence (its stream's sequence went back after a leader loss), or without a leader: the messages it would skip are delivered again.
import { type ConsumerConfig, type ConsumerInfo, JetStreamApiError, type JetStreamManager } from "@nats-io/jetstream";

import type { Logger } from "../core/log.js";
import { consumerRepairs } from "../infra/metrics.js";
import { isConsumerNotFound } from "../infra/nats.js";

/** A consumer is not judged again this soon after it was (re)created. */
const SETTLE_MS = 30_000;

/** JetStream's error code for "JetStream system temporarily unavailable": asked about a consumer, its Raft group has no leader. */
const NO_LEADER = 10008;

/** Whether asking for a consumer's information failed as it does when its Raft group has no leader: "temporarily unavailable", or no answer (a group whose only replicas are down). */
const leaderless = (err: Error): boolean => (err instanceof JetStreamApiError && err.code === NO_LEADER) || err.name === "TimeoutError";

/** How long a consumer may be without a leader before it is recreated (elections take seconds; a stuck group, minutes). */
const LEADERLESS_MS = 40_000;

/**
 * What is wrong with consumer `ci` of a work-queue stream whose last sequence is `lastSeq` and which holds
 * `matching` messages its filter takes, or null: `ahead` when the consumer has delivered past the stream's last
 * sequence (it skips every message published until the stream passes that point), `stranded` when messages it
 * takes are in the stream while it has none pending nor awaiting an ack (it has passed them). Pure.
 */
export function consumerFault(ci: { delivered: Pick<ConsumerInfo["delivered"], "stream_seq">; num_pending: number; num_ack_pending: number }, lastSeq: number, matching: number): "ahead" | "stranded" | null {
  if (ci.delivered.stream_seq > lastSeq) return "ahead";
  if (matching > 0 && ci.num_pending === 0 && ci.num_ack_pending === 0) return "stranded";
  return null;
}

/**
 * Watches the durable consumers `configs` (each with `durable_name` and `filter_subject`) of work-queue stream
 * `stream` every `everyMs`. A consumer found `ahead` or `stranded` ({@link consumerFault}) on two checks in a row,
 * in the same state of the stream, is deleted and created again from its configuration (deliver all): a work queue
 * holds only what is not acked, so it then delivers exactly what is left, the skipped messages included (a message
 * a reader was still working on may come again: every stage is idempotent per message). nats-server 2.9.10 does
 * this to a stream whose leader was killed (docs/operations.md, "nats-server version"); so do later versions,
 * rarely (nats-server issues 5412, 6124). A consumer whose Raft group has had no leader for `leaderlessMs` (its stream
 * has one: asked for its information on every check over that time, JetStream answers "temporarily unavailable"
 * or not at all) is recreated the same way (fault `leaderless`; nats-server 2.9.10 left a gateway's critical lane so for
 * minutes after a node restart, with two of its three servers up), and so is one found missing (`missing`).
 * Logged and counted (`nfx_consumer_repairs_total`); errors are logged.
 */
export function watchWorkQueue(o: { jsm: JetStreamManager; stream: string; configs: readonly Partial<ConsumerConfig>[]; log: Logger; everyMs?: number; settleMs?: number; leaderlessMs?: number }): { stop(): void } {
  const suspect = new Map<string, string>();
  const leaderlessSince = new Map<string, number>();
  /** Deletes consumer `c` (if it is there: a leaderless one's delete may go unanswered) and adds it again from its configuration. */
  const recreate = async (c: Partial<ConsumerConfig>, fault: string, info: Record<string, unknown>, msg: string): Promise<void> => {
    o.log.warn({ stream: o.stream, consumer: c.durable_name, fault, ...info }, msg);
    if (fault !== "missing") await o.jsm.consumers.delete(o.stream, c.durable_name!).catch(() => false);
    await o.jsm.consumers.add(o.stream, c);
    consumerRepairs.inc({ stream: o.stream, consumer: c.durable_name!, fault });
  };
  const check = async (): Promise<void> => {
    // Per-subject counts: a send stream has one subject per priority lane.
    // A check that cannot see the stream judges nothing, and a consumer's time without a leader starts again after it.
    const si = await o.jsm.streams.info(o.stream, { subjects_filter: ">" }).catch((err: unknown) => {
      leaderlessSince.clear();
      throw err;
    });
    const bySubject = si.state.subjects ?? {};
    for (const c of o.configs) {
      const name = c.durable_name!;
      const ci = await o.jsm.consumers.info(o.stream, name).catch((err: unknown) => err as Error);
      if (isConsumerNotFound(ci)) {
        await recreate(c, "missing", {}, "work-queue consumer missing; creating it");
        continue;
      }
      if (ci instanceof Error) {
        if (!leaderless(ci)) continue;
        const since = leaderlessSince.get(name) ?? Date.now();
        leaderlessSince.set(name, since);
        if (Date.now() - since < (o.leaderlessMs ?? LEADERLESS_MS)) continue;
        leaderlessSince.delete(name);
        await recreate(c, "leaderless", { leaderlessMs: Date.now() - since }, "consumer without a leader (nats-server); recreating it");
        continue;
      }
      leaderlessSince.delete(name);
      if (Date.now() - Date.parse(ci.created) < (o.settleMs ?? SETTLE_MS)) continue;
      const pattern = c.filter_subject ? new RegExp(`^${c.filter_subject.replace(/\./g, "\\.").replace(/\*/g, "[^.]+").replace(/>$/, ".+")}$`) : null;
      const matching = Object.entries(bySubject).reduce((a, [s, n]) => a + (!pattern || pattern.test(s) ? n : 0), 0);
      const fault = consumerFault(ci, si.state.last_seq, matching);
      const state = `${fault}:${si.state.first_seq}:${si.state.last_seq}:${ci.delivered.stream_seq}`;
      if (!fault) {
        suspect.delete(name);
        continue;
      }
      if (suspect.get(name) !== state) {
        suspect.set(name, state);
        continue;
      }
      suspect.delete(name);
      await recreate(c, fault, { delivered: ci.delivered.stream_seq, streamLast: si.state.last_seq, matching }, "consumer past its stream's messages (nats-server); recreating it");
    }
  };
  let running = false;
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    check().catch((err) => o.log.warn({ err, stream: o.stream }, "work-queue consumer check failed")).finally(() => (running = false));
  }, o.everyMs ?? 15_000);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
