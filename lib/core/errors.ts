// The one error registry: every error nfx raises or returns has a stable NFX_ERR_* code here.

/** Options shared by every nfx error. */
export interface NfxErrorOptions {
  /** The underlying error, kept for logs. */
  cause?: unknown;
  /** Dotted path of the offending field, for request and config errors. */
  field?: string;
}

/**
 * Base class of every nfx error. `code` is stable and never reused for a
 * different meaning (test/unit/errors.test.ts checks uniqueness);
 * `status` is the HTTP status a request error maps to.
 */
export abstract class NfxError extends Error {
  abstract readonly code: string;
  abstract readonly status: number;
  readonly field?: string;
  /** Whether retrying the same operation later may succeed. */
  readonly retryable: boolean = false;

  constructor(message: string, opts: NfxErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.field = opts.field;
  }

  /** The shape sent back to callers over HTTP or NATS. */
  toJSON(): { code: string; message: string; field?: string } {
    return this.field === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, field: this.field };
  }
}

/** Makes an error class with a fixed code and HTTP status; each registry entry below is one line. */
function errorClass(code: string, status: number, retryable = false) {
  return class extends NfxError {
    readonly code = code;
    readonly status = status;
    override readonly retryable = retryable;
  };
}

/** Configuration failed validation at start-up; `message` lists every problem with its path. */
export class ConfigInvalid extends errorClass("NFX_ERR_CONFIG_INVALID", 500) {}
/** A request is malformed: wrong type, unknown field, length or pattern broken. `field` names the path, `message` the rule. */
export class RequestInvalid extends errorClass("NFX_ERR_REQUEST_INVALID", 400) {}
/** A request body could not be decoded as JSON. */
export class RequestUndecodable extends errorClass("NFX_ERR_REQUEST_UNDECODABLE", 400) {}
/** A request body is larger than `ingest.maxBodyBytes`. */
export class BodyTooLarge extends errorClass("NFX_ERR_BODY_TOO_LARGE", 413) {}
/** A request body is not `application/json`. */
export class UnsupportedMediaType extends errorClass("NFX_ERR_UNSUPPORTED_MEDIA_TYPE", 415) {}
/** No valid API key was presented. */
export class Unauthenticated extends errorClass("NFX_ERR_UNAUTHENTICATED", 401) {}
/** The API key may not use this category or priority; or a user token reports another user's events. */
export class Forbidden extends errorClass("NFX_ERR_FORBIDDEN", 403) {}
/** The API key lacks the scope an operation needs; the message names the scope wanted and the key. Nothing was changed. */
export class ScopeMissing extends errorClass("NFX_ERR_SCOPE_MISSING", 403) {}
/** The idempotency key was used before with a different body. */
export class IdempotencyConflict extends errorClass("NFX_ERR_IDEMPOTENCY_CONFLICT", 409) {}
/** The category is not one of the configured categories. */
export class CategoryUnknown extends errorClass("NFX_ERR_CATEGORY_UNKNOWN", 422) {}
/** The segment is neither built in nor defined. */
export class SegmentUnknown extends errorClass("NFX_ERR_SEGMENT_UNKNOWN", 422) {}
/** The topic does not exist. */
export class TopicUnknown extends errorClass("NFX_ERR_TOPIC_UNKNOWN", 422) {}
/** A webhook endpoint URL is refused: not http(s), or it resolves to a loopback, private, link-local or metadata address that `endpoints.allowNetworks` does not allow (SSRF protection). */
export class EndpointRefused extends errorClass("NFX_ERR_ENDPOINT_REFUSED", 422) {}
/** The template does not exist. */
export class TemplateNotFound extends errorClass("NFX_ERR_TEMPLATE_NOT_FOUND", 422) {}
/** The template needs variables the request did not give, or lacks a channel the request wants. */
export class TemplateMismatch extends errorClass("NFX_ERR_TEMPLATE_MISMATCH", 422) {}
/** A template to be stored is malformed (syntax, missing default locale). */
export class TemplateInvalid extends errorClass("NFX_ERR_TEMPLATE_INVALID", 400) {}
/** Content would exceed a provider's limit (APNs payload 4096 bytes). */
export class PayloadTooLarge extends errorClass("NFX_ERR_PAYLOAD_TOO_LARGE", 422) {}
/** Expiry or send-at time is impossible: in the past, too far ahead, or send-at after expiry. */
export class ScheduleInvalid extends errorClass("NFX_ERR_SCHEDULE_INVALID", 422) {}
/** A wanted channel or target kind is not available in this cluster. */
export class ChannelUnavailable extends errorClass("NFX_ERR_CHANNEL_UNAVAILABLE", 422) {}
/** A campaign control action that its current state does not allow (e.g. resume a running campaign). */
export class CampaignStateConflict extends errorClass("NFX_ERR_CAMPAIGN_STATE", 409) {}
/** A notification, template or other resource does not exist. */
export class NotFound extends errorClass("NFX_ERR_NOT_FOUND", 404) {}
/** Storing a request in JetStream failed; nothing was accepted. The caller may retry. */
export class StoreUnavailable extends errorClass("NFX_ERR_STORE_UNAVAILABLE", 503, true) {}
/** A feature this cluster has not been configured for (e.g. a webhook without its verification key). */
export class ServiceUnavailable extends errorClass("NFX_ERR_NOT_CONFIGURED", 503) {}
/** A role was started with a published default secret or an open setting (`ws.secret`, `engagement.secret`, `ws.origins` "*"); `field` names the key to set. */
export class InsecureDefault extends errorClass("NFX_ERR_INSECURE_DEFAULT", 500) {}
/** A role process started by `nfx up`, `nfx demo`, `nfx node` or a benchmark did not report ready within `up.readyTimeoutMs`, or exited first; the message names the role, the deadline and its last lines of output. It was killed, and what was started with it stopped. */
export class RoleNotReady extends errorClass("NFX_ERR_ROLE_NOT_READY", 500) {}
/** A required local binary (nats-server, redis-server) or native module is missing or unusable. */
export class RuntimeMissing extends errorClass("NFX_ERR_RUNTIME_MISSING", 500) {}

/** A provider call failed. `retryable` tells whether the gateway may try again; `reason` is the provider's own. */
export class ProviderError extends NfxError {
  readonly code = "NFX_ERR_PROVIDER";
  readonly status = 502;
  declare readonly retryable: boolean;
  /** The provider's reason string, e.g. "Unregistered", "messaging/invalid-argument". */
  readonly reason: string;
  /** True when the device token is gone for good (APNs 410 Unregistered, FCM UNREGISTERED): the gateway removes it from the directory. */
  readonly tokenInvalid: boolean;
  /** The provider's Retry-After, in ms: no retry comes sooner. */
  readonly retryAfterMs?: number;
  /** A quota error (FCM QUOTA_EXCEEDED): the retry waits at least `gateways.retry.quotaMs`. */
  readonly quota: boolean;

  constructor(message: string, o: { reason: string; retryable: boolean; tokenInvalid?: boolean; retryAfterMs?: number; quota?: boolean; cause?: unknown }) {
    super(message, { cause: o.cause });
    this.reason = o.reason;
    Object.defineProperty(this, "retryable", { value: o.retryable, enumerable: true });
    this.tokenInvalid = o.tokenInvalid ?? false;
    if (o.retryAfterMs !== undefined) this.retryAfterMs = o.retryAfterMs;
    this.quota = o.quota ?? false;
  }
}

/** A shard owner or campaign owner whose lease is gone tried to write: it must stop. */
export class Fenced extends errorClass("NFX_ERR_FENCED", 409) {}

/**
 * Every error class, so tests can check codes are unique and callers can map codes back.
 * test/unit/errors.test.ts fails when an exported NfxError subclass is missing here, and when a
 * code is not in docs/errors.md (or the page names a code that is not here).
 */
export const ERROR_CLASSES = [
  ConfigInvalid, RequestInvalid, RequestUndecodable, BodyTooLarge, UnsupportedMediaType, Unauthenticated, Forbidden, ScopeMissing,
  IdempotencyConflict, CategoryUnknown, SegmentUnknown, TopicUnknown, EndpointRefused, TemplateNotFound, TemplateMismatch, TemplateInvalid, PayloadTooLarge,
  ScheduleInvalid, ChannelUnavailable, CampaignStateConflict, NotFound, StoreUnavailable, ServiceUnavailable, InsecureDefault, RuntimeMissing, RoleNotReady, ProviderError, Fenced,
] as const;

/** The code {@link toErrorReply} answers for anything that is not an NfxError (its detail is logged, never sent). */
export const INTERNAL_ERROR_CODE = "NFX_ERR_INTERNAL";

/** Turns anything thrown into the `{code, message}` shape answered to a caller. Unknown errors become NFX_ERR_INTERNAL. */
export function toErrorReply(err: unknown): { code: string; message: string; field?: string } {
  if (err instanceof NfxError) return err.toJSON();
  return { code: INTERNAL_ERROR_CODE, message: "internal error" };
}
