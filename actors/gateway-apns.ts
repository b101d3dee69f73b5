// APNs gateway: delivers iOS sends through the real @parse/node-apn SDK over HTTP/2, one bulkhead per app.
import { readFileSync } from "node:fs";
import apn from "@parse/node-apn";
import type { Config } from "../lib/config.js";
import { ConfigInvalid, ProviderError } from "../lib/errors.js";
import { apnsNotification } from "../lib/apns-payload.js";
import { runGateway, type GatewayDeps, type ProviderClient, type SendResult } from "../lib/gateway-runner.js";
import { Semaphore } from "../lib/semaphore.js";
import type { NotificationBrief, Send } from "../lib/types.js";

export { apnsNotification };

/** APNs reasons that mean the token is gone for good (410 Unregistered, ExpiredToken): it is removed from the directory. */
const DEAD_TOKEN = new Set(["Unregistered", "ExpiredToken"]);

/**
 * Maps an SDK failure to a {@link ProviderError}: 429, 5xx and transport
 * errors are retryable; every 4xx is not; 410 Unregistered marks the token
 * dead (BadDeviceToken is not retried but kept: it can be a sandbox/production mix-up).
 */
export function apnsError(f: apn.ResponseFailure): ProviderError {
  const reason = f.response?.reason ?? (f.error ? `transport:${f.error.message}` : `status:${f.status ?? "none"}`);
  const status = f.status ?? 0;
  const retryable = status === 0 || status === 429 || status >= 500;
  return new ProviderError(`APNs rejected the send: ${reason}`, { reason, retryable, tokenInvalid: DEAD_TOKEN.has(reason), cause: f.error });
}

/** Creates the APNs provider client for the configured app. Throws {@link ConfigInvalid} if no signing key is configured. */
export function createApnsClient(cfg: Config): ProviderClient {
  const a = cfg.gateways.apns;
  if (!a.keyFile) throw new ConfigInvalid("gateways.apns.keyFile: required to run the APNs gateway", { field: "gateways.apns.keyFile" });
  const opts: apn.MultiProviderOptions & { peerMaxConcurrentStreams?: number } = {
    token: { key: readFileSync(a.keyFile), keyId: a.keyId, teamId: a.teamId },
    production: a.production,
    ...(a.address ? { address: a.address } : {}),
    ...(a.port ? { port: a.port } : {}),
    ...(a.caFile ? { ca: [readFileSync(a.caFile)] } : {}),
    // Retries are the gateway's (it honours Retry-After); the SDK's own ignore it.
    connectionRetryLimit: 1,
    requestTimeout: 10_000,
    clientCount: a.clientCount,
    peerMaxConcurrentStreams: 500,
  };
  const provider = a.clientCount > 1 ? new apn.MultiProvider(opts) : new apn.Provider(opts);
  const limit = new Semaphore(a.concurrency);
  return {
    channel: "apns",
    async sendGroup(n: NotificationBrief, sends: readonly Send[]): Promise<SendResult[]> {
      // One notification object for the inline content; one per recipient when a template rendered it.
      const shared = n.content?.push ? apnsNotification(n, n.content.push, a.topic) : null;
      return Promise.all(
        sends.map((s) =>
          limit.run(async (): Promise<SendResult> => {
            const note = s.push ? apnsNotification(n, s.push, a.topic) : shared;
            if (!note) return { ok: false, error: new ProviderError("no push content", { reason: "no_content", retryable: false }) };
            const r = await provider.send(note, s.token);
            const failed = r.failed[0];
            if (failed) return { ok: false, error: apnsError(failed) };
            const apnsId = (r.sent[0] as { "apns-id"?: string } | undefined)?.["apns-id"];
            return apnsId ? { ok: true, providerId: apnsId } : { ok: true };
          }),
        ),
      );
    },
    async close() {
      provider.shutdown();
    },
  };
}

/** Starts the APNs gateway role. */
export async function startGatewayApns(d: GatewayDeps): Promise<{ stop(): Promise<void> }> {
  return runGateway(d, createApnsClient(d.cfg));
}
