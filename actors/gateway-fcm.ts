// FCM gateway: delivers Android sends through the real firebase-admin SDK (HTTP/1.1 keep-alive pool), one bulkhead per project.
import { readFileSync } from "node:fs";
import https from "node:https";
import tls from "node:tls";
import type { Duplex } from "node:stream";
import { cert, deleteApp, initializeApp, type Credential } from "firebase-admin/app";
import { getMessaging, type Message, type SendResponse } from "firebase-admin/messaging";
import type { Config } from "../lib/config.js";
import { ProviderError } from "../lib/errors.js";
import { runGateway, type GatewayDeps, type ProviderClient, type SendResult } from "../lib/gateway-runner.js";
import type { NotificationBrief, PushContent, Send } from "../lib/types.js";

/** firebase-admin codes that are worth retrying later. */
const RETRYABLE = new Set([
  "messaging/server-unavailable", "messaging/internal-error", "messaging/message-rate-exceeded",
  "messaging/quota-exceeded", "messaging/unknown-error", "app/network-error", "app/network-timeout",
]);
/** Codes meaning the token is gone for good (404 UNREGISTERED): it is removed from the directory. */
const DEAD_TOKEN = new Set(["messaging/registration-token-not-registered"]);

/** Maps a firebase-admin error to a {@link ProviderError} keeping the SDK's code as the reason. */
export function fcmError(err: unknown): ProviderError {
  const code = (err as { code?: string })?.code ?? "messaging/unknown-error";
  return new ProviderError(`FCM rejected the send: ${code}`, { reason: code, retryable: RETRYABLE.has(code), tokenInvalid: DEAD_TOKEN.has(code), cause: err });
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
 * sandbox (PROVIDERS.md). Keep-alive with `maxSockets` is the pool.
 */
class RedirectAgent extends https.Agent {
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
}

let appSeq = 0;

/** Creates the FCM provider client for the configured project. */
export function createFcmClient(cfg: Config, now: () => number = Date.now): ProviderClient {
  const f = cfg.gateways.fcm;
  const credential: Credential = f.serviceAccountFile
    ? cert(JSON.parse(readFileSync(f.serviceAccountFile, "utf8")))
    : { getAccessToken: async () => ({ access_token: f.sandboxToken, expires_in: 3600 }) };
  const agent = new RedirectAgent({ host: f.host, port: f.port, ca: f.caFile ? readFileSync(f.caFile) : undefined }, f.sockets);
  const app = initializeApp({ projectId: f.projectId, credential, httpAgent: agent }, `nfx-fcm-${process.pid}-${appSeq++}`);
  const messaging = getMessaging(app);
  messaging.enableLegacyHttpTransport();
  return {
    channel: "fcm",
    async sendGroup(n: NotificationBrief, sends: readonly Send[]): Promise<SendResult[]> {
      const out: SendResult[] = [];
      for (let i = 0; i < sends.length; i += 500) {
        const slice = sends.slice(i, i + 500);
        const t = now();
        let responses: SendResponse[];
        try {
          responses = (await messaging.sendEach(slice.map((s) => fcmMessage(n, s.push ?? n.content!.push!, s.token, t)))).responses;
        } catch (err) {
          const error = fcmError(err);
          for (let j = 0; j < slice.length; j++) out.push({ ok: false, error });
          continue;
        }
        for (const r of responses) out.push(r.success ? { ok: true, providerId: r.messageId } : { ok: false, error: fcmError(r.error) });
      }
      return out;
    },
    async close() {
      await deleteApp(app);
      agent.destroy();
    },
  };
}

/** Starts the FCM gateway role. */
export async function startGatewayFcm(d: GatewayDeps): Promise<{ stop(): Promise<void> }> {
  return runGateway(d, createFcmClient(d.cfg, d.now));
}
