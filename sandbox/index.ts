// Starts the four sandbox providers together with a small HTTP control API that reports what they received.
import { generateKeyPairSync } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";

import { ZodError } from "zod";

import type { Config } from "../lib/core/config.js";
import { formatIssues } from "../lib/core/zod-issues.js";
import { startApnsSandbox } from "./apns.js";
import { SANDBOX_PROVIDERS, type SandboxProvider } from "./faults.js";
import { startFcmSandbox } from "./fcm.js";
import { Recorder, type WebhookProvider } from "./recorder.js";
import { type SendgridSandbox, startSendgridSandbox } from "./sendgrid.js";
import { SENDGRID_WEBHOOK_PUBLIC_KEY } from "./sendgrid-webhook.js";
import { startTwilioSandbox } from "./twilio.js";
import { type InboundSms, postInboundSms } from "./twilio-callbacks.js";

/** PEM files of the sandbox's TLS certificate (self-signed, 100 years, SANs for 127.0.0.1 and the providers' host names). */
export const SANDBOX_CERT = fileURLToPath(new URL("../../sandbox/certs/sandbox-cert.pem", import.meta.url));
export const SANDBOX_KEY = fileURLToPath(new URL("../../sandbox/certs/sandbox-key.pem", import.meta.url));

/**
 * The sandbox's SendGrid Event Webhook verification key as SendGrid's UI
 * shows it (base64 DER SubjectPublicKeyInfo, no PEM armour), computed at
 * import from the committed dev key sandbox/certs/sendgrid-webhook-key.pem.
 */
export { SENDGRID_WEBHOOK_PUBLIC_KEY };

/** Options of {@link startSandbox}. */
export interface SandboxOptions {
  /** SendGrid Event Webhook URL from the start (control API `PUT /webhooks/sendgrid` changes it). */
  sendgridWebhookUrl?: string;
}

export interface SandboxPorts {
  apns: number;
  fcm: number;
  sendgrid: number;
  twilio: number;
  control: number;
}

export interface Sandbox {
  ports: SandboxPorts;
  recorder: Recorder;
  close: () => Promise<void>;
}

/** Reads a JSON request body (at most 1 MB). */
function readJson(req: http.IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > 1048576) req.destroy(new Error("body: larger than 1 MB"));
      else chunks.push(c);
    });
    req.on("end", () => {
      try {
        resolve(chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : {});
      } catch {
        reject(new Error("body: must be JSON"));
      }
    });
    req.on("error", reject);
  });
}

type Reply = (status: number, v: unknown) => void;

/** The control API's webhook endpoints (see {@link startSandbox}). */
function webhookRoute(req: http.IncomingMessage, url: URL, recorder: Recorder, sendgrid: SendgridSandbox, json: Reply): void {
  if (req.method === "GET" && url.pathname === "/webhooks") return json(200, { sendgrid: sendgrid.webhookUrl() });
  if (req.method === "PUT" && url.pathname === "/webhooks/sendgrid") {
    return void readJson(req)
      .then((body) => {
        const u = (body as { url?: unknown }).url;
        if (u !== null && typeof u !== "string") throw new Error("url: required, a string or null");
        sendgrid.setWebhookUrl(u);
        json(200, { sendgrid: sendgrid.webhookUrl() });
      })
      .catch((err: Error) => json(400, { error: err.message }));
  }
  if (req.method === "POST" && url.pathname === "/webhooks/twilio/inbound") {
    // An inbound SMS as Twilio posts it: {url, from, to, body, accountSid?, authToken?} (the sandbox account's credentials by default).
    return void readJson(req)
      .then(async (b) => {
        const m = b as Partial<InboundSms>;
        for (const f of ["url", "from", "to", "body"] as const) if (typeof m[f] !== "string") throw new Error(`${f}: required, a string`);
        json(200, await postInboundSms({ ...(m as InboundSms), accountSid: m.accountSid ?? "AC00000000000000000000000000000000", authToken: m.authToken ?? "nfx-sandbox-token" }));
      })
      .catch((err: Error) => json(400, { error: err.message }));
  }
  if (req.method === "GET" && url.pathname === "/webhooks/events") {
    const provider = url.searchParams.get("provider");
    if (provider !== "sendgrid" && provider !== "twilio") return json(400, { error: "provider: must be one of sendgrid, twilio" });
    const p: WebhookProvider = provider;
    return json(200, { posts: recorder.webhooks.filter((w) => w.provider === p), events: recorder.webhookEvents(p), counts: recorder.webhookCounts(p) });
  }
  json(404, { error: `no such endpoint ${req.method} ${url.pathname}` });
}

/**
 * Starts the four sandbox providers and the control API (ports 0 = any free
 * port), with `faults` (see sandbox/faults.ts) in force from the start.
 * Control API, plain HTTP on 127.0.0.1:
 * `GET /stats`, `GET /accepted` (accepted requests per provider, O(1)), `GET /devices?provider=` (accepted count per token),
 * `GET /deliveries?provider=&token=`, `POST /reset`, and faults at run time:
 * `GET /faults`; `POST /faults` with a JSON fault rule (or the shorthand
 * `?provider=&prefix=`: 503 for matching tokens) answers its id;
 * `DELETE /faults?id=` or `?provider=[&prefix=]`, or all. Webhooks:
 * `GET /webhooks` (`{"sendgrid": url | null}`), `PUT /webhooks/sendgrid`
 * with `{"url": "http://…"}` (null clears; 400 unless an http(s) URL),
 * `GET /webhooks/events?provider=sendgrid|twilio` (`{posts, events,
 * counts}`: every POST attempt, the events receivers accepted, their count
 * per kind); `POST /webhooks/twilio/inbound` with `{url, from, to, body[, accountSid, authToken]}` posts
 * an inbound SMS there as Twilio does (signed) and answers `{status, contentType, body}`. Throws when `opts.sendgridWebhookUrl` is not an http(s) URL.
 */
export async function startSandbox(p: Partial<SandboxPorts>, faults: readonly unknown[] = [], opts: SandboxOptions = {}): Promise<Sandbox> {
  const key = readFileSync(SANDBOX_KEY);
  const cert = readFileSync(SANDBOX_CERT);
  const recorder = new Recorder();
  for (const f of faults) recorder.faults.add(f);
  const apns = await startApnsSandbox({ port: p.apns ?? 0, key, cert, recorder });
  const fcm = await startFcmSandbox({ port: p.fcm ?? 0, key, cert, recorder });
  const sendgrid = await startSendgridSandbox({ port: p.sendgrid ?? 0, recorder, ...(opts.sendgridWebhookUrl ? { webhookUrl: opts.sendgridWebhookUrl } : {}) });
  const twilio = await startTwilioSandbox({ port: p.twilio ?? 0, recorder });
  const control = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://sandbox");
    const json = (status: number, v: unknown): void => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(v));
    };
    const provider = url.searchParams.get("provider") as SandboxProvider | null;
    if (provider && !(SANDBOX_PROVIDERS as readonly string[]).includes(provider)) return json(400, { error: `provider: must be one of ${SANDBOX_PROVIDERS.join(", ")}` });
    if (req.method === "GET" && url.pathname === "/stats") return json(200, recorder.stats());
    if (req.method === "GET" && url.pathname === "/accepted") return json(200, recorder.acceptedCount);
    if (req.method === "GET" && url.pathname === "/devices") {
      if (!provider) return json(400, { error: "provider: required" });
      return json(200, recorder.countsByDevice(provider));
    }
    if (req.method === "GET" && url.pathname === "/deliveries") {
      const token = url.searchParams.get("token");
      return json(200, recorder.deliveries.filter((d) => (!provider || d.provider === provider) && (!token || d.token === token)));
    }
    if (url.pathname === "/faults") {
      if (req.method === "GET") return json(200, { faults: recorder.faults.list() });
      if (req.method === "DELETE") {
        const id = url.searchParams.get("id");
        const removed = recorder.faults.remove({ ...(id ? { id: Number(id) } : {}), ...(provider ? { provider } : {}), ...(url.searchParams.has("prefix") ? { prefix: url.searchParams.get("prefix")! } : {}) });
        return json(200, { removed, faults: recorder.faults.list() });
      }
      if (req.method === "POST") {
        const prefix = url.searchParams.get("prefix");
        const body: Promise<unknown> = provider ? Promise.resolve({ provider, ...(prefix ? { prefix } : {}), errors: [{ code: "503", rate: 1 }] }) : readJson(req);
        return void body
          .then((spec) => json(200, { id: recorder.faults.add(spec), faults: recorder.faults.list() }))
          .catch((err: Error) => json(400, { error: err instanceof ZodError ? formatIssues(err.issues).join("; ") : err.message }));
      }
    }
    if (url.pathname === "/webhooks" || url.pathname.startsWith("/webhooks/")) return webhookRoute(req, url, recorder, sendgrid, json);
    if (req.method === "POST" && url.pathname === "/reset") {
      recorder.reset();
      return json(200, { ok: true });
    }
    json(404, { error: `no such endpoint ${req.method} ${url.pathname}` });
  });
  await new Promise<void>((r) => control.listen(p.control ?? 0, "127.0.0.1", r));
  return {
    ports: { apns: apns.port, fcm: fcm.port, sendgrid: sendgrid.port, twilio: twilio.port, control: (control.address() as AddressInfo).port },
    recorder,
    async close() {
      control.closeAllConnections();
      await Promise.all([apns.close(), fcm.close(), sendgrid.close(), twilio.close(), new Promise<void>((r) => control.close(() => r()))]);
    },
  };
}

/** Writes a fresh APNs token-signing key (.p8: EC P-256, PKCS#8 PEM) to `path` unless one is there already. */
export function ensureApnsKey(path: string): string {
  if (!existsSync(path)) {
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1", privateKeyEncoding: { type: "pkcs8", format: "pem" }, publicKeyEncoding: { type: "spki", format: "pem" } });
    writeFileSync(path, privateKey, { mode: 0o600 });
  }
  return path;
}

/**
 * Config overrides that point every provider app at a sandbox on 127.0.0.1:
 * the apps of `gateways` (one default app per channel when absent) with
 * their endpoints replaced.
 */
export function sandboxOverrides(ports: Pick<SandboxPorts, "apns" | "fcm" | "sendgrid" | "twilio">, apnsKeyFile: string, gateways?: Config["gateways"]): Record<string, unknown> {
  const apps = <T>(l: readonly T[] | undefined, at: object): object[] => (l ?? [{}]).map((a) => ({ ...a, ...at }));
  return {
    gateways: {
      apns: { apps: apps(gateways?.apns.apps, { address: "127.0.0.1", port: ports.apns, caFile: SANDBOX_CERT, keyFile: apnsKeyFile }) },
      fcm: { apps: apps(gateways?.fcm.apps, { host: "127.0.0.1", port: ports.fcm, caFile: SANDBOX_CERT }) },
      email: { apps: apps(gateways?.email.apps, { baseUrl: `http://127.0.0.1:${ports.sendgrid}/` }) },
      sms: { apps: apps(gateways?.sms.apps, { baseUrl: `http://127.0.0.1:${ports.twilio}` }) },
    },
  };
}
