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

/** Configuration failed validation at start-up; `message` lists every problem with its path. */
export class ConfigInvalid extends NfxError {
  readonly code = "NFX_ERR_CONFIG_INVALID";
  readonly status = 500;
}

/** A request failed validation; `field` names the path and `message` the rule. */
export class RequestInvalid extends NfxError {
  readonly code = "NFX_ERR_REQUEST_INVALID";
  readonly status = 400;
}

/** A request body could not be decoded (not JSON / msgpack). */
export class RequestUndecodable extends NfxError {
  readonly code = "NFX_ERR_REQUEST_UNDECODABLE";
  readonly status = 400;
}

/** A notification, user or other resource does not exist. */
export class NotFound extends NfxError {
  readonly code = "NFX_ERR_NOT_FOUND";
  readonly status = 404;
}

/** Storing a request in JetStream failed; nothing was accepted. The caller may retry. */
export class StoreUnavailable extends NfxError {
  readonly code = "NFX_ERR_STORE_UNAVAILABLE";
  readonly status = 503;
  override readonly retryable = true;
}

/** A required local binary (nats-server, redis-server) or native module is missing or unusable. */
export class RuntimeMissing extends NfxError {
  readonly code = "NFX_ERR_RUNTIME_MISSING";
  readonly status = 500;
}

/** A provider call failed. `retryable` tells whether the gateway may try again; `reason` is the provider's own. */
export class ProviderError extends NfxError {
  readonly code = "NFX_ERR_PROVIDER";
  readonly status = 502;
  override readonly retryable: boolean;
  /** The provider's reason string, e.g. "Unregistered", "messaging/invalid-argument". */
  readonly reason: string;
  /** True when the device token is dead and must be removed from the directory. */
  readonly tokenInvalid: boolean;

  constructor(message: string, o: { reason: string; retryable: boolean; tokenInvalid?: boolean; cause?: unknown }) {
    super(message, { cause: o.cause });
    this.reason = o.reason;
    this.retryable = o.retryable;
    this.tokenInvalid = o.tokenInvalid ?? false;
  }
}

/** Every error class, so tests can check codes are unique and callers can map codes back. */
export const ERROR_CLASSES = [
  ConfigInvalid,
  RequestInvalid,
  RequestUndecodable,
  NotFound,
  StoreUnavailable,
  RuntimeMissing,
  ProviderError,
] as const;

/** Turns anything thrown into the `{code, message}` shape answered to a caller. Unknown errors become NFX_ERR_INTERNAL. */
export function toErrorReply(err: unknown): { code: string; message: string; field?: string } {
  if (err instanceof NfxError) return err.toJSON();
  return { code: "NFX_ERR_INTERNAL", message: "internal error" };
}
