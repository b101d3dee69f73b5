// Engagement and provider reports into receipts: opens and clicks counted once per recipient, delivery reports once per event.
import { createHash } from "node:crypto";

import { z } from "zod";

import { encode } from "../core/codec.js";
import type { Config } from "../core/config.js";
import { Forbidden } from "../core/errors.js";
import { engagedKey, webhookSeenKey } from "../core/keys.js";
import { parseWith } from "../core/request-schema.js";
import { type Channel, ID_PATTERN, MSGID, receiptSubject, REPORTED_CHANNELS } from "../core/subjects.js";
import type { ReceiptBatch, ReceiptEntry } from "../core/types.js";
import { inboundEvents } from "../infra/metrics.js";
import type { Nats } from "../infra/nats.js";
import { pipelineOf, type Redis, slotGroups } from "../infra/redis.js";
import { type ScriptRedis, withScripts } from "../infra/scripts.js";

/** An engagement event: a recipient opened or clicked a notification (or an app confirms its delivery). */
export interface EngagementEvent {
  kind: "opened" | "clicked" | "delivered";
  nid: string;
  user: string;
  channel: Channel;
  device?: string;
  at: number;
}

/** Turns engagement events and provider reports into receipts on NFX_RECEIPTS, each counted once. */
export class Engagement {
  private readonly r: ScriptRedis;
  constructor(private readonly nats: Nats, redis: Redis, private readonly ttlMs: number, private readonly dedupMs: number) {
    this.r = withScripts(redis);
  }

  /**
   * Records engagement events. Opens and clicks count once per (notification,
   * recipient; lib/infra/scripts/markFirst-n.lua, one call for the batch, on a
   * cluster one per engagement hash, whose keys have no common slot); a click also counts as an open when none was seen (a client
   * that blocks images still clicked). App-reported deliveries count once per
   * (notification, recipient, device). Resolves how many were new.
   */
  async record(events: readonly EngagementEvent[]): Promise<number> {
    const marks: { key: string; user: string; at: number; e: EngagementEvent; kind: "opened" | "clicked" }[] = [];
    const deliveries: EngagementEvent[] = [];
    for (const e of events) {
      if (e.kind === "delivered") deliveries.push(e);
      else {
        marks.push({ key: engagedKey(e.nid, e.kind), user: e.user, at: e.at, e, kind: e.kind });
        if (e.kind === "clicked") marks.push({ key: engagedKey(e.nid, "opened"), user: e.user, at: e.at, e, kind: "opened" });
      }
    }
    const fresh: ReceiptEntry[][] = [];
    const entries = new Map<string, ReceiptEntry[]>();
    const add = (nid: string, x: ReceiptEntry): void => {
      const l = entries.get(nid);
      if (l) l.push(x);
      else {
        entries.set(nid, [x]);
        fresh.push(entries.get(nid)!);
      }
    };
    if (marks.length) {
      const first: number[] = [];
      await Promise.all(
        slotGroups(this.r, marks.map((m) => m.key)).map(async (group) => {
          const args: (string | number)[] = group.map((i) => marks[i].key);
          for (const i of group) args.push(marks[i].user, marks[i].at);
          args.push(this.ttlMs);
          const got = await this.r.nfxMarkFirst(group.length, ...args);
          group.forEach((i, j) => void (first[i] = got[j]));
        }),
      );
      marks.forEach((m, i) => {
        if (first[i] === 1) add(m.e.nid, { user: m.user, outcome: m.kind, channel: m.e.channel, ...(m.e.device ? { device: m.e.device } : {}), at: m.at });
      });
    }
    const news = await this.firstTimes(deliveries.map((e) => `app:${e.nid}|${e.user}|${e.channel}|${e.device ?? ""}`));
    deliveries.forEach((e, i) => {
      if (news[i]) add(e.nid, { user: e.user, outcome: "delivered", channel: e.channel, ...(e.device ? { device: e.device } : {}), at: e.at });
    });
    await this.publish("engagement", entries);
    const n = [...entries.values()].reduce((a, l) => a + l.length, 0);
    inboundEvents.inc({ source: "engagement", result: "applied" }, n);
    inboundEvents.inc({ source: "engagement", result: "duplicate" }, Math.max(0, events.length - n));
    return n;
  }

  /** Per event id, whether it is seen for the first time (SET NX with the dedup TTL, one pipeline: {@link pipelineOf}). */
  async firstTimes(ids: readonly string[], provider = "x"): Promise<boolean[]> {
    if (ids.length === 0) return [];
    const p = pipelineOf(this.r);
    for (const id of ids) p.set(webhookSeenKey(provider, id), "1", "PX", this.dedupMs, "NX");
    const res = (await p.exec()) ?? [];
    return res.map(([err, v]) => {
      if (err) throw err;
      return v === "OK";
    });
  }

  /**
   * Forgets event ids (their receipts could not be published, so a redelivery must apply them): one DEL per group of keys
   * sharing a hash slot (one DEL of all on one redis-server; these keys have no hash tag). Rejects on the first failure.
   */
  async forget(ids: readonly string[], provider = "x"): Promise<void> {
    const keys = ids.map((id) => webhookSeenKey(provider, id));
    await Promise.all(slotGroups(this.r, keys).map((g) => this.r.del(...g.map((i) => keys[i]))));
  }

  /** Publishes receipts per notification, with message ids from their content (a retried publish is dropped as a duplicate). */
  async publish(stage: ReceiptBatch["stage"], entries: ReadonlyMap<string, ReceiptEntry[]>): Promise<void> {
    await Promise.all(
      [...entries].map(([nid, list]) => {
        const rb: ReceiptBatch = { type: "receipts", nid, stage, entries: list };
        const id = createHash("sha1").update(JSON.stringify(list)).digest("base64url");
        return this.nats.js.publish(receiptSubject(nid), encode(rb), { msgID: MSGID.receipts(stage, nid, id) });
      }),
    );
  }
}

/** `POST /v1/events` and `nfx.api.events`: engagement reported by apps (push opens and clicks, deliveries). */
export const eventsSchema = z.strictObject({
  events: z
    .array(
      z.strictObject({
        type: z.enum(["delivered", "opened", "clicked"]),
        notification: z.string().regex(ID_PATTERN, "must be a notification id"),
        user: z.string().regex(ID_PATTERN, "must be a user id"),
        /** Where it happened; "push" when the app does not know whether it came by APNs or FCM. */
        channel: z.enum(REPORTED_CHANNELS).default("push"),
        device: z.string().min(1).max(256).optional(),
        /** When it happened (ms); default now. */
        at: z.number().int().min(0).optional(),
      }),
    )
    .min(1)
    .max(1000),
});

/**
 * Validates a batch of app-reported events and records it. With `asUser`
 * (a user token), every event must be that user's. Throws RequestInvalid
 * naming the field, or Forbidden; nothing is recorded then.
 */
export async function reportEvents(e: Engagement, body: unknown, asUser?: string, now = Date.now()): Promise<{ accepted: number; counted: number }> {
  const { events } = parseWith(eventsSchema, body);
  if (asUser !== undefined) {
    const i = events.findIndex((x) => x.user !== asUser);
    if (i >= 0) throw new Forbidden(`events.${i}.user: a user token may report only its own events`, { field: `events.${i}.user` });
  }
  const counted = await e.record(
    events.map((x) => ({
      kind: x.type, nid: x.notification, user: x.user,
      channel: (x.channel === "push" ? "apns" : x.channel),
      ...(x.device ? { device: x.device } : {}), at: Math.min(x.at ?? now, now),
    })),
  );
  return { accepted: events.length, counted };
}

/** The engagement recorder as configured (`engagement.linkTtlDays`, `webhooks.dedupDays`). */
export const engagementFor = (cfg: Config, nats: Nats, redis: Redis): Engagement =>
  new Engagement(nats, redis, cfg.engagement.linkTtlDays * 86400_000, cfg.webhooks.dedupDays * 86400_000);
