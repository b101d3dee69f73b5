// Accepting a notification, the same for both surfaces: validate every rule, apply idempotency, store durably on NFX_INTAKE.
import { createHash } from "node:crypto";

import type { KV } from "@nats-io/kv";

import { APNS_MAX_PAYLOAD, apnsPayloadOverLimit } from "../core/apns-payload.js";
import { decodeJson, encode, encodeJson } from "../core/codec.js";
import type { Config } from "../core/config.js";
import {
  CategoryUnknown, ChannelUnavailable, Forbidden, IdempotencyConflict, PayloadTooLarge, RequestInvalid,
  ScheduleInvalid, StoreUnavailable, TemplateMismatch, TemplateNotFound,
} from "../core/errors.js";
import { newNotificationId } from "../core/ids.js";
import { ownValue } from "../core/own-keys.js";
import { type NotifyRequest, parseNotifyRequest, windowMinutes } from "../core/request-schema.js";
import { idempotencyKvKey, intakeSubject, MSGID, PRIORITIES, type Priority, scheduledSubject } from "../core/subjects.js";
import { CONTENT_CHANNELS, type ContentChannel, type DigestSpec, type Notification, type TemplateUse } from "../core/types.js";
import { parseHhmm } from "../directory/quiet-hours.js";
import { segmentSource } from "../directory/segments.js";
import { requireTopic, TOPIC_SEGMENT_PREFIX } from "../directory/topics.js";
import { JsPublisher } from "../flow/js-publisher.js";
import { stageItems } from "../infra/metrics.js";
import type { Nats } from "../infra/nats.js";
import type { Redis } from "../infra/redis.js";
import { readNotification } from "../tracking/status.js";
import { requireScope, type Scope } from "./api-keys.js";
import { renderPush, templateChannels, type TemplateStore } from "./templates.js";

/** Who is calling: an API key (HTTP or `nfx.ext.api.*`), or nfx's own NATS users on `nfx.api.*`. */
export interface Producer {
  name: string;
  /** Categories it may use, or "*". */
  categories: readonly string[] | "*";
  priorities: readonly Priority[];
  /** The operations it may call (lib/intake/api-keys.ts); `admin` holds them all. */
  scopes: readonly Scope[];
}

/** The trusted NATS surface `nfx.api.*`: only nfx's own account users (operators, the CLI) reach it, so it holds `admin`. */
export const NATS_PRODUCER: Producer = { name: "nats", categories: "*", priorities: PRIORITIES, scopes: ["admin"] };

export interface Accepted {
  id: string;
  /** True when an earlier request with the same idempotency key and body was found. */
  replayed: boolean;
}

const DAY = 86_400_000;

/** A canonical JSON form (sorted keys) for hashing request bodies. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (v && typeof v === "object") return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`).join(",")}}`;
  return JSON.stringify(v);
}
const sha256 = (s: string): string => createHash("sha256").update(s).digest("hex");

/**
 * The intake: turns a request body into a stored notification. Every rule is
 * checked before anything is written; a rejected request changes nothing.
 * With an idempotency key, the same producer, key and body always get the same
 * id and one stored notification for 24 hours; a different body gets
 * {@link IdempotencyConflict}.
 */
export class Intake {
  constructor(
    private readonly d: { cfg: Config; nats: Nats; redis: Redis; templates: TemplateStore; idempotency: KV; now?: () => number },
  ) {
    this.publisher = new JsPublisher(d.nats.nc);
  }

  private readonly publisher: JsPublisher;

  /** Stops the publisher; pending stores are rejected. */
  close(): void {
    this.publisher.close();
  }

  private now(): number {
    return (this.d.now ?? Date.now)();
  }

  /**
   * Validates and builds the notification without storing it. Throws the first rule broken, naming the field;
   * ScopeMissing (403) first when the producer lacks `send` (listed recipients) or `campaigns.create` (a segment).
   */
  async build(body: unknown, producer: Producer): Promise<{ req: NotifyRequest; n: Notification }> {
    const cfg = this.d.cfg;
    const req = parseNotifyRequest(body);
    // A segment target starts a campaign: its own scope, checked before anything else is looked at.
    if (req.segment !== undefined) requireScope(producer, ["campaigns.create"], { field: "segment", what: "a segment target (it starts a campaign)" });
    else if (req.topic !== undefined) requireScope(producer, ["send"], { field: "topic", what: "a publish to a topic" });
    else requireScope(producer, ["send"], { field: "recipients", what: "a send to listed recipients" });
    const category = ownValue(cfg.categories, req.category);
    if (!category) throw new CategoryUnknown(`category: unknown category ${req.category} (one of ${Object.keys(cfg.categories).join(", ")})`, { field: "category" });
    const priority = req.priority ?? category.defaultPriority;
    // A digest: the category's settings under the request's; never for critical (held nowhere), and a collapse key already keeps one.
    const cd = category.digest;
    const digest: DigestSpec | undefined = (cd || req.digest) && priority !== "critical" ? {
      key: req.digest?.key ?? req.category,
      windowSec: req.digest?.windowSec ?? cd?.windowSec ?? 600,
      ...((req.digest?.quietSec ?? cd?.quietSec) !== undefined ? { quietSec: req.digest?.quietSec ?? cd?.quietSec } : {}),
      maxSec: req.digest?.maxSec ?? cd?.maxSec ?? 3600,
      maxItems: req.digest?.maxItems ?? cd?.maxItems ?? 50,
    } : undefined;
    if (req.deliverAt && priority === "critical") throw new RequestInvalid(`deliverAt: critical notifications are never held for a local time (priority ${req.priority ? "critical" : `critical, the default of category ${req.category}`})`, { field: "deliverAt" });
    if (producer.categories !== "*" && !producer.categories.includes("*") && !producer.categories.includes(req.category)) {
      throw new Forbidden(`category: key ${producer.name} may not send category ${req.category}`, { field: "category" });
    }
    if (!producer.priorities.includes(priority)) throw new Forbidden(`priority: key ${producer.name} may not send priority ${priority}`, { field: "priority" });
    if (req.segment !== undefined) await segmentSource(this.d.redis, req.segment, this.now()); // throws naming `segment` if unknown
    if (req.topic !== undefined) await requireTopic(this.d.redis, req.topic); // throws naming `topic` if unknown

    let template: TemplateUse | undefined;
    let offered: ContentChannel[];
    if (req.template) {
      const t = await this.d.templates.get(req.template.id);
      if (!t) throw new TemplateNotFound(`template.id: no template ${req.template.id}`, { field: "template.id" });
      const missing = t.variables.filter((v) => !Object.hasOwn(req.template!.variables, v));
      if (missing.length > 0) {
        throw new TemplateMismatch(`template.variables.${missing[0]}: required by template ${t.id} (needs ${t.variables.join(", ")})`, { field: `template.variables.${missing[0]}` });
      }
      template = { template: t, variables: req.template.variables, ...(req.template.locale ? { locale: req.template.locale } : {}) };
      offered = templateChannels(t);
    } else {
      offered = CONTENT_CHANNELS.filter((c) => req.content![c]);
    }
    // Without an explicit list: every channel with content that this cluster can deliver.
    const enabled: readonly ContentChannel[] = cfg.ingest.channels;
    const channels = req.channels ?? offered.filter((c) => enabled.includes(c));
    // A topic publish with webhook content only goes to the topic's endpoints: no channel for its users is fine.
    const endpointsOnly = req.topic !== undefined && req.content?.webhook !== undefined && offered.length === 0 && req.channels === undefined;
    if (channels.length === 0 && !endpointsOnly) {
      const field = req.template ? "template.id" : "content";
      throw new ChannelUnavailable(`${field}: has content only for ${offered.join(", ")}, and this cluster delivers ${enabled.join(", ")}`, { field });
    }
    channels.forEach((c, i) => {
      if (!offered.includes(c)) {
        const field = req.template ? "template.id" : `content.${c}`;
        const E = req.template ? TemplateMismatch : RequestInvalid;
        throw new E(`${field}: ${req.template ? `template ${req.template.id} has no ${c} content` : "is required"} because channels includes ${c}`, { field });
      }
      if (!enabled.includes(c)) {
        throw new ChannelUnavailable(`channels.${i}: ${c} has no gateway in this cluster (available: ${enabled.join(", ")})`, { field: `channels.${i}` });
      }
    });

    const now = this.now();
    const { maxSendAheadDays, maxSendBehindSec, maxExpiresAheadDays } = cfg.ingest;
    if (req.sendAt !== undefined && req.sendAt < now - maxSendBehindSec * 1000) {
      throw new ScheduleInvalid(`sendAt: must not be more than ${maxSendBehindSec} seconds in the past (ingest.maxSendBehindSec); got ${new Date(req.sendAt).toISOString()}`, { field: "sendAt" });
    }
    // A send-at within the grace in the past is sent at once.
    const sendAt = req.sendAt !== undefined && req.sendAt > now ? req.sendAt : undefined;
    if (sendAt !== undefined && sendAt > now + maxSendAheadDays * DAY) {
      throw new ScheduleInvalid(`sendAt: must be at most ${maxSendAheadDays} days ahead (ingest.maxSendAheadDays)`, { field: "sendAt" });
    }
    if (req.expiresAt !== undefined && req.expiresAt > now + maxExpiresAheadDays * DAY) {
      throw new ScheduleInvalid(`expiresAt: must be at most ${maxExpiresAheadDays} days ahead (ingest.maxExpiresAheadDays); got ${new Date(req.expiresAt).toISOString()}`, { field: "expiresAt" });
    }
    // A local-time notification may wait up to a day for a recipient's local time: its default life is two days plus the window.
    const deliverAt = req.deliverAt ? { localTime: parseHhmm(req.deliverAt.localTime), windowMin: windowMinutes(req.deliverAt.window ?? "60m") } : undefined;
    const defaultTtlSec = deliverAt ? 2 * 86400 + deliverAt.windowMin * 60 : 86400;
    const expiresAt = req.expiresAt ?? (sendAt ?? now) + (req.ttlSec ?? defaultTtlSec) * 1000;
    if (expiresAt <= now) throw new ScheduleInvalid("expiresAt: must be in the future (it is in the past)", { field: "expiresAt" });
    if (sendAt !== undefined && sendAt >= expiresAt) throw new ScheduleInvalid("sendAt: must be before the notification expires", { field: "sendAt" });

    if (channels.includes("push")) {
      const p = template ? renderPush(template, null) : req.content!.push!;
      const bytes = p ? apnsPayloadOverLimit(p) : null;
      if (bytes !== null) {
        const field = template ? "template.variables" : "content.push";
        throw new PayloadTooLarge(`${field}: the APNs payload would be ${bytes} bytes, over Apple's ${APNS_MAX_PAYLOAD}`, { field });
      }
    }

    const n: Notification = {
      type: "notification",
      id: newNotificationId(now),
      createdAt: now,
      expiresAt,
      ...(sendAt !== undefined ? { sendAt } : {}),
      ...(deliverAt ? { deliverAt } : {}),
      ...(digest ? { digest } : {}),
      priority,
      category: req.category,
      recipients: [...new Set(req.recipients ?? [])],
      ...(req.segment ? { segment: req.segment, campaign: { ...(req.campaign?.rate !== undefined ? { rate: req.campaign.rate } : {}) } } : {}),
      // A topic's users are reached as the campaign of segment topic:<name> (lib/directory/topics.ts); its endpoints by the router.
      ...(req.topic ? { topic: req.topic, ...(channels.length ? { segment: `${TOPIC_SEGMENT_PREFIX}${req.topic}`, campaign: { ...(req.campaign?.rate !== undefined ? { rate: req.campaign.rate } : {}) } } : {}) } : {}),
      channels,
      ...(req.content ? { content: req.content } : {}),
      ...(template ? { template } : {}),
      ...(req.collapseKey ? { collapseKey: req.collapseKey } : {}),
      ...(req.idempotencyKey ? { idempotencyKey: req.idempotencyKey } : {}),
      producer: producer.name,
    };
    return { req, n };
  }

  /** Stores a built notification on NFX_INTAKE (or the scheduler's subject when it has a future send-at). */
  private async store(n: Notification): Promise<void> {
    const subject = n.sendAt !== undefined ? scheduledSubject(n.id) : intakeSubject(n.priority, n.id);
    try {
      await this.publisher.publish(subject, encode(n), MSGID.intake(n.id));
      stageItems.inc({ stage: "ingest" });
    } catch (cause) {
      throw new StoreUnavailable("intake stream unavailable; nothing was stored, retry", { cause });
    }
  }

  /**
   * Validates, deduplicates and stores a request. Resolves once the
   * notification is durable in JetStream. Throws an NfxError (with its code,
   * field and HTTP status) for every rejection; nothing is stored then.
   */
  async accept(body: unknown, producer: Producer): Promise<Accepted> {
    const { req, n } = await this.build(body, producer);
    if (!req.idempotencyKey) {
      await this.store(n);
      return { id: n.id, replayed: false };
    }
    const key = idempotencyKvKey(producer.name, req.idempotencyKey);
    const hash = sha256(canonical(req));
    try {
      await this.d.idempotency.create(key, encodeJson({ id: n.id, hash }));
      await this.store(n);
      return { id: n.id, replayed: false };
    } catch (err) {
      if (err instanceof StoreUnavailable) throw err;
      const e = await this.d.idempotency.get(key).catch(() => null);
      if (!e || e.operation !== "PUT") throw new StoreUnavailable("idempotency store unavailable; nothing was stored, retry", { cause: err });
      const prior = decodeJson<{ id: string; hash: string }>(e.value);
      if (prior.hash !== hash) {
        throw new IdempotencyConflict("idempotencyKey: was used with a different request body in the last 24 hours", { field: "idempotencyKey" });
      }
      // The first attempt may have died between recording the key and storing the request: store it now (same message id).
      if (!(await readNotification(this.d.nats, prior.id))) await this.store({ ...n, id: prior.id });
      return { id: prior.id, replayed: true };
    }
  }
}
