// SMS gateway: delivers SMS sends through the real twilio SDK, one message per request, one bulkhead per account.
import http from "node:http";

import twilio from "twilio";

import type { TwilioAccountConfig } from "../config/schema.js";
import { smsStops } from "../lib/consent/sms-keywords.js";
import type { Config } from "../lib/core/config.js";
import { ProviderError } from "../lib/core/errors.js";
import type { NotificationBrief, Send } from "../lib/core/types.js";
import { noContent, smsContent } from "../lib/gateway/channel-content.js";
import { RetryAfterHint } from "../lib/gateway/retry-policy.js";
import { type ChannelClient, type GatewayDeps, primaryWithFailovers, type ProviderApp, runGateway, type SendResult } from "../lib/gateway/runner.js";
import type { Redis } from "../lib/infra/redis.js";

/** Twilio's longest message body. */
export const SMS_MAX_CHARS = 1600;

/**
 * Twilio's HTTP client, pointed at `baseUrl` (a sandbox) when set, with a
 * keep-alive pool and the SDK's own retries off. It keeps the Retry-After of
 * the latest error answer: the SDK's RestException drops headers.
 */
class NfxRequestClient extends twilio.RequestClient {
  readonly hint = new RetryAfterHint();
  constructor(private readonly baseUrl: string | undefined, sockets: number) {
    super({ keepAlive: true, maxSockets: sockets, maxFreeSockets: sockets, autoRetry: false, timeout: 10_000 });
    this.axios.defaults.httpAgent = new http.Agent({ keepAlive: true, maxSockets: sockets, maxFreeSockets: sockets });
  }
  override async request<T>(opts: Parameters<twilio.RequestClient["request"]>[0]): Promise<Awaited<ReturnType<twilio.RequestClient["request"]>> & { body: T }> {
    const uri = this.baseUrl ? opts.uri.replace(/^https:\/\/api\.twilio\.com/, this.baseUrl.replace(/\/$/, "")) : opts.uri;
    const res = await super.request({ ...opts, uri });
    if (res.statusCode >= 400) this.hint.note((res.headers as Record<string, string>)["retry-after"]);
    return res as never;
  }
  destroy(): void {
    (this.axios.defaults.httpAgent as http.Agent | undefined)?.destroy();
  }
}

/**
 * Maps a twilio failure to a {@link ProviderError}: 429 (Twilio's 20429 is
 * never processed, so safe to retry), 5xx and transport errors are retryable;
 * other 4xx (21211 invalid number, 21610 unsubscribed, ...) are not. The
 * reason is Twilio's error code and message.
 */
export function twilioError(err: unknown, retryAfterMs?: number): ProviderError {
  const e = err as { status?: number; code?: number | string; message?: string };
  const status = Number(e.status);
  if (!Number.isInteger(status) || status < 100) {
    return new ProviderError(`Twilio request failed: ${e.message ?? String(err)}`, { reason: `transport:${e.code ?? e.message ?? "error"}`, retryable: true, cause: err });
  }
  const reason = `${e.code ?? status} ${e.message ?? ""}`.trim();
  const retryable = status === 429 || status >= 500;
  return new ProviderError(`Twilio rejected the message: ${reason}`, { reason, retryable, cause: err, ...(retryable && retryAfterMs !== undefined ? { retryAfterMs } : {}) });
}

/**
 * The status callback URL of one SMS: nfx's Twilio webhook with the account,
 * notification, user and device in the query (Twilio signs the whole URL, so
 * they cannot be altered).
 */
export function statusCallbackUrl(baseUrl: string, account: string, n: NotificationBrief, s: Send): string {
  const q = new URLSearchParams({ nfx_account: account, nfx_id: n.id, nfx_user: s.user, nfx_device: s.device });
  return `${baseUrl}/v1/webhooks/twilio?${q}`;
}

/** Creates one Twilio account: its own SDK client and keep-alive pool. With `callbackBase`, each message asks for status callbacks there. */
export function createTwilioApp(a: TwilioAccountConfig, callbackBase?: string, stopped?: (number: string) => Promise<boolean>): ProviderApp {
  const httpClient = new NfxRequestClient(a.baseUrl, a.sockets);
  const client = twilio(a.accountSid, a.authToken, { httpClient });
  const sender = a.from.startsWith("MG") ? { messagingServiceSid: a.from } : { from: a.from };
  return {
    name: a.name,
    perRequest: 1,
    async request(n: NotificationBrief, sends: readonly Send[]): Promise<SendResult[]> {
      const s = sends[0];
      const c = smsContent(n, s);
      if (!c) return [noContent("sms")];
      // A number that replied STOP after this send was decided: never sent to again.
      if (stopped && (await stopped(s.token))) return [{ ok: false, error: new ProviderError("the number replied STOP", { reason: "sms_opted_out", retryable: false }) }];
      try {
        const cb = callbackBase ? { statusCallback: statusCallbackUrl(callbackBase, a.name, n, s) } : {};
        const m = await client.messages.create({ to: s.token, body: c.text.slice(0, SMS_MAX_CHARS), ...sender, ...cb });
        return [{ ok: true, providerId: m.sid }];
      } catch (err) {
        return [{ ok: false, error: twilioError(err, httpClient.hint.get()) }];
      }
    },
    close() {
      httpClient.destroy();
      return Promise.resolve();
    },
  };
}

/** The SMS channel: the first account sends; the others take over only as configured failovers. With `redis`, numbers that replied STOP are skipped. */
export const createSmsClient = (cfg: Config, redis?: Redis): ChannelClient =>
  primaryWithFailovers("sms", cfg.gateways.sms.apps, (a) => createTwilioApp(a, cfg.engagement.baseUrl, redis ? async (nr) => (await smsStops(redis, [nr]))[0] !== null : undefined));

/** Starts the SMS gateway role. */
export async function startGatewaySms(d: GatewayDeps): ReturnType<typeof runGateway> {
  return runGateway(d, () => createSmsClient(d.cfg, d.redis));
}
