// Ingest actor, NATS surface: notify and status requests on nfx.api.* (queue group), answered after the request is durable.
import { readDeliveryLog } from "../lib/delivery-log.js";
import { engagementFor, reportEvents } from "../lib/engagement.js";
import { userLogFor } from "../lib/user-log.js";
import { headers, type Msg, type Subscription } from "@nats-io/transport-node";
import { ERROR_HEADER } from "../lib/api-client.js";
import type { Config } from "../lib/config.js";
import { decodeJson, encodeJson } from "../lib/codec.js";
import { BodyTooLarge, RequestInvalid, RequestUndecodable, toErrorReply } from "../lib/errors.js";
import { jsonDepthOver, protoKeyPath } from "../lib/json-guard.js";
import { PROTOTYPE_NAME_RULE } from "../lib/own-keys.js";
import { NATS_PRODUCER, type Intake } from "../lib/intake.js";
import type { Logger } from "../lib/log.js";
import type { Nats } from "../lib/nats.js";
import { readStatus } from "../lib/status.js";
import type { Campaigns } from "../lib/campaigns.js";
import { campaignOp, preferencesOp } from "../lib/operations.js";
import type { Redis } from "../lib/redis.js";
import { API, QUEUE_INGEST } from "../lib/subjects.js";

export interface IngestDeps {
  cfg: Config;
  nats: Nats;
  redis: Redis;
  intake: Intake;
  campaigns: Campaigns;
  log: Logger;
}

/** Messages the ingest actor handles, by the subject they came on. */
type IngestMsg =
  | { type: "notify"; msg: Msg }
  | { type: "status"; msg: Msg }
  | { type: "campaign"; msg: Msg }
  | { type: "preferences"; msg: Msg }
  | { type: "log"; msg: Msg }
  | { type: "events"; msg: Msg };

/**
 * Decodes a JSON request body of at most `max` bytes nested at most
 * `maxDepth` arrays/objects deep (`ingest.maxJsonDepth`, checked without
 * recursion before parsing). Throws {@link BodyTooLarge},
 * {@link RequestInvalid} naming `(body)` for a body nested too deep (or the
 * path of a `__proto__` key anywhere in it), or
 * {@link RequestUndecodable}; shared with the HTTP surface.
 */
export function decodeBody(data: Uint8Array, max: number, maxDepth: number): unknown {
  if (data.length > max) throw new BodyTooLarge(`(body): ${data.length} bytes is over the ${max}-byte limit`, { field: "(body)" });
  if (jsonDepthOver(data, maxDepth) !== null) {
    throw new RequestInvalid(`(body): JSON must nest at most ${maxDepth} arrays/objects deep (ingest.maxJsonDepth)`, { field: "(body)" });
  }
  let body: unknown;
  try {
    body = decodeJson(data);
  } catch (cause) {
    throw new RequestUndecodable("(body): must be valid JSON", { field: "(body)", cause });
  }
  const proto = protoKeyPath(body);
  if (proto !== null) throw new RequestInvalid(`${proto}: ${PROTOTYPE_NAME_RULE}`, { field: proto });
  return body;
}

/**
 * Starts the NATS surface: queue-group subscribers on `nfx.api.notify`,
 * `nfx.api.status`, `nfx.api.campaign` (`{id, action}`) and
 * `nfx.api.preferences` (`{user, optedOut?, categories?}`), `nfx.api.log` (delivery log) and
 * `nfx.api.events` (app-reported engagement). A notify reply `{id}` means the notification is in
 * JetStream; an error reply (header `Nfx-Error`, body `{error:{code,message,field}}`)
 * means nothing was stored.
 */
export async function startIngest(d: IngestDeps): Promise<{ stop(): Promise<void> }> {
  const log = d.log.child({ actor: "ingest" });
  const max = d.cfg.ingest.maxBodyBytes;
  const depth = d.cfg.ingest.maxJsonDepth;
  const userLog = userLogFor(d.cfg, d.redis);
  const engagement = engagementFor(d.cfg, d.nats, d.redis);

  const reply = (m: Msg, body: unknown, err?: unknown): void => {
    if (!m.reply) return;
    if (err === undefined) {
      m.respond(encodeJson(body));
      return;
    }
    const e = toErrorReply(err);
    if (e.code === "NFX_ERR_INTERNAL") log.error({ err }, "request failed");
    const h = headers();
    h.set(ERROR_HEADER, e.code);
    m.respond(encodeJson({ error: e }), { headers: h });
  };

  const handle = async (im: IngestMsg): Promise<void> => {
    try {
      switch (im.type) {
        case "notify":
          reply(im.msg, { id: (await d.intake.accept(decodeBody(im.msg.data, max, depth), NATS_PRODUCER)).id });
          return;
        case "status": {
          const { id } = (decodeBody(im.msg.data, max, depth) ?? {}) as { id?: unknown };
          reply(im.msg, await readStatus(d.nats, String(id ?? ""), d.campaigns));
          return;
        }
        case "campaign": {
          const { id, action } = (decodeBody(im.msg.data, max, depth) ?? {}) as { id?: unknown; action?: unknown };
          reply(im.msg, await campaignOp(d.campaigns, String(id ?? ""), String(action ?? "")));
          return;
        }
        case "preferences": {
          const { user, ...patch } = (decodeBody(im.msg.data, max, depth) ?? {}) as { user?: unknown };
          reply(im.msg, await preferencesOp(d.cfg, d.redis, d.nats.nc, String(user ?? ""), patch));
          return;
        }
        case "log":
          reply(im.msg, await readDeliveryLog(d.nats, userLog, decodeBody(im.msg.data, max, depth)));
          return;
        case "events":
          reply(im.msg, await reportEvents(engagement, decodeBody(im.msg.data, max, depth)));
          return;
        default: {
          const never: never = im;
          throw new Error(`unhandled ${(never as IngestMsg).type}`);
        }
      }
    } catch (err) {
      reply(im.msg, undefined, err);
    }
  };

  const subs: Subscription[] = [
    d.nats.nc.subscribe(API.notify, { queue: QUEUE_INGEST, callback: (_e, msg) => void handle({ type: "notify", msg }) }),
    d.nats.nc.subscribe(API.status, { queue: QUEUE_INGEST, callback: (_e, msg) => void handle({ type: "status", msg }) }),
    d.nats.nc.subscribe(API.campaign, { queue: QUEUE_INGEST, callback: (_e, msg) => void handle({ type: "campaign", msg }) }),
    d.nats.nc.subscribe(API.log, { queue: QUEUE_INGEST, callback: (_e, msg) => void handle({ type: "log", msg }) }),
    d.nats.nc.subscribe(API.events, { queue: QUEUE_INGEST, callback: (_e, msg) => void handle({ type: "events", msg }) }),
    d.nats.nc.subscribe(API.preferences, { queue: QUEUE_INGEST, callback: (_e, msg) => void handle({ type: "preferences", msg }) }),
  ];
  await d.nats.nc.flush();
  log.info({ subjects: [API.notify, API.status, API.campaign, API.preferences] }, "ingest ready");
  return {
    async stop() {
      await Promise.all(subs.map((s) => s.drain()));
    },
  };
}
