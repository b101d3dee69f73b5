// APNs gateway: delivers iOS sends through the real @parse/node-apn SDK over HTTP/2, one bulkhead per app (bundle id and key).
import { readFileSync } from "node:fs";
import type { ClientHttp2Session, IncomingHttpHeaders, OutgoingHttpHeaders } from "node:http2";

import apn from "@parse/node-apn";

import type { ApnsAppConfig } from "../config/schema.js";
import { apnsNotification } from "../lib/core/apns-payload.js";
import type { Config } from "../lib/core/config.js";
import { ConfigInvalid, ProviderError } from "../lib/core/errors.js";
import type { NotificationBrief, Send } from "../lib/core/types.js";
import { noContent, pushContent } from "../lib/gateway/channel-content.js";
import { parseRetryAfter } from "../lib/gateway/retry-policy.js";
import { type ChannelClient, type GatewayDeps, type ProviderApp, runGateway, type SendResult } from "../lib/gateway/runner.js";
import { withPlainAsyncBind } from "../lib/infra/plain-async-bind.js";

export { apnsNotification };

/** APNs reasons that mean the token is gone for good: it is removed from the directory and never retried. */
const DEAD_TOKEN = new Set(["Unregistered", "BadDeviceToken", "ExpiredToken"]);

/**
 * Maps an SDK failure to a {@link ProviderError}: 429, 5xx and transport
 * errors are retryable (after `retryAfterMs` when APNs sent Retry-After), and
 * so is 403 ExpiredProviderToken (the SDK has minted a new token by then);
 * every other 4xx is not; 410 Unregistered, BadDeviceToken and ExpiredToken
 * mark the token dead.
 */
export function apnsError(f: apn.ResponseFailure, retryAfterMs?: number): ProviderError {
  const status = Number(f.status) || 0;
  // The SDK words an expired provider token as an error whose message is APNs' reason, without the answer's body.
  const expired = status === 403 && f.error?.message === "ExpiredProviderToken";
  const reason = f.response?.reason ?? (expired ? "ExpiredProviderToken" : f.error ? `transport:${f.error.message}` : `status:${f.status ?? "none"}`);
  const retryable = status === 0 || status === 429 || status >= 500 || expired;
  return new ProviderError(`APNs rejected the send: ${reason}`, {
    reason, retryable, tokenInvalid: DEAD_TOKEN.has(reason), cause: f.error, ...(retryable && retryAfterMs !== undefined ? { retryAfterMs } : {}),
  });
}

type SdkClient = { request: (this: SdkClient, session: ClientHttp2Session, ...rest: unknown[]) => Promise<unknown>; clients?: SdkClient[] };

/**
 * Hooks every HTTP/2 stream the SDK opens. Keeps the Retry-After of APNs
 * answers per device token: the SDK reads `Retry-After` with a capital letter
 * (HTTP/2 lower-cases header names) and then deletes it before returning, so
 * the gateway listens on each stream instead (docs/providers.md, "APNs —
 * `@parse/node-apn` 8.x"). And opens each stream with {@link withPlainAsyncBind}:
 * Node 20's `session.request` binds a callback with `AsyncResource#bind`, whose
 * deprecation wrappers cost more than the rest of the request (docs/benchmarks.md,
 * "Node 20's HTTP/2 requests and a deprecation wrapper").
 */
function hookStreams(provider: apn.Provider | apn.MultiProvider, hints: Map<string, number>): void {
  const root = (provider as unknown as { client: SdkClient }).client;
  for (const c of root.clients ?? [root]) {
    const request = c.request;
    c.request = function (this: SdkClient, session: ClientHttp2Session, ...rest: unknown[]) {
      const s = session as ClientHttp2Session & { nfxHooked?: boolean };
      if (!s.nfxHooked) {
        const open = s.request.bind(s);
        s.request = ((headers: OutgoingHttpHeaders, opts?: object) => {
          const stream = withPlainAsyncBind(() => open(headers, opts));
          stream.on("response", (h: IncomingHttpHeaders) => {
            const ms = parseRetryAfter(h["retry-after"]);
            if (ms !== undefined) hints.set(String(headers[":path"] ?? "").slice("/3/device/".length), ms);
          });
          return stream;
        });
        s.nfxHooked = true;
      }
      return request.call(this, session, ...rest);
    };
  }
}

/** A notification as the SDK's client writes it: its APNs headers and JSON body (what `provider.send` builds once per call). */
type BuiltNote = { headers: Record<string, unknown>; body: string };
/** The SDK client's write of one token's stream: the answer's headers (and body), or a failure with `status` or `error` (resolved or thrown). */
type SdkWriter = { write(n: BuiltNote, token: string, type: "device", method: "post"): Promise<{ "apns-id"?: string; status?: number; error?: unknown }> };
const buildNote = (note: apn.Notification): BuiltNote => {
  // Both exist on the SDK's Notification (its provider.send calls them); its TypeScript types leave them out.
  const n = note as unknown as { headers(): Record<string, unknown>; compile(): string };
  return { headers: n.headers(), body: n.compile() };
};

/** The name an APNs app goes by: its `name`, else its topic. */
export const apnsAppName = (a: ApnsAppConfig): string => a.name ?? a.topic;

/** Creates one APNs app: an SDK provider with `clientCount` HTTP/2 sessions. Throws {@link ConfigInvalid} without a signing key. */
export function createApnsApp(a: ApnsAppConfig, field: string): ProviderApp {
  if (!a.keyFile) throw new ConfigInvalid(`${field}.keyFile: required to run the APNs gateway`, { field: `${field}.keyFile` });
  const opts: apn.MultiProviderOptions & { peerMaxConcurrentStreams?: number } = {
    token: { key: readFileSync(a.keyFile), keyId: a.keyId, teamId: a.teamId },
    production: a.production,
    ...(a.address ? { address: a.address } : {}),
    ...(a.port ? { port: a.port } : {}),
    ...(a.caFile ? { ca: [readFileSync(a.caFile)] } : {}),
    // Retries are the gateway's (it honours Retry-After and backs off); the SDK's own would resend at once.
    connectionRetryLimit: 0,
    requestTimeout: 10_000,
    clientCount: a.clientCount,
    peerMaxConcurrentStreams: 500,
  };
  const provider = a.clientCount > 1 ? new apn.MultiProvider(opts) : new apn.Provider(opts);
  const hints = new Map<string, number>();
  hookStreams(provider, hints);
  // One compiled notification per batch's notification for inline content; one per recipient when a template rendered it.
  const shared = new WeakMap<NotificationBrief, apn.Notification>();
  // The SDK's client writes one token's stream; `provider.send(note, tokens)` is this per token, answering only once
  // every token has (docs/providers.md, "APNs — `@parse/node-apn` 8.x"). Called directly, each token answers as it comes.
  const client = (provider as unknown as { client: SdkWriter }).client;
  if (typeof client?.write !== "function") throw new Error("@parse/node-apn has no provider.client.write: the APNs gateway needs the version package.json pins (docs/providers.md)");
  /** One token's call with a notification built for the SDK: its result, never throws. */
  const sendOne = async (built: BuiltNote, token: string): Promise<SendResult> => {
    let failed: apn.ResponseFailure;
    try {
      const x = await client.write(built, token, "device", "post");
      if (x.status === undefined && x.error === undefined) return x["apns-id"] ? { ok: true, providerId: x["apns-id"] } : { ok: true };
      failed = x as apn.ResponseFailure;
    } catch (err) {
      failed = err as apn.ResponseFailure;
    }
    const ra = hints.get(token);
    hints.delete(token);
    return { ok: false, error: apnsError(failed, ra) };
  };
  return {
    name: apnsAppName(a),
    perRequest: a.groupSize,
    callPerSend: true,
    /**
     * The sends of `n`, one HTTP/2 stream each, all at once; the notification is built for the SDK once for the
     * sends with its own content, once per send with content rendered for its recipient. Each answer is passed to
     * `answered` as it arrives.
     */
    async request(n: NotificationBrief, sends: readonly Send[], answered?: (j: number, r: SendResult) => void): Promise<SendResult[]> {
      const out = new Array<SendResult>(sends.length);
      let common: BuiltNote | null | undefined;
      const calls = sends.map(async (s, j) => {
        let built: BuiltNote | null;
        if (s.push) built = buildNote(apnsNotification(n, s.push, a.topic));
        else {
          if (common === undefined) {
            let note = shared.get(n);
            const push = note ? null : pushContent(n, s);
            if (!note && push) shared.set(n, (note = apnsNotification(n, push, a.topic)));
            common = note ? buildNote(note) : null;
          }
          built = common;
        }
        const r = built ? await sendOne(built, s.token) : noContent("push");
        out[j] = r;
        answered?.(j, r);
      });
      await Promise.all(calls);
      return out;
    },
    close() {
      // Not awaited, as before: node-apn's shutdown resolves once its sessions drain, and close does not wait for that.
      void provider.shutdown();
      return Promise.resolve();
    },
  };
}

/** The APNs channel: every configured app; a send goes to the app whose topic or name is its device's app, else the first. */
export function createApnsClient(cfg: Config): ChannelClient {
  const apps = cfg.gateways.apns.apps.map((a, i) => ({ app: createApnsApp(a, `gateways.apns.apps.${i}`), cfg: a }));
  const byApp = new Map<string, string>();
  cfg.gateways.apns.apps.forEach((a) => {
    byApp.set(a.topic, apnsAppName(a));
    byApp.set(apnsAppName(a), apnsAppName(a));
  });
  const first = apps[0].app.name;
  return { channel: "apns", apps, route: (s) => (s.app && byApp.get(s.app)) || first };
}

/** Starts the APNs gateway role. */
export async function startGatewayApns(d: GatewayDeps): ReturnType<typeof runGateway> {
  return runGateway(d, () => createApnsClient(d.cfg));
}
