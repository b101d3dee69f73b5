// The schema of a notify request (NATS and, later, HTTP share it): every rule checked before anything is stored.
import { z } from "zod";
import { RequestInvalid } from "./errors.js";
import { ID_PATTERN, PRIORITIES } from "./subjects.js";
import type { NotifyRequest } from "./types.js";

const id = z.string().regex(ID_PATTERN, "must be 1-128 characters of A-Z a-z 0-9 _ - : @ + =");

/** Maximum explicit recipients in one request. */
export const MAX_RECIPIENTS = 10_000;

export const notifySchema = z.strictObject({
  recipients: z.array(id).min(1, "must name at least one recipient").max(MAX_RECIPIENTS, `must name at most ${MAX_RECIPIENTS} recipients`),
  category: id.default("transactional"),
  priority: z.enum(PRIORITIES).default("normal"),
  push: z.strictObject({
    title: z.string().min(1, "must not be empty").max(256, "must be at most 256 characters"),
    body: z.string().min(1, "must not be empty").max(2048, "must be at most 2048 characters"),
    data: z.record(z.string(), z.string()).optional(),
    badge: z.number().int().min(0).optional(),
    sound: z.string().max(64).optional(),
  }),
  collapseKey: z.string().min(1).refine((s) => Buffer.byteLength(s) <= 64, "must be at most 64 bytes").optional(),
  ttlSec: z.number().int().min(1, "must be at least 1 second").max(28 * 86400, "must be at most 28 days").default(86400),
});

/**
 * Validates a decoded request body. Returns the request with defaults
 * applied. Throws {@link RequestInvalid} naming the first offending field path
 * and its rule; unknown fields are rejected.
 */
export function parseNotifyRequest(body: unknown): Required<Pick<NotifyRequest, "category" | "priority" | "ttlSec">> & NotifyRequest {
  const r = notifySchema.safeParse(body);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const at = issue.path.map(String).join(".");
  if (issue.code === "unrecognized_keys") {
    const f = `${at ? at + "." : ""}${issue.keys[0]}`;
    throw new RequestInvalid(`${f}: unknown field`, { field: f });
  }
  throw new RequestInvalid(`${at || "(body)"}: ${issue.message}`, { field: at || "(body)" });
}
