// FCM gateway: delivers Android sends through the real firebase-admin SDK (HTTP/1.1 keep-alive pool), one bulkhead per project.
import { readFileSync } from "node:fs";
import type http from "node:http";
import https from "node:https";
import type { Duplex } from "node:stream";
import tls from "node:tls";

import { cert, type Credential, deleteApp, initializeApp, type ServiceAccount } from "firebase-admin/app";
import { getMessaging, type Message } from "firebase-admin/messaging";

import type { FcmAppConfig } from "../config/schema.js";
import type { Config } from "../lib/core/config.js";
import { ProviderError } from "../lib/core/errors.js";
import type { NotificationBrief, PushContent, Send } from "../lib/core/types.js";
import { noContent, pushContent } from "../lib/gateway/channel-content.js";
import { RetryAfterHint } from "../lib/gateway/retry-policy.js";
import { type ChannelClient, type GatewayDeps, type ProviderApp, runGateway, type SendResult } from "../lib/gateway/runner.js";

/** firebase-admin codes that are worth retrying later. */
const RETRYABLE = new Set([
  "messaging/server-unavailable", "messaging/internal-error", "messaging/message-rate-exceeded",
  "messaging/quota-exceeded", "messaging/unknown-error", "app/network-error", "app/network-timeout",
]);
/** Codes meaning the token is gone for good (404 UNREGISTERED, and a malformed token): it is removed from the directory and never retried. */
const DEAD_TOKEN = new Set(["messaging/registration-token-not-registered", "messaging/invalid-registration-token"]);
/** FCM's QUOTA_EXCEEDED (the SDK's message-rate-exceeded): Google asks for at least a minute of backoff. */
const QUOTA = "messaging/message-rate-exceeded";

/** Maps a firebase-admin error to a {@link ProviderError} keeping the SDK's code as the reason; `retryAfterMs` is FCM's Retry-After if it sent one. */
export function fcmError(err: unknown, retryAfterMs?: number): ProviderError {
  const code = (err as { code?: string })?.code ?? "messaging/unknown-error";
  const retryable = RETRYABLE.has(code);
  return new ProviderError(`FCM rejected the send: ${code}`, {
    reason: code, retryable, tokenInvalid: DEAD_TOKEN.has(code), quota: code === QUOTA, cause: err,
    ...(retryable && retryAfterMs !== undefined ? { retryAfterMs } : {}),
  });
}

/** Builds the FCM v1 message for one device: notification, data, android TTL/collapse key/priority, APNs-via-FCM headers. */
export function fcmMessage(n: NotificationBrief, push: PushContent, token: string, now: number): Message {
  const ttlMs = Math.max(0, n.expiresAt - now);
  const urgent = n.priority === "critical" || n.priority === "high";
  return {
    token,
    notification: { title: push.title, body: push.body },
    data: { ...(push.data ?? {}), nfx_id: n.id },
    android: {
      ttl: ttlMs,
      priority: urgent ? "high" : "normal",
      ...(n.collapseKey ? { collapseKey: n.collapseKey } : {}),
      ...(push.sound ? { notification: { sound: push.sound } } : {}),
    },
  };
}

/**
 * An https.Agent that dials a configured host:port instead of
 * fcm.googleapis.com, keeping the TLS name, so the SDK's fixed URL reaches a
 * sandbox (docs/providers.md, "FCM — `firebase-admin` 13.x"). Keep-alive with `maxSockets` is the pool. It also
 * notes the latest Retry-After FCM answered with: the SDK drops response
 * headers from its errors, and FCM's Retry-After is the project's back-off.
 */
class RedirectAgent extends https.Agent {
  readonly hint = new RetryAfterHint();
  constructor(private readonly to: { host?: string; port?: number; ca?: Buffer }, sockets: number) {
    super({ keepAlive: true, maxSockets: sockets, maxFreeSockets: sockets });
  }
  override createConnection(options: tls.ConnectionOptions): Duplex {
    return tls.connect({
      ...options,
      host: this.to.host ?? options.host,
      port: this.to.port ?? options.port,
      ...(this.to.ca ? { ca: this.to.ca } : {}),
    });
  }
  /** Node calls this for every request through the agent (undocumented but stable; agentkeepalive relies on it too). */
  addRequest(req: http.ClientRequest, options: unknown): void {
    req.once("response", (res: http.IncomingMessage) => this.hint.note(res.headers["retry-after"]));
    (https.Agent.prototype as unknown as { addRequest(r: unknown, o: unknown): void }).addRequest.call(this, req, options);
  }
}

let appSeq = 0;

/** The name an FCM app goes by: its `name`, else its project id. */
export const fcmAppName = (f: FcmAppConfig): string => f.name ?? f.projectId;

/** Creates one FCM app (a Firebase project) with its own keep-alive socket pool. */
export function createFcmApp(f: FcmAppConfig, now: () => number = Date.now): ProviderApp {
  const credential: Credential = f.serviceAccountFile
    ? cert(JSON.parse(readFileSync(f.serviceAccountFile, "utf8")) as ServiceAccount)
    : { getAccessToken: () => Promise.resolve({ access_token: f.sandboxToken, expires_in: 3600 }) };
  const agent = new RedirectAgent({ host: f.host, port: f.port, ca: f.caFile ? readFileSync(f.caFile) : undefined }, f.sockets);
  const app = initializeApp({ projectId: f.projectId, credential, httpAgent: agent }, `nfx-fcm-${process.pid}-${appSeq++}`);
  const messaging = getMessaging(app);
  messaging.enableLegacyHttpTransport();
  return {
    name: fcmAppName(f),
    perRequest: f.groupSize,
    callPerSend: true,
    /**
     * The sends of `n`, one `send` call each, all at once (the SDK's `sendEach` spends more per message: it
     * deep-copies the list and answers only once every message has). Each answer is passed to `answered` as it
     * arrives; a send without push content fails without a call.
     */
    async request(n: NotificationBrief, sends: readonly Send[], answered?: (j: number, r: SendResult) => void): Promise<SendResult[]> {
      return Promise.all(
        sends.map(async (s, j): Promise<SendResult> => {
          const push = pushContent(n, s);
          let r: SendResult;
          if (!push) r = noContent("push");
          else {
            try {
              r = { ok: true, providerId: await messaging.send(fcmMessage(n, push, s.token, now())) };
            } catch (err) {
              r = { ok: false, error: fcmError(err, agent.hint.get()) };
            }
          }
          answered?.(j, r);
          return r;
        }),
      );
    },
    async close() {
      await deleteApp(app);
      agent.destroy();
    },
  };
}

/** The FCM channel: every configured project; a send goes to the project whose id, name or package list has its device's app, else the first. */
export function createFcmClient(cfg: Config, now: () => number = Date.now): ChannelClient {
  const apps = cfg.gateways.fcm.apps.map((f) => ({ app: createFcmApp(f, now), cfg: f }));
  const byApp = new Map<string, string>();
  for (const f of cfg.gateways.fcm.apps) for (const k of [f.projectId, fcmAppName(f), ...f.packages]) byApp.set(k, fcmAppName(f));
  const first = apps[0].app.name;
  return { channel: "fcm", apps, route: (s) => (s.app && byApp.get(s.app)) || first };
}

/** Starts the FCM gateway role. */
export async function startGatewayFcm(d: GatewayDeps): ReturnType<typeof runGateway> {
  return runGateway(d, () => createFcmClient(d.cfg, d.now));
}
