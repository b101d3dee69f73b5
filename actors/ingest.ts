// Ingest actor, NATS surface: API requests on nfx.api.* (trusted) and nfx.ext.api.* (API key and scopes), in a queue group, answered after the request is durable.
import { headers, type Msg, type Subscription } from "@nats-io/transport-node";

import type { Campaigns } from "../lib/campaign/campaigns.js";
import { encodeJson } from "../lib/core/codec.js";
import type { Config } from "../lib/core/config.js";
import { NotFound, toErrorReply } from "../lib/core/errors.js";
import { decodeBody } from "../lib/core/json-guard.js";
import type { Logger } from "../lib/core/log.js";
import { API, API_OPS, type ApiOp, extApiAll, extApiOp, isInboxReply, QUEUE_INGEST } from "../lib/core/subjects.js";
import type { Nats } from "../lib/infra/nats.js";
import type { Redis } from "../lib/infra/redis.js";
import { API_KEY_HEADER, ERROR_HEADER } from "../lib/intake/api-client.js";
import { ApiKeys, requireScope } from "../lib/intake/api-keys.js";
import { type Intake, NATS_PRODUCER, type Producer } from "../lib/intake/intake.js";
import { campaignOp, preferencesOp } from "../lib/intake/operations.js";
import { endpointsOp, endpointsReadOnly, topicsOp, topicsReadOnly } from "../lib/intake/topics-ops.js";
import { readDeliveryLog } from "../lib/tracking/delivery-log.js";
import { engagementFor, reportEvents } from "../lib/tracking/engagement.js";
import { readStatus } from "../lib/tracking/status.js";
import { userLogFor } from "../lib/tracking/user-log.js";

/** A request field as text, coerced as String() does (missing: ""): an id of the wrong type just finds nothing. */
// eslint-disable-next-line @typescript-eslint/no-base-to-string -- untyped wire field: an object coerces to "[object Object]" and finds nothing, as before
const fieldText = (v: unknown): string => String(v ?? "");

export interface IngestDeps {
  cfg: Config;
  nats: Nats;
  redis: Redis;
  intake: Intake;
  campaigns: Campaigns;
  log: Logger;
}

/** Messages the ingest actor handles, by the operation of the subject they came on, with the caller they came from. */
type IngestMsg =
  | { type: "notify"; msg: Msg; caller: Producer }
  | { type: "status"; msg: Msg; caller: Producer }
  | { type: "campaign"; msg: Msg; caller: Producer }
  | { type: "preferences"; msg: Msg; caller: Producer }
  | { type: "log"; msg: Msg; caller: Producer }
  | { type: "events"; msg: Msg; caller: Producer }
  | { type: "topics"; msg: Msg; caller: Producer }
  | { type: "endpoints"; msg: Msg; caller: Producer };

/**
 * Starts the NATS surface: queue-group subscribers on `nfx.api.notify`,
 * `nfx.api.status`, `nfx.api.campaign` (`{id, action}`) and
 * `nfx.api.preferences` (`{user, optedOut?, categories?}`), `nfx.api.log` (delivery log) and
 * `nfx.api.events` (app-reported engagement), `nfx.api.topics` and `nfx.api.endpoints` (`{action, …}`,
 * lib/intake/topics-ops.ts), and the same operations on `nfx.ext.api.<op>`.
 * Requests on `nfx.api.*` come only from nfx's own NATS users and are trusted as `admin`; requests on
 * `nfx.ext.api.*` must carry a configured API key in the `Nfx-Api-Key` header (else
 * NFX_ERR_UNAUTHENTICATED) holding the operation's scope (else NFX_ERR_SCOPE_MISSING), checked before
 * anything changes, exactly as over HTTP (docs/api.md, "API keys and scopes"). A notify reply `{id}` means
 * the notification is in JetStream; an error reply (header `Nfx-Error`, body `{error:{code,message,field}}`)
 * means nothing was stored or changed.
 */
export async function startIngest(d: IngestDeps): Promise<{ stop(): Promise<void> }> {
  const log = d.log.child({ actor: "ingest" });
  const max = d.cfg.ingest.maxBodyBytes;
  const depth = d.cfg.ingest.maxJsonDepth;
  const userLog = userLogFor(d.cfg, d.redis);
  const engagement = engagementFor(d.cfg, d.nats, d.redis);
  const keys = new ApiKeys(d.cfg.apiKeys);

  const reply = (m: Msg, body: unknown, err?: unknown): void => {
    if (!m.reply) return;
    // Defence in depth: answer only an inbox, never a subject such as $JS.API.… or $KV.… named as reply (docs/security.md).
    if (!isInboxReply(m.reply)) {
      log.warn({ subject: m.subject, reply: m.reply }, "request refused: reply subject is not an inbox");
      return;
    }
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
    const need = (scope: Parameters<typeof requireScope>[1], detail = ""): void =>
      requireScope(im.caller, scope, { field: API_KEY_HEADER, what: `${im.msg.subject}${detail}` });
    try {
      switch (im.type) {
        case "notify":
          // The exact scope (send or campaigns.create) depends on the target; the intake checks it after parsing.
          need(["send", "campaigns.create"]);
          reply(im.msg, { id: (await d.intake.accept(decodeBody(im.msg.data, max, depth), im.caller)).id });
          return;
        case "status": {
          need(["read"]);
          const { id } = (decodeBody(im.msg.data, max, depth) ?? {}) as { id?: unknown };
          reply(im.msg, await readStatus(d.nats, fieldText(id), d.campaigns));
          return;
        }
        case "campaign": {
          const { id, action } = (decodeBody(im.msg.data, max, depth) ?? {}) as { id?: unknown; action?: unknown };
          // `status` reads; every other action (pause, resume, cancel, or an unknown one) needs control.
          if (action === "status") need(["read"], " (status)");
          else need(["campaigns.control"], ` (${String(action)})`);
          reply(im.msg, await campaignOp(d.campaigns, fieldText(id), fieldText(action)));
          return;
        }
        case "preferences": {
          need(["users.write"]);
          const { user, ...patch } = (decodeBody(im.msg.data, max, depth) ?? {}) as { user?: unknown };
          reply(im.msg, await preferencesOp(d.cfg, d.redis, d.nats.nc, fieldText(user), patch, { via: im.caller.name === "nats" ? "nats" : "api_key", name: im.caller.name }));
          return;
        }
        case "log":
          need(["read"]);
          reply(im.msg, await readDeliveryLog(d.nats, userLog, decodeBody(im.msg.data, max, depth)));
          return;
        case "events":
          need(["events"]);
          reply(im.msg, await reportEvents(engagement, decodeBody(im.msg.data, max, depth)));
          return;
        case "topics": {
          const body = decodeBody(im.msg.data, max, depth);
          need(topicsReadOnly(body) ? ["topics", "read"] : ["topics"]);
          reply(im.msg, await topicsOp(d.cfg, d.redis, body));
          return;
        }
        case "endpoints": {
          const body = decodeBody(im.msg.data, max, depth);
          need(endpointsReadOnly(body) ? ["topics", "read"] : ["topics"]);
          reply(im.msg, await endpointsOp(d.cfg, d.redis, body));
          return;
        }
        default: {
          const never: never = im;
          throw new Error(`unhandled ${(never as IngestMsg).type}`);
        }
      }
    } catch (err) {
      reply(im.msg, undefined, err);
    }
  };

  /** A request on `nfx.ext.api.<op>`: the op from the subject, the caller from the API-key header, then the same handler. */
  const external = (msg: Msg): void => {
    try {
      const op = extApiOp(msg.subject) as ApiOp;
      if (!(API_OPS as readonly string[]).includes(op)) throw new NotFound(`${msg.subject}: no such operation (one of ${API_OPS.join(", ")})`, { field: "subject" });
      const caller = keys.authenticate(msg.headers?.get(API_KEY_HEADER), API_KEY_HEADER, `a valid API key in the ${API_KEY_HEADER} header`);
      void handle({ type: op, msg, caller });
    } catch (err) {
      reply(msg, undefined, err);
    }
  };

  const trusted = (type: ApiOp) => (_e: unknown, msg: Msg) => void handle({ type, msg, caller: NATS_PRODUCER });
  const subs: Subscription[] = [
    ...API_OPS.map((op) => d.nats.nc.subscribe(API[op], { queue: QUEUE_INGEST, callback: trusted(op) })),
    d.nats.nc.subscribe(extApiAll, { queue: QUEUE_INGEST, callback: (_e, msg) => external(msg) }),
  ];
  await d.nats.nc.flush();
  log.info({ subjects: [...API_OPS.map((op) => API[op]), extApiAll], keys: keys.size }, "ingest ready");
  return {
    async stop() {
      await Promise.all(subs.map((s) => s.drain()));
    },
  };
}
