// Ingest actor: validates notify requests on NATS, stores them durably on NFX_INTAKE, answers with the id.
import { headers, type Msg, type Subscription } from "@nats-io/transport-node";
import { ERROR_HEADER } from "../lib/api-client.js";
import type { Config } from "../lib/config.js";
import { encode, decodeJson, encodeJson } from "../lib/codec.js";
import { RequestUndecodable, StoreUnavailable, toErrorReply } from "../lib/errors.js";
import { newNotificationId } from "../lib/ids.js";
import type { Logger } from "../lib/log.js";
import type { Nats } from "../lib/nats.js";
import { parseNotifyRequest } from "../lib/notify-schema.js";
import { readStatus } from "../lib/status.js";
import { API, MSGID, QUEUE_INGEST, intakeSubject } from "../lib/subjects.js";
import type { Notification } from "../lib/types.js";


export interface IngestDeps {
  cfg: Config;
  nats: Nats;
  log: Logger;
  now?: () => number;
}

/** Messages the ingest actor handles, by the subject they came on. */
type IngestMsg = { type: "notify"; msg: Msg } | { type: "status"; msg: Msg };

/**
 * Starts the ingest actor: queue-group subscribers on the API subjects.
 * A notify reply `{id}` means the notification is in JetStream; an error reply
 * (header `Nfx-Error`) means nothing was stored.
 */
export async function startIngest(d: IngestDeps): Promise<{ stop(): Promise<void> }> {
  const log = d.log.child({ actor: "ingest" });
  const now = d.now ?? Date.now;

  const reply = (m: Msg, body: unknown, err?: unknown): void => {
    if (!m.reply) return;
    if (err === undefined) {
      m.respond(encodeJson(body));
      return;
    }
    const e = toErrorReply(err);
    const h = headers();
    h.set(ERROR_HEADER, e.code);
    m.respond(encodeJson({ error: e }), { headers: h });
  };

  const notify = async (m: Msg): Promise<{ id: string }> => {
    let body: unknown;
    try {
      body = decodeJson(m.data);
    } catch (cause) {
      throw new RequestUndecodable("body: must be a JSON object", { field: "(body)", cause });
    }
    const req = parseNotifyRequest(body);
    const t = now();
    const n: Notification = {
      type: "notification",
      id: newNotificationId(t),
      createdAt: t,
      expiresAt: t + req.ttlSec * 1000,
      priority: req.priority,
      category: req.category,
      recipients: [...new Set(req.recipients)],
      push: req.push,
      ...(req.collapseKey ? { collapseKey: req.collapseKey } : {}),
    };
    try {
      await d.nats.js.publish(intakeSubject(n.priority, n.id), encode(n), { msgID: MSGID.intake(n.id) });
    } catch (cause) {
      throw new StoreUnavailable("intake stream unavailable; nothing was stored, retry", { cause });
    }
    return { id: n.id };
  };

  const handle = async (im: IngestMsg): Promise<void> => {
    try {
      switch (im.type) {
        case "notify":
          reply(im.msg, await notify(im.msg));
          return;
        case "status": {
          const { id } = decodeJson<{ id?: unknown }>(im.msg.data);
          reply(im.msg, await readStatus(d.nats, String(id ?? "")));
          return;
        }
        default: {
          const never: never = im;
          throw new Error(`unhandled ${(never as IngestMsg).type}`);
        }
      }
    } catch (err) {
      if (!(err as { code?: string }).code) log.error({ err }, "ingest failed");
      reply(im.msg, undefined, err);
    }
  };

  const subs: Subscription[] = [
    d.nats.nc.subscribe(API.notify, { queue: QUEUE_INGEST, callback: (_e, msg) => void handle({ type: "notify", msg }) }),
    d.nats.nc.subscribe(API.status, { queue: QUEUE_INGEST, callback: (_e, msg) => void handle({ type: "status", msg }) }),
  ];
  await d.nats.nc.flush();
  log.info({ subjects: [API.notify, API.status] }, "ingest ready");
  return {
    async stop() {
      await Promise.all(subs.map((s) => s.drain()));
    },
  };
}
