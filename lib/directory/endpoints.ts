// Webhook endpoints, the subscribers that are systems: URL, signing secrets (rotated with an overlap), event-type filter, rate limit.
import { randomBytes } from "node:crypto";

import { NotFound } from "../core/errors.js";
import { ENDPOINTS_KEY, topicEndpointsKey, TOPICS_KEY } from "../core/keys.js";
import { type AddressPolicy, checkEndpointUrl } from "../infra/address-policy.js";
import { pipelineOf, type Redis } from "../infra/redis.js";

/** A signing secret, Standard Webhooks form (`whsec_` + base64 of 32 random bytes). `expiresAt`: set on a rotated-out secret. */
export interface EndpointSecret {
  secret: string;
  createdAt: number;
  expiresAt?: number;
}

export interface Endpoint {
  id: string;
  url: string;
  description?: string;
  /** Event types (a topic notification's `content.webhook.type`) this endpoint wants; absent: every type. */
  types?: string[];
  /** Deliveries per second at most (absent: no limit beyond one request at a time). */
  rateLimit?: number;
  /** nfx's own lifecycle events this endpoint subscribes to (its event stream), for every notification; absent: none. */
  events?: LifecycleEvent[];
  /** Newest first; deliveries are signed with every one not expired. */
  secrets: EndpointSecret[];
  createdAt: number;
  updatedAt: number;
}

/** What a caller gives to create or change an endpoint (validated by lib/intake/topics-ops.ts). */
export interface EndpointInput {
  url?: string;
  description?: string | null;
  types?: string[] | null;
  rateLimit?: number | null;
  events?: LifecycleEvent[] | null;
}

/** The lifecycle events an endpoint can subscribe to: `accepted` per notification, the others per recipient and device. */
export const LIFECYCLE_EVENTS = ["accepted", "sent", "delivered", "failed", "opened", "clicked", "shed"] as const;
export type LifecycleEvent = (typeof LIFECYCLE_EVENTS)[number];

const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz";
const newEndpointId = (): string => `ep_${[...randomBytes(16)].map((b) => ALPHABET[b & 31]).join("")}`;
/** A new signing secret. */
export const newSecret = (): string => `whsec_${randomBytes(32).toString("base64")}`;

/** The secrets a delivery made at `now` is signed with: every one not yet expired, newest first. */
export const activeSecrets = (ep: Endpoint, now: number): string[] => ep.secrets.filter((s) => s.expiresAt === undefined || s.expiresAt > now).map((s) => s.secret);

/** An endpoint without its secrets (lists). */
export const withoutSecrets = ({ secrets: _s, ...rest }: Endpoint): Omit<Endpoint, "secrets"> => rest;

function applyInput(ep: Endpoint, inp: EndpointInput): void {
  if (inp.url !== undefined) ep.url = inp.url;
  for (const k of ["description", "types", "rateLimit", "events"] as const) {
    const v = inp[k];
    if (v === null) delete ep[k];
    else if (v !== undefined) (ep as unknown as Record<string, unknown>)[k] = v;
  }
}

/**
 * Creates an endpoint after checking its URL against `policy` (throws EndpointRefused naming `url`). Returns it
 * with its first secret: the receiver verifies signatures with it.
 */
export async function createEndpoint(redis: Redis, policy: AddressPolicy, inp: EndpointInput & { url: string }, now = Date.now()): Promise<Endpoint> {
  await checkEndpointUrl(inp.url, policy);
  const ep: Endpoint = { id: newEndpointId(), url: inp.url, secrets: [{ secret: newSecret(), createdAt: now }], createdAt: now, updatedAt: now };
  applyInput(ep, inp);
  await redis.hset(ENDPOINTS_KEY, ep.id, JSON.stringify(ep));
  return ep;
}

/** Endpoint `id`, or null. */
export async function findEndpoint(redis: Redis, id: string): Promise<Endpoint | null> {
  const raw = await redis.hget(ENDPOINTS_KEY, id);
  return raw ? (JSON.parse(raw) as Endpoint) : null;
}

/** Endpoint `id`. Throws {@link NotFound} naming `id`. */
export async function getEndpoint(redis: Redis, id: string): Promise<Endpoint> {
  const ep = await findEndpoint(redis, id);
  if (!ep) throw new NotFound(`endpoint ${id} not found`, { field: "id" });
  return ep;
}

/** Every endpoint, by id. */
export async function listEndpoints(redis: Redis): Promise<Endpoint[]> {
  const all = await redis.hgetall(ENDPOINTS_KEY);
  return Object.keys(all).sort().map((id) => JSON.parse(all[id]) as Endpoint);
}

/** Changes endpoint `id` (a new URL is checked against `policy` first; `null` removes an optional field). Throws NotFound, EndpointRefused. */
export async function updateEndpoint(redis: Redis, policy: AddressPolicy, id: string, inp: EndpointInput, now = Date.now()): Promise<Endpoint> {
  const ep = await getEndpoint(redis, id);
  if (inp.url !== undefined) await checkEndpointUrl(inp.url, policy);
  applyInput(ep, inp);
  ep.updatedAt = now;
  await redis.hset(ENDPOINTS_KEY, id, JSON.stringify(ep));
  return ep;
}

/**
 * Rotates endpoint `id`'s secret: a new one signs from now on, the current ones keep signing for `overlapSec`
 * more (receivers accept any signature that verifies), expired ones are dropped. Returns the endpoint with the new secret first.
 */
export async function rotateSecret(redis: Redis, id: string, overlapSec: number, now = Date.now()): Promise<Endpoint> {
  const ep = await getEndpoint(redis, id);
  const kept = ep.secrets.filter((s) => s.expiresAt === undefined || s.expiresAt > now).map((s) => ({ ...s, expiresAt: Math.min(s.expiresAt ?? Infinity, now + overlapSec * 1000) }));
  ep.secrets = [{ secret: newSecret(), createdAt: now }, ...kept.filter((s) => s.expiresAt > now)];
  ep.updatedAt = now;
  await redis.hset(ENDPOINTS_KEY, id, JSON.stringify(ep));
  return ep;
}

/** Deletes endpoint `id` and its topic subscriptions. Throws {@link NotFound}. Its queued deliveries are dropped by the gateway when it next looks. */
export async function deleteEndpoint(redis: Redis, id: string): Promise<void> {
  if (!(await redis.hdel(ENDPOINTS_KEY, id))) throw new NotFound(`endpoint ${id} not found`, { field: "id" });
  const topics = await redis.hkeys(TOPICS_KEY);
  if (topics.length === 0) return;
  const p = pipelineOf(redis);
  for (const t of topics) p.srem(topicEndpointsKey(t), id);
  await p.exec();
}

/** The topics endpoint `id` is subscribed to. */
export async function endpointTopics(redis: Redis, id: string): Promise<string[]> {
  const topics = (await redis.hkeys(TOPICS_KEY)).sort();
  if (topics.length === 0) return [];
  const p = pipelineOf(redis);
  for (const t of topics) p.sismember(topicEndpointsKey(t), id);
  const res = (await p.exec()) ?? [];
  return topics.filter((_, i) => res[i]?.[1] === 1);
}
