// Calls the nfx NATS API (request/reply) and turns error replies back into errors with their code.
import type { NatsConnection } from "@nats-io/transport-node";
import { decodeJson, encodeJson } from "./codec.js";
import { API } from "./subjects.js";
import type { NotifyRequest } from "./request-schema.js";
import type { NotificationStatus } from "./status.js";

/** Header carrying the error code on a failed API reply; the body then holds `{error:{code,message,field}}`. */
export const ERROR_HEADER = "Nfx-Error";

/** An error reply from the API: `code` is an NFX_ERR_* code, `field` the offending path if any. */
export class ApiError extends Error {
  constructor(readonly code: string, message: string, readonly field?: string) {
    super(message);
    this.name = "ApiError";
  }
}

/** Sends a JSON request on `subject` and returns the decoded reply. Throws {@link ApiError} on an error reply, or the NATS error (timeout, no responders). */
export async function callApi<T>(nc: NatsConnection, subject: string, body: unknown, timeoutMs = 5000): Promise<T> {
  const m = await nc.request(subject, encodeJson(body), { timeout: timeoutMs });
  if (m.headers?.get(ERROR_HEADER)) {
    const { error } = decodeJson<{ error: { code: string; message: string; field?: string } }>(m.data);
    throw new ApiError(error.code, error.message, error.field);
  }
  return decodeJson<T>(m.data);
}

/** Submits a notification; resolves with its id once it is durable. */
export const notify = (nc: NatsConnection, req: Partial<NotifyRequest> | Record<string, unknown>): Promise<{ id: string }> => callApi(nc, API.notify, req);

/** Reads a notification's status. */
export const status = (nc: NatsConnection, id: string): Promise<NotificationStatus> => callApi(nc, API.status, { id }, 15_000);
