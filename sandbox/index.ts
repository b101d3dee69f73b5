// Starts the sandbox providers together with a small HTTP control API that reports what they received.
import http from "node:http";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { generateKeyPairSync } from "node:crypto";
import { fileURLToPath } from "node:url";
import type { AddressInfo } from "node:net";
import { startApnsSandbox } from "./apns.js";
import { startFcmSandbox } from "./fcm.js";
import { Recorder, type SandboxProvider } from "./recorder.js";

/** PEM files of the sandbox's TLS certificate (self-signed, 100 years, SANs for 127.0.0.1 and the providers' host names). */
export const SANDBOX_CERT = fileURLToPath(new URL("../../sandbox/certs/sandbox-cert.pem", import.meta.url));
export const SANDBOX_KEY = fileURLToPath(new URL("../../sandbox/certs/sandbox-key.pem", import.meta.url));

export interface Sandbox {
  ports: { apns: number; fcm: number; control: number };
  recorder: Recorder;
  close(): Promise<void>;
}

/**
 * Starts the APNs and FCM sandboxes and the control API (ports 0 = any free
 * port). Control API, plain HTTP on 127.0.0.1:
 * `GET /stats`, `GET /devices?provider=apns|fcm` (accepted count per token),
 * `GET /deliveries?provider=&token=`, `POST /reset`, and outages at run time:
 * `POST|DELETE /faults?provider=apns|fcm&prefix=<token prefix>` (503 for matching tokens).
 */
export async function startSandbox(p: { apns: number; fcm: number; control: number }): Promise<Sandbox> {
  const key = readFileSync(SANDBOX_KEY);
  const cert = readFileSync(SANDBOX_CERT);
  const recorder = new Recorder();
  const apns = await startApnsSandbox({ port: p.apns, key, cert, recorder });
  const fcm = await startFcmSandbox({ port: p.fcm, key, cert, recorder });
  const control = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://sandbox");
    const json = (status: number, v: unknown): void => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(v));
    };
    const provider = url.searchParams.get("provider") as SandboxProvider | null;
    if (provider && provider !== "apns" && provider !== "fcm") return json(400, { error: "provider: must be apns or fcm" });
    if (req.method === "GET" && url.pathname === "/stats") return json(200, recorder.stats());
    if (req.method === "GET" && url.pathname === "/devices") {
      if (!provider) return json(400, { error: "provider: required" });
      return json(200, recorder.countsByDevice(provider));
    }
    if (req.method === "GET" && url.pathname === "/deliveries") {
      const token = url.searchParams.get("token");
      return json(200, recorder.deliveries.filter((d) => (!provider || d.provider === provider) && (!token || d.token === token)));
    }
    if (url.pathname === "/faults" && (req.method === "POST" || req.method === "DELETE")) {
      const prefix = url.searchParams.get("prefix") ?? "";
      if (!provider || !prefix) return json(400, { error: "provider and prefix: required" });
      if (req.method === "POST") recorder.faults.push({ provider, prefix });
      else recorder.faults.splice(0, recorder.faults.length, ...recorder.faults.filter((f) => !(f.provider === provider && f.prefix === prefix)));
      return json(200, { faults: recorder.faults });
    }
    if (req.method === "POST" && url.pathname === "/reset") {
      recorder.reset();
      return json(200, { ok: true });
    }
    json(404, { error: `no such endpoint ${req.method} ${url.pathname}` });
  });
  await new Promise<void>((r) => control.listen(p.control, "127.0.0.1", r));
  return {
    ports: { apns: apns.port, fcm: fcm.port, control: (control.address() as AddressInfo).port },
    recorder,
    async close() {
      control.closeAllConnections();
      await Promise.all([apns.close(), fcm.close(), new Promise<void>((r) => control.close(() => r()))]);
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

/** Config overrides that point the gateways at a sandbox on 127.0.0.1. */
export function sandboxOverrides(ports: { apns: number; fcm: number }, apnsKeyFile: string): Record<string, unknown> {
  return {
    gateways: {
      apns: { address: "127.0.0.1", port: ports.apns, caFile: SANDBOX_CERT, keyFile: apnsKeyFile },
      fcm: { host: "127.0.0.1", port: ports.fcm, caFile: SANDBOX_CERT },
    },
  };
}
