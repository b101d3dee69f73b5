// Provider callbacks: SendGrid's Signed Event Webhook and Twilio's status callback, verified, deduplicated and turned into receipts.
import sgWebhook from "@sendgrid/eventwebhook";
import twilio from "twilio";

import type { Config } from "../core/config.js";
import { Forbidden, RequestInvalid, ServiceUnavailable, Unauthenticated } from "../core/errors.js";
import { ID_PATTERN } from "../core/subjects.js";
import type { ReceiptEntry } from "../core/types.js";
import { inboundEvents } from "../infra/metrics.js";
import type { Redis } from "../infra/redis.js";
import { addBounces } from "./bounces.js";
import type { Engagement, EngagementEvent } from "./engagement.js";

const { EventWebhook, EventWebhookHeader } = sgWebhook;

/** What a webhook call changed: events applied, and those already applied before (a provider's redelivery). */
export interface WebhookResult {
  applied: number;
  duplicates: number;
  ignored: number;
}

type SgEvent = Record<string, unknown> & { event?: string; email?: string; sg_event_id?: string; timestamp?: number; type?: string; status?: string; reason?: string; nfx_id?: string; nfx_user?: string; nfx_device?: string };

/** Whether a signed timestamp (unix seconds) is within `maxAgeSec` of now (both ways, for clock skew). */
function fresh(ts: string, maxAgeSec: number, now: number): boolean {
  const t = Number(ts);
  return Number.isFinite(t) && Math.abs(now / 1000 - t) <= maxAgeSec;
}

/** The receipt a SendGrid event means, or null for events nfx does not track (processed, deferred, ...). */
function sendgridEntry(e: SgEvent): { entry?: ReceiptEntry; engagement?: EngagementEvent["kind"]; hardBounce?: string } | null {
  const user = e.nfx_user;
  const at = typeof e.timestamp === "number" ? e.timestamp * 1000 : Date.now();
  const device = typeof e.nfx_device === "string" ? e.nfx_device : (e.email ?? "");
  const base = { user: user!, channel: "email" as const, device, at };
  switch (e.event) {
    case "delivered":
      return { entry: Object.assign(base, { outcome: "delivered" as const }) };
    case "bounce": {
      const hard = e.type !== "blocked";
      return { entry: Object.assign(base, { outcome: "failed" as const, late: true as const, reason: `${hard ? "bounce" : "blocked"}:${e.status ?? ""}`.replace(/:$/, "") }), ...(hard && e.email ? { hardBounce: e.email } : {}) };
    }
    case "dropped":
      return { entry: Object.assign(base, { outcome: "failed" as const, late: true as const, reason: `dropped:${e.reason ?? ""}`.replace(/:$/, "") }) };
    case "open":
      return { engagement: "opened" };
    case "click":
      return { engagement: "clicked" };
    default:
      return null;
  }
}

/** Handles provider webhooks for one HTTP API process. */
export class Webhooks {
  private readonly sgKey: unknown;
  constructor(private readonly cfg: Config, private readonly redis: Redis, private readonly engagement: Engagement, private readonly now: () => number = Date.now) {
    const k = cfg.webhooks.sendgridPublicKey;
    this.sgKey = k ? new EventWebhook().convertPublicKeyToECDSA(k) : null;
  }

  /**
   * SendGrid's Signed Event Webhook: verifies the ECDSA signature over
   * timestamp + raw body and the timestamp's age, then applies each event
   * once (by sg_event_id): delivered; bounce and dropped as failures after
   * acceptance (a hard bounce also stops all email to that address); open
   * and click as engagement. Events without nfx's custom args are ignored.
   * Throws ServiceUnavailable when no key is configured, Unauthenticated for a
   * missing or bad signature, RequestInvalid for a body that is not an event array.
   */
  async sendgrid(body: Buffer, headers: { signature: string; timestamp: string }): Promise<WebhookResult> {
    if (!this.sgKey) throw new ServiceUnavailable("webhooks.sendgridPublicKey: not configured; SendGrid events are refused", { field: "webhooks.sendgridPublicKey" });
    if (!headers.signature || !headers.timestamp) throw new Unauthenticated(`${EventWebhookHeader.SIGNATURE()}: signature and timestamp headers are required`, { field: EventWebhookHeader.SIGNATURE() });
    let ok = false;
    try {
      ok = new EventWebhook().verifySignature(this.sgKey, body.toString("utf8"), headers.signature, headers.timestamp);
    } catch {
      ok = false;
    }
    if (!ok) {
      inboundEvents.inc({ source: "sendgrid", result: "refused" });
      throw new Unauthenticated(`${EventWebhookHeader.SIGNATURE()}: signature does not verify`, { field: EventWebhookHeader.SIGNATURE() });
    }
    if (!fresh(headers.timestamp, this.cfg.webhooks.maxAgeSec, this.now())) throw new Forbidden(`${EventWebhookHeader.TIMESTAMP()}: older than ${this.cfg.webhooks.maxAgeSec} s`, { field: EventWebhookHeader.TIMESTAMP() });
    let events: unknown;
    try {
      events = JSON.parse(body.toString("utf8"));
    } catch {
      throw new RequestInvalid("(body): must be a JSON array of events", { field: "(body)" });
    }
    if (!Array.isArray(events)) throw new RequestInvalid("(body): must be a JSON array of events", { field: "(body)" });
    const ours = (events as SgEvent[]).filter((e) => e && typeof e === "object" && typeof e.nfx_id === "string" && ID_PATTERN.test(e.nfx_id) && typeof e.nfx_user === "string" && typeof e.sg_event_id === "string");
    const ids = ours.map((e) => e.sg_event_id!);
    const firsts = await this.engagement.firstTimes(ids, "sg");
    const entries = new Map<string, ReceiptEntry[]>();
    const eng: EngagementEvent[] = [];
    const bounces: string[] = [];
    let ignored = events.length - ours.length;
    let applied = 0;
    ours.forEach((e, i) => {
      if (!firsts[i]) return;
      const m = sendgridEntry(e);
      if (!m) return void ignored++;
      applied++;
      if (m.engagement) eng.push({ kind: m.engagement, nid: e.nfx_id!, user: e.nfx_user!, channel: "email", device: e.nfx_device ?? e.email, at: (e.timestamp ?? this.now() / 1000) * 1000 });
      if (m.entry) {
        const l = entries.get(e.nfx_id!);
        if (l) l.push(m.entry);
        else entries.set(e.nfx_id!, [m.entry]);
      }
      if (m.hardBounce) bounces.push(m.hardBounce);
    });
    try {
      await addBounces(this.redis, bounces);
      await this.engagement.publish("provider", entries);
      if (eng.length) await this.engagement.record(eng);
    } catch (err) {
      // Not applied: let SendGrid's redelivery apply them.
      await this.engagement.forget(ids.filter((_, i) => firsts[i]), "sg");
      throw err;
    }
    const duplicates = firsts.filter((f) => !f).length;
    inboundEvents.inc({ source: "sendgrid", result: "applied" }, applied);
    inboundEvents.inc({ source: "sendgrid", result: "duplicate" }, duplicates);
    return { applied, duplicates, ignored };
  }

  /**
   * Twilio's status callback: verifies `X-Twilio-Signature` (HMAC-SHA1 with
   * the account's auth token over the public URL and sorted form
   * parameters) with the SDK's validateRequest, then applies each (message,
   * status) once: delivered; undelivered and failed as failures after
   * acceptance (reason `<status>:<ErrorCode>`). `queued`, `sending` and
   * `sent` change nothing (nfx already counted the send).
   */
  async twilio(pathAndQuery: string, form: Record<string, string>, signature: string): Promise<WebhookResult> {
    const url = `${this.cfg.engagement.baseUrl}${pathAndQuery}`;
    const q = new URL(url).searchParams;
    const account = this.cfg.gateways.sms.apps.find((a) => a.name === q.get("nfx_account"));
    if (!account) throw new Unauthenticated("nfx_account: not an SMS account of this cluster", { field: "nfx_account" });
    if (!signature || !twilio.validateRequest(account.authToken, signature, url, form)) {
      inboundEvents.inc({ source: "twilio", result: "refused" });
      throw new Unauthenticated("X-Twilio-Signature: signature does not verify", { field: "X-Twilio-Signature" });
    }
    const nid = q.get("nfx_id") ?? "";
    const user = q.get("nfx_user") ?? "";
    if (!ID_PATTERN.test(nid) || !ID_PATTERN.test(user)) throw new RequestInvalid("nfx_id: the callback URL names no notification and user", { field: "nfx_id" });
    const status = form.MessageStatus ?? form.SmsStatus ?? "";
    const sid = form.MessageSid ?? form.SmsSid ?? "";
    const base = { user, channel: "sms" as const, device: q.get("nfx_device") ?? form.To ?? "", providerId: sid, at: this.now() };
    const entry: ReceiptEntry | null =
      status === "delivered" ? Object.assign(base, { outcome: "delivered" as const })
      : status === "undelivered" || status === "failed" ? Object.assign(base, { outcome: "failed" as const, late: true as const, reason: `${status}:${form.ErrorCode ?? ""}`.replace(/:$/, "") })
      : null;
    if (!entry) return { applied: 0, duplicates: 0, ignored: 1 };
    const id = `${sid}:${status}`;
    const [first] = await this.engagement.firstTimes([id], "tw");
    if (!first) {
      inboundEvents.inc({ source: "twilio", result: "duplicate" });
      return { applied: 0, duplicates: 1, ignored: 0 };
    }
    try {
      await this.engagement.publish("provider", new Map([[nid, [entry]]]));
    } catch (err) {
      await this.engagement.forget([id], "tw");
      throw err;
    }
    inboundEvents.inc({ source: "twilio", result: "applied" });
    return { applied: 1, duplicates: 0, ignored: 0 };
  }
}
