// Calls the nfx NATS API (request/reply), with a producer's API key when given, and turns error replies back into errors with their code.
import { headers, type NatsConnection } from "@nats-io/transport-node";

import { decodeJson, encodeJson } from "../core/codec.js";
import type { NotifyRequest } from "../core/request-schema.js";
import { API, type ApiOp, extApiSubject } from "../core/subjects.js";
import type { NotificationStatus } from "../tracking/status.js";

/** Header carrying the error code on a failed API reply; the body then holds `{error:{code,message,field}}`. */
export const ERROR_HEADER = "Nfx-Error";

/** Header carrying the API key on a request to the external family `nfx.ext.api.<op>` (not needed on the trusted `nfx.api.*`). */
export const API_KEY_HEADER = "Nfx-Api-Key";

/** How to call: the reply timeout, and the API key of a producer. */
export interface CallOptions {
  /** Reply timeout in ms; 5000 unless an operation says otherwise. */
  timeoutMs?: number;
  /**
   * The producer's API key, sent in {@link API_KEY_HEADER}. A producer connection (account PRODUCERS,
   * docs/security.md) publishes `nfx.api.<op>`, which its import maps to `nfx.ext.api.<op>` where the key is checked.
   */
  apiKey?: string;
  /** Address `nfx.ext.api.<op>` directly: only possible from inside nfx's own account (tools and tests). */
  ext?: boolean;
}

/** The subject of `op`: `nfx.api.<op>` (producers' imported name, and nfx's own trusted family), or `nfx.ext.api.<op>` with `ext`. */
export const apiSubject = (op: ApiOp, ext = false): string => (ext ? extApiSubject(op) : API[op]);

/** An error reply from the API: `code` is an NFX_ERR_* code, `field` the offending path if any. */
export class ApiError extends Error {
  constructor(readonly code: string, message: string, readonly field?: string) {
    super(message);
    this.name = "ApiError";
  }
}

/**
 * Sends a JSON request on `subject` and returns the decoded reply. `o` is a timeout in ms or
 * {@link CallOptions}; an `apiKey` there is sent in {@link API_KEY_HEADER} (the subject is the
 * caller's choice: see {@link callOp} to pick it from the op). Throws {@link ApiError} on an error
 * reply, or the NATS error (timeout, no responders).
 */
export async function callApi<T>(nc: NatsConnection, subject: string, body: unknown, o: number | CallOptions = 5000): Promise<T> {
  const opts: CallOptions = typeof o === "number" ? { timeoutMs: o } : o;
  const h = opts.apiKey === undefined ? undefined : headers();
  if (h) h.set(API_KEY_HEADER, opts.apiKey!);
  const m = await nc.request(subject, encodeJson(body), { timeout: opts.timeoutMs ?? 5000, ...(h ? { headers: h } : {}) });
  if (m.headers?.get(ERROR_HEADER)) {
    const { error } = decodeJson<{ error: { code: string; message: string; field?: string } }>(m.data);
    throw new ApiError(error.code, error.message, error.field);
  }
  return decodeJson<T>(m.data);
}

/** Calls operation `op` on {@link apiSubject}`(op, o.ext)`, with `o.apiKey` if given. Throws as {@link callApi}. */
export const callOp = <T>(nc: NatsConnection, op: ApiOp, body: unknown, o: CallOptions = {}): Promise<T> => callApi<T>(nc, apiSubject(op, o.ext), body, o);

/** Submits a notification; resolves with its id once it is durable. With `o.apiKey`, as that key's producer. */
export const notify = (nc: NatsConnection, req: Partial<NotifyRequest> | Record<string, unknown>, o: CallOptions = {}): Promise<{ id: string }> => callOp(nc, "notify", req, o);

/** Reads a notification's status. With `o.apiKey`, the key needs the `read` scope. */
export const status = (nc: NatsConnection, id: string, o: CallOptions = {}): Promise<NotificationStatus> => callOp(nc, "status", { id }, { timeoutMs: 15_000, ...o });
