// The topics and endpoints operations both API surfaces offer (`nfx.api.topics`, `nfx.api.endpoints`, /v1/topics, /v1/endpoints), with their validation.
import { z } from "zod";

import type { Config } from "../core/config.js";
import { RequestInvalid } from "../core/errors.js";
import { parseWith, topicName } from "../core/request-schema.js";
import { ENDPOINT_ID, ID_PATTERN } from "../core/subjects.js";
import {
  createEndpoint, deleteEndpoint, type Endpoint, endpointTopics, getEndpoint, LIFECYCLE_EVENTS, listEndpoints, rotateSecret, updateEndpoint, withoutSecrets,
} from "../directory/endpoints.js";
import { changeEndpointSubscriptions, changeUserSubscriptions, deleteTopic, getTopic, listTopics, putTopic } from "../directory/topics.js";
import { EndpointQueues } from "../flow/endpoint-queues.js";
import { addressPolicy } from "../infra/address-policy.js";
import type { Redis } from "../infra/redis.js";

/** Most ids one subscribe or unsubscribe call takes. */
export const MAX_SUBSCRIBERS_PER_CALL = 10_000;

const userIds = z.array(z.string().regex(ID_PATTERN, "must be a user id")).min(1, "must name at least one user").max(MAX_SUBSCRIBERS_PER_CALL, `must name at most ${MAX_SUBSCRIBERS_PER_CALL} users`);
const endpointIds = z.array(z.string().regex(ENDPOINT_ID, "must be an endpoint id (ep_ and 16 characters)")).min(1, "must name at least one endpoint").max(MAX_SUBSCRIBERS_PER_CALL, `must name at most ${MAX_SUBSCRIBERS_PER_CALL} endpoints`);
const description = z.string().max(1024, "must be at most 1024 characters");

const topicSchema = z.discriminatedUnion("action", [
  z.strictObject({ action: z.literal("put"), name: topicName, description: description.optional() }),
  z.strictObject({ action: z.literal("get"), name: topicName }),
  z.strictObject({ action: z.literal("list") }),
  z.strictObject({ action: z.literal("delete"), name: topicName }),
  z.strictObject({ action: z.enum(["subscribe", "unsubscribe"]), name: topicName, users: userIds.optional(), endpoints: endpointIds.optional() })
    .refine((r) => r.users !== undefined || r.endpoints !== undefined, { message: "needs users or endpoints", path: ["users"] }),
], { error: (i) => (i.code === "invalid_union" ? "must be one of put, get, list, delete, subscribe, unsubscribe" : undefined) });

const endpointFields = {
  description: description.nullable().optional(),
  types: z.array(z.string().regex(/^[A-Za-z0-9_.:-]{1,128}$/, "must be an event type")).min(1, "must name at least one type (null: every type)").max(100).nullable().optional(),
  rateLimit: z.number().min(0.01, "must be > 0 deliveries per second (null: no limit)").max(100_000).nullable().optional(),
  events: z.array(z.enum(LIFECYCLE_EVENTS)).min(1, "must name at least one event (null: none)").nullable().optional(),
};
const url = z.string().max(2048, "must be at most 2048 characters");
const endpointId = z.string().regex(ENDPOINT_ID, "must be an endpoint id (ep_ and 16 characters)");
const endpointSchema = z.discriminatedUnion("action", [
  z.strictObject({ action: z.literal("create"), url, topics: z.array(topicName).max(1000).optional(), ...endpointFields }),
  z.strictObject({ action: z.literal("update"), id: endpointId, url: url.optional(), ...endpointFields }),
  z.strictObject({ action: z.enum(["get", "delete", "rotate", "state", "resume", "pause"]), id: endpointId }),
  z.strictObject({ action: z.literal("deliveries"), id: endpointId, limit: z.number().int().min(1).max(1000).optional() }),
  z.strictObject({ action: z.literal("list") }),
], { error: (i) => (i.code === "invalid_union" ? "must be one of create, update, get, list, delete, rotate, state, deliveries, pause, resume" : undefined) });

export type TopicsRequest = z.infer<typeof topicSchema>;
export type EndpointsRequest = z.infer<typeof endpointSchema>;

/** Whether a topics request only reads (scope `read` suffices) or changes something (scope `topics`). */
export const topicsReadOnly = (body: unknown): boolean => ["get", "list"].includes(String((body as { action?: unknown } | null)?.action));
/** Whether an endpoints request only reads. */
export const endpointsReadOnly = (body: unknown): boolean => ["get", "list", "state", "deliveries"].includes(String((body as { action?: unknown } | null)?.action));

const asObject = (body: unknown): unknown => {
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw new RequestInvalid("(body): must be a JSON object", { field: "(body)" });
  return body;
};

/**
 * Runs a topics request `{action, …}`: `put` (create, or change the description), `get`, `list`, `delete`,
 * `subscribe` / `unsubscribe` (`users` and/or `endpoints`, up to 10,000 ids each). Throws RequestInvalid naming the
 * field and rule (nothing changed), NotFound for a topic or endpoint that does not exist.
 */
export async function topicsOp(cfg: Config, redis: Redis, body: unknown): Promise<unknown> {
  const r = parseWith(topicSchema, asObject(body));
  const shards = cfg.cluster.shards;
  switch (r.action) {
    case "put":
      return putTopic(redis, r.name, r.description);
    case "get":
      return getTopic(redis, shards, r.name);
    case "list":
      return { topics: await listTopics(redis, shards) };
    case "delete":
      await deleteTopic(redis, shards, r.name);
      return { deleted: r.name };
    case "subscribe":
    case "unsubscribe": {
      const remove = r.action === "unsubscribe";
      // Every endpoint named must exist (checked before anything changes).
      for (const id of r.endpoints ?? []) await getEndpoint(redis, id).catch(() => {
        throw new RequestInvalid(`endpoints: no endpoint ${id}`, { field: "endpoints" });
      });
      await getTopic(redis, shards, r.name);
      const users = r.users ? await changeUserSubscriptions(redis, shards, r.name, r.users, remove) : 0;
      const endpoints = r.endpoints ? await changeEndpointSubscriptions(redis, r.name, r.endpoints, remove) : 0;
      return { topic: r.name, [remove ? "removed" : "added"]: { users, endpoints } };
    }
  }
}

/** An endpoint as answered: with its secrets (they are how the receiver verifies) and its topics. */
async function view(redis: Redis, ep: Endpoint): Promise<Endpoint & { topics: string[] }> {
  return { ...ep, topics: await endpointTopics(redis, ep.id) };
}

/**
 * Runs an endpoints request `{action, …}`: `create` (`url`, and optionally `description`, `types`, `rateLimit`,
 * `topics` to subscribe it to), `update`, `get`, `list` (without secrets), `delete`, `rotate` (a new secret; the
 * old ones sign on for `endpoints.secretOverlapSec`), `state` (pending, in flight, delivered, failed, attempts,
 * next attempt, last status, paused), `deliveries` (recent outcomes), `pause`, `resume`. Throws RequestInvalid,
 * EndpointRefused (URL refused by the SSRF rules), NotFound; nothing changes then.
 */
export async function endpointsOp(cfg: Config, redis: Redis, body: unknown): Promise<unknown> {
  const r = parseWith(endpointSchema, asObject(body));
  const policy = addressPolicy(cfg.endpoints.allowNetworks);
  const queues = new EndpointQueues(redis, cfg.endpoints);
  switch (r.action) {
    case "create": {
      for (const t of r.topics ?? []) await getTopic(redis, cfg.cluster.shards, t).catch(() => {
        throw new RequestInvalid(`topics: no topic ${t}`, { field: "topics" });
      });
      const { action: _a, topics, ...inp } = r;
      const ep = await createEndpoint(redis, policy, inp);
      for (const t of topics ?? []) await changeEndpointSubscriptions(redis, t, [ep.id]);
      return view(redis, ep);
    }
    case "update": {
      const { action: _a, id, ...inp } = r;
      return view(redis, await updateEndpoint(redis, policy, id, inp));
    }
    case "get":
      return view(redis, await getEndpoint(redis, r.id));
    case "list":
      return { endpoints: (await listEndpoints(redis)).map(withoutSecrets) };
    case "delete":
      await deleteEndpoint(redis, r.id);
      await queues.drop(r.id);
      return { deleted: r.id };
    case "rotate":
      return view(redis, await rotateSecret(redis, r.id, cfg.endpoints.secretOverlapSec));
    case "state":
      await getEndpoint(redis, r.id);
      return { id: r.id, ...(await queues.state(r.id)), queued: await queues.pending(r.id, 20) };
    case "deliveries":
      await getEndpoint(redis, r.id);
      return { id: r.id, deliveries: await queues.history(r.id, r.limit ?? 50) };
    case "pause":
      await getEndpoint(redis, r.id);
      await queues.pause(r.id, "paused by an operator", Date.now());
      return { id: r.id, ...(await queues.state(r.id)) };
    case "resume": {
      await getEndpoint(redis, r.id);
      const was = await queues.resume(r.id);
      return { id: r.id, resumed: was, ...(await queues.state(r.id)) };
    }
  }
}
