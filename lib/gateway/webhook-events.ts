// Event streams to customers' endpoints: nfx's own lifecycle events (accepted, sent, delivered, failed, opened, clicked, shed) read from NFX_INTAKE and NFX_RECEIPTS and queued for the endpoints that subscribe to them.
import type { JsMsg } from "@nats-io/jetstream";

import { decode } from "../core/codec.js";
import type { Logger } from "../core/log.js";
import { CONSUMER, STREAM } from "../core/subjects.js";
import type { Notification, NotificationBrief, ReceiptBatch } from "../core/types.js";
import { type Endpoint, LIFECYCLE_EVENTS, type LifecycleEvent, listEndpoints } from "../directory/endpoints.js";
import type { EndpointQueues, QueuedDelivery } from "../flow/endpoint-queues.js";
import { readDurable } from "../flow/pull.js";
import type { Nats } from "../infra/nats.js";
import type { Redis } from "../infra/redis.js";

/** One lifecycle event as an endpoint's event stream carries it (`type` becomes `notification.<event>`). */
export interface LifecycleEventItem {
  event: LifecycleEvent;
  notification: string;
  at: number;
  [k: string]: unknown;
}

/**
 * The lifecycle events in one receipt batch: each entry whose outcome is an event (sent, delivered, failed, opened,
 * clicked, shed), with its user, channel, device and reason. Echoes (repeats of an outcome another batch reported)
 * and entries of the webhook channel (deliveries to endpoints themselves: no event loops) are left out. Pure.
 */
export function eventsOfReceipts(rb: ReceiptBatch): LifecycleEventItem[] {
  const out: LifecycleEventItem[] = [];
  for (const e of rb.entries) {
    if (e.echo || e.channel === "webhook" || !(LIFECYCLE_EVENTS as readonly string[]).includes(e.outcome)) continue; // "accepted" comes from NFX_INTAKE
    out.push({
      event: e.outcome as LifecycleEvent, notification: rb.nid, user: e.user, at: e.at,
      ...(e.channel ? { channel: e.channel } : {}), ...(e.device ? { device: e.device } : {}), ...(e.reason ? { reason: e.reason } : {}),
    });
  }
  return out;
}

/** What the event streams run on: connections, the endpoint queues, and `queued`, told which endpoints got deliveries queued. */
export interface EventStreamDeps {
  nats: Nats;
  redis: Redis;
  queues: EndpointQueues;
  log: Logger;
  queued(endpoints: readonly string[]): void;
}

/**
 * Starts the event streams: every receipt batch on NFX_RECEIPTS (consumer `CONSUMER.events`) and every accepted
 * request on NFX_INTAKE (`CONSUMER.eventsIntake`; scheduled requests count when they come back due) is read once;
 * each subscribing endpoint (`events` in its record, re-read at most every 5 s) gets one queued delivery per stored
 * message with the events it subscribes to that happened after it was created, body
 * `{type: "nfx.events", timestamp, data: {events: [{type: "notification.<event>", ...}]}}`, id
 * `evt.<r|i>.<seq>.<endpoint>`, so a redelivered message queues nothing twice. A message is acked once its
 * deliveries are queued; a failure naks it (again in 1 s). `stop` ends both readers.
 */
export function startEventStreams(d: EventStreamDeps): { stop(): Promise<void> } {
  let subscribers: { at: number; eps: Endpoint[] } = { at: 0, eps: [] };
  const eventSubscribers = async (): Promise<Endpoint[]> => {
    if (Date.now() - subscribers.at > 5000) subscribers = { at: Date.now(), eps: (await listEndpoints(d.redis)).filter((e) => e.events?.length) };
    return subscribers.eps;
  };
  /** Queues one delivery per subscribing endpoint for the events of one stored message (`seq` of the stream tagged `tag`). */
  const queueEvents = async (tag: string, seq: number, nid: string, brief: NotificationBrief, events: LifecycleEventItem[]): Promise<void> => {
    if (events.length === 0) return;
    const now = Date.now();
    const targets: string[] = [];
    await Promise.all((await eventSubscribers()).map((ep) => {
      const mine = events.filter((e) => ep.events!.includes(e.event) && e.at >= ep.createdAt);
      if (mine.length === 0) return Promise.resolve(0);
      targets.push(ep.id);
      const body = JSON.stringify({ type: "nfx.events", timestamp: new Date(now).toISOString(), data: { events: mine.map(({ event, ...rest }) => ({ type: `notification.${event}`, ...rest })) } });
      const q: QueuedDelivery = { nid, type: "nfx.events", body, shard: 0, brief, at: now, event: true };
      return d.queues.enqueue(ep.id, [{ id: `evt.${tag}.${seq}.${ep.id}`, d: q }]);
    }));
    d.queued(targets);
  };
  /** Reads `consumer` of `stream`: each message's events (`eventsOf`: its notification and events) queued, then acked; a failure naks it. */
  const readEvents = (tag: string, stream: string, consumer: string, eventsOf: (m: JsMsg) => { nid: string; events: LifecycleEventItem[] } | null) =>
    readDurable({
      js: d.nats.js, stream, consumer, maxMessages: 64, log: d.log,
      onMsg: async (m) => {
        try {
          if ((await eventSubscribers()).length) {
            const e = eventsOf(m);
            if (e) await queueEvents(tag, m.seq, e.nid, { id: e.nid } as NotificationBrief, e.events);
          }
          m.ack();
        } catch (err) {
          d.log.warn({ err, stream, seq: m.seq }, "lifecycle events not queued; redelivered");
          m.nak(1000);
        }
      },
    });
  const readers = [
    readEvents("r", STREAM.receipts, CONSUMER.events, (m) => {
      const rb = decode<ReceiptBatch>(m.data);
      return { nid: rb.nid, events: eventsOfReceipts(rb) };
    }),
    readEvents("i", STREAM.intake, CONSUMER.eventsIntake, (m) => {
      if (m.subject.startsWith("nfx.intake.scheduled.")) return null; // due requests come back on their lane
      const n = decode<Notification>(m.data);
      const accepted: LifecycleEventItem = { event: "accepted", notification: n.id, category: n.category, priority: n.priority, ...(n.topic ? { topic: n.topic } : {}), ...(n.segment ? { segment: n.segment } : { recipients: n.recipients.length }), at: n.createdAt };
      return { nid: n.id, events: [accepted] };
    }),
  ];
  return { stop: () => Promise.all(readers.map((r) => r.stop())).then(() => undefined) };
}
