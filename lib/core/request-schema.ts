// The schema of a notify request, shared by the NATS and HTTP surfaces: every structural rule, checked before anything is stored.
import { z } from "zod";

import { RequestInvalid } from "./errors.js";
import { isPrototypeName, PROTOTYPE_NAME_RULE } from "./own-keys.js";
import { formatIssue } from "./zod-issues.js";

export { formatIssue };
import { ID_PATTERN, PRIORITIES, TOPIC_NAME } from "./subjects.js";
import { CONTENT_CHANNELS } from "./types.js";

/** Maximum explicit recipients in one request. */
export const MAX_RECIPIENTS = 10_000;
/** SMS body limit (Twilio: 1600 characters). */
export const SMS_MAX = 1600;
/** FCM data keys the service reserves, plus nfx's own. */
export const FCM_RESERVED = new Set(["from", "notification", "message_type", "collapse_key", "nfx_id"]);
const FCM_RESERVED_PREFIX = /^(google|gcm)\./;

const id = z.string().regex(ID_PATTERN, "must be 1-128 characters of A-Z a-z 0-9 _ - : @ + =");
const bytesAtMost = (n: number) => (s: string) => Buffer.byteLength(s) <= n;
/**
 * ISO 8601 date and time with an explicit offset (`Z` or ±hh:mm): a time
 * without one would be read in the server's own zone, a date alone at some
 * midnight nobody chose.
 */
export const ISO_INSTANT = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/i;

/** True when `s` matches {@link ISO_INSTANT} and names a real calendar date and time (no 30 February, no 25:00). */
function isInstant(s: string): boolean {
  const m = ISO_INSTANT.exec(s);
  if (!m) return false;
  const [y, mo, d, h, mi, sec] = [m[1], m[2], m[3], m[4], m[5], m[6] ?? "0"].map(Number) as [number, number, number, number, number, number];
  const off = m[7].toUpperCase() === "Z" ? [0, 0] : m[7].slice(1).split(":").map(Number);
  if (mo < 1 || mo > 12 || h > 23 || mi > 59 || sec > 59 || off[0] > 23 || off[1] > 59) return false;
  return d >= 1 && d <= new Date(Date.UTC(y, mo, 0)).getUTCDate() && !Number.isNaN(Date.parse(s));
}

/** An instant: ISO 8601 date-time with an explicit offset, or epoch milliseconds (UTC by definition). Parsed to epoch ms. */
const instant = z.union([z.number().int().min(0).max(8.64e15, "must be a time within the JavaScript date range"), z.string().refine(isInstant, "must be an ISO 8601 date and time with an explicit offset (Z or +hh:mm), e.g. 2030-01-31T09:00:00Z")], {
  error: "must be an ISO 8601 date and time with an explicit offset (Z or +hh:mm) or epoch milliseconds",
}).transform((v) => (typeof v === "number" ? v : Date.parse(v)));

const push = z.strictObject({
  title: z.string().min(1, "must not be empty").max(1024, "must be at most 1024 characters"),
  body: z.string().min(1, "must not be empty").max(4096, "must be at most 4096 characters"),
  data: z
    .record(
      z.string().min(1).refine((k) => !FCM_RESERVED.has(k) && !FCM_RESERVED_PREFIX.test(k), "is a reserved FCM data key (from, notification, message_type, collapse_key, google.*, gcm.*, nfx_id)"),
      z.string({ error: "must be a string (FCM data values are strings)" }),
    )
    .optional(),
  badge: z.number().int().min(0).optional(),
  sound: z.string().min(1).max(64).optional(),
});
const email = z
  .strictObject({
    subject: z.string({ error: (i) => (i.input === undefined ? "is required for email" : "must be a string") }).min(1, "must not be empty").max(998, "must be at most 998 characters"),
    html: z.string().max(1_000_000).optional(),
    text: z.string().max(1_000_000).optional(),
  })
  .refine((e) => e.html !== undefined || e.text !== undefined, { message: "needs html or text", path: ["html"] });
const sms = z.strictObject({ text: z.string().min(1, "must not be empty").max(SMS_MAX, `must be at most ${SMS_MAX} characters`) });
const inapp = z.strictObject({ payload: z.record(z.string(), z.unknown()).refine((p) => JSON.stringify(p).length <= 4096, "must be at most 4096 bytes of JSON") });
/** What a topic's webhook endpoints receive. */
const webhook = z.strictObject({
  type: z.string().regex(/^[A-Za-z0-9_.:-]{1,128}$/, "must be an event type: 1-128 characters of A-Z a-z 0-9 _ . : -"),
  data: z.record(z.string(), z.unknown()).refine((p) => Buffer.byteLength(JSON.stringify(p)) <= 65_536, "must be at most 65536 bytes of JSON"),
});
/** A topic name. */
export const topicName = z.string().regex(TOPIC_NAME, "must be a topic name: 1-64 characters of a-z 0-9 _ . - starting with a letter or digit");

export const notifySchema = z
  .strictObject({
    recipients: z.array(id).min(1, "must name at least one recipient").max(MAX_RECIPIENTS, `must name at most ${MAX_RECIPIENTS} recipients`).optional(),
    segment: z.string().regex(/^[a-z0-9][a-z0-9_:-]{0,63}$/, "must be a segment name: 1-64 characters of a-z 0-9 _ : -").refine((s) => !s.startsWith("topic:"), "must not start with topic: (send to a topic with the topic field)").optional(),
    topic: topicName.optional(),
    category: z.string().regex(/^[a-z][a-z0-9_-]{0,63}$/, "must be a category name").refine((c) => !isPrototypeName(c), PROTOTYPE_NAME_RULE),
    priority: z.enum(PRIORITIES).optional(),
    channels: z
      .array(z.enum(CONTENT_CHANNELS))
      .min(1, "must name at least one channel")
      .refine((c) => new Set(c).size === c.length, "must not repeat a channel")
      .optional(),
    template: z
      .strictObject({
        id: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, "must be a template id").refine((t) => !isPrototypeName(t), PROTOTYPE_NAME_RULE),
        variables: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,63}$/, "must be a variable name").refine((v) => !isPrototypeName(v), PROTOTYPE_NAME_RULE), z.union([z.string().max(4096), z.number(), z.boolean()], { error: "must be a string, number or boolean" })).default({}),
        locale: z.string().regex(/^[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,2}$/, "must be a locale tag such as en or pt-BR").optional(),
      })
      .optional(),
    content: z
      .strictObject({ push: push.optional(), email: email.optional(), sms: sms.optional(), inapp: inapp.optional(), webhook: webhook.optional() })
      .refine((c) => Object.keys(c).length > 0, "must have content for at least one channel")
      .optional(),
    collapseKey: z.string().min(1).refine(bytesAtMost(64), "must be at most 64 bytes (APNs collapse id limit)").optional(),
    ttlSec: z.number().int().min(1, "must be at least 1 second").max(28 * 86400, "must be at most 28 days").optional(),
    expiresAt: instant.optional(),
    sendAt: instant.optional(),
    /** Local-time delivery: each recipient gets it at this wall-clock time in their own zone (docs/architecture.md#local-time-delivery). */
    deliverAt: z
      .strictObject({
        localTime: z.string().regex(/^([01][0-9]|2[0-3]):[0-5][0-9]$/, "must be a 24-hour HH:MM time"),
        window: z.string().regex(/^[1-9][0-9]{0,3}[mh]$/, "must be minutes or hours, like 60m or 2h").refine((w) => windowMinutes(w) <= 1439, "must be less than 24h").optional(),
      })
      .optional(),
    /** Gather per recipient into a digest (docs/architecture.md#digests): the key (default: the category) and the window, over the category's settings. */
    digest: z
      .strictObject({
        key: z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, "must be 1-64 characters of A-Z a-z 0-9 _ . : -").optional(),
        windowSec: z.number().int().min(1).max(7 * 86400).optional(),
        quietSec: z.number().int().min(1).max(86400).optional(),
        maxSec: z.number().int().min(1).max(7 * 86400).optional(),
        maxItems: z.number().int().min(1).max(1000).optional(),
      })
      .optional(),
    idempotencyKey: z.string().min(1).max(256, "must be at most 256 characters").optional(),
    /** Options of a segment notification's campaign. */
    campaign: z.strictObject({ rate: z.number().min(0, "must be >= 0 (users per second; 0 = no limit)").max(10_000_000).optional() }).optional(),
  })
  .superRefine((r, ctx) => {
    if ([r.recipients, r.segment, r.topic].filter((x) => x !== undefined).length !== 1) {
      ctx.addIssue({ code: "custom", path: ["recipients"], message: "exactly one of recipients, segment or topic is required" });
    }
    if (r.deliverAt && r.priority === "critical") ctx.addIssue({ code: "custom", path: ["deliverAt"], message: "critical notifications are never held for a local time" });
    if (r.content?.webhook && r.topic === undefined) ctx.addIssue({ code: "custom", path: ["content", "webhook"], message: "only applies to topic targets (endpoints subscribe to topics)" });
    if ((r.template === undefined) === (r.content === undefined)) {
      ctx.addIssue({ code: "custom", path: ["content"], message: "exactly one of content or template is required" });
    }
    if (r.ttlSec !== undefined && r.expiresAt !== undefined) ctx.addIssue({ code: "custom", path: ["expiresAt"], message: "give ttlSec or expiresAt, not both" });
    if (r.campaign !== undefined && r.segment === undefined && r.topic === undefined) ctx.addIssue({ code: "custom", path: ["campaign"], message: "only applies to segment and topic targets" });
  });

export type NotifyRequest = z.infer<typeof notifySchema>;

/**
 * Validates a decoded request body structurally. Throws {@link RequestInvalid}
 * naming the first offending field path and its rule. Rules that need state
 * or the clock (category known, template, times, payload size) are checked
 * by lib/intake/intake.ts.
 */
export function parseNotifyRequest(body: unknown): NotifyRequest {
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw new RequestInvalid("(body): must be a JSON object", { field: "(body)" });
  const r = notifySchema.safeParse(body);
  if (r.success) return r.data;
  const { field, message } = formatIssue(r.error.issues[0]);
  throw new RequestInvalid(message, { field });
}

/** A `deliverAt.window` ("60m", "2h") in minutes. */
export const windowMinutes = (w: string): number => Number(w.slice(0, -1)) * (w.endsWith("h") ? 60 : 1);

/** A preference update: global opt-out, marketing opt-out, time zone, quiet hours and/or per category, per channel switches. */
const hhmm = z.string().regex(/^([01][0-9]|2[0-3]):[0-5][0-9]$/, "must be a 24-hour HH:MM time");

export const preferencesSchema = z.strictObject({
  optedOut: z.boolean().optional(),
  marketingOptOut: z.boolean().optional(),
  timezone: z.string().min(1).max(64).refine(isTimeZone, "must be an IANA time zone").optional(),
  quietHours: z.strictObject({ start: hhmm, end: hhmm }).nullable().optional(),
  categories: z.record(z.string().regex(/^[a-z][a-z0-9_-]{0,63}$/, "must be a category name").refine((c) => !isPrototypeName(c), PROTOTYPE_NAME_RULE), z.partialRecord(z.enum(CONTENT_CHANNELS), z.boolean())).optional(),
}).refine((p) => Object.values(p).some((v) => v !== undefined), "must change optedOut, marketingOptOut, timezone, quietHours or categories");

/** Whether `tz` is a time zone this runtime knows (IANA name). */
export function isTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat("en", { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

/** Parses a body with `schema`, throwing {@link RequestInvalid} with the first issue's field and rule. */
export function parseWith<T>(schema: z.ZodType<T>, body: unknown): T {
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const { field, message } = formatIssue(r.error.issues[0]);
  throw new RequestInvalid(message, { field });
}
