// Sandbox webhook receiver: many endpoints on one HTTP server (/hooks/<name>), each verifying Standard Webhooks signatures with the reference package, recording deliveries in order, and failing, slowing down or going away on request.
import http from "node:http";
import type { AddressInfo } from "node:net";

import { Webhook } from "standardwebhooks";

/** One request an endpoint received. */
export interface ReceivedDelivery {
  /** `webhook-id`. */
  id: string;
  /** Whether the signature verified with the endpoint's secrets (the `standardwebhooks` package's `verify`). */
  valid: boolean;
  type: string;
  data: unknown;
  /** The HTTP status answered. */
  status: number;
  at: number;
}

/** How an endpoint misbehaves: answer `status` (with `retryAfter`) for the next `times` requests (absent: until told otherwise), after `delayMs`. */
export interface EndpointFault {
  status?: number;
  retryAfter?: string;
  delayMs?: number;
  times?: number;
}

interface EndpointBox {
  secrets: Webhook[];
  received: ReceivedDelivery[];
  /** Deliveries answered 2xx (copies included): a progress count that costs nothing to read. */
  ok: number;
  /** The webhook-ids accepted before the record was last emptied (`POST /_reset`): a copy arriving later still counts as a duplicate. */
  before: Set<string>;
  fault?: EndpointFault;
}

export interface WebhookReceiver {
  port: number;
  /** The URL of endpoint `name`. */
  url(name: string): string;
  /** Sets the secrets `name` verifies with (any one verifying is enough, as during a rotation). */
  setSecrets(name: string, secrets: readonly string[]): void;
  setFault(name: string, fault: EndpointFault | null): void;
  /** What `name` received, in arrival order (answered 2xx or not). */
  received(name: string): readonly ReceivedDelivery[];
  /** Deliveries `name` accepted (answered 2xx), in order. */
  accepted(name: string): ReceivedDelivery[];
  /** Every endpoint name that received something. */
  names(): string[];
  close(): Promise<void>;
}

/**
 * Starts the receiver on `port` (0: a free one) on 127.0.0.1. `POST /hooks/<name>`: verifies the signature (an
 * unverifiable delivery is answered 401 and recorded `valid: false`), applies the endpoint's fault, records, answers
 * 204. Control over HTTP for a receiver in another process: `PUT /_secrets/<name>` (JSON array of secrets),
 * `PUT /_faults/<name>` (JSON fault or null), `GET /_received/<name>`, `GET /_counts` (`{name: accepted}`),
 * `GET /_summary/<prefix>` (accepted per endpoint, duplicates, invalid signatures, first and last acceptance).
 * `GET /_progress/<prefix>`: 2xx answers per endpoint so far (copies included), without walking the deliveries: for polling.
 * `POST /_reset/<prefix>`: empties those endpoints' records (secrets and faults stay; the ids accepted so far are kept
 * only to count a later copy as a duplicate), so a benchmark's rounds are each summarized alone.
 * Run as its own process: `node dist/sandbox/webhook-receiver.js [port]` prints `webhooks http://127.0.0.1:<port>`.
 */
export async function startWebhookReceiver(port = 0): Promise<WebhookReceiver> {
  const boxes = new Map<string, EndpointBox>();
  const box = (name: string): EndpointBox => {
    let b = boxes.get(name);
    if (!b) boxes.set(name, (b = { secrets: [], received: [], ok: 0, before: new Set() }));
    return b;
  };
  const read = (req: http.IncomingMessage): Promise<string> =>
    new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
      req.on("error", reject);
    });
  const api: Omit<WebhookReceiver, "port" | "url" | "close"> = {
    setSecrets: (name, secrets) => void (box(name).secrets = secrets.map((s) => new Webhook(s))),
    setFault: (name, fault) => void (fault ? (box(name).fault = { ...fault }) : delete box(name).fault),
    received: (name) => boxes.get(name)?.received ?? [],
    accepted: (name) => (boxes.get(name)?.received ?? []).filter((d) => d.status >= 200 && d.status < 300),
    names: () => [...boxes.keys()],
  };

  /** Over endpoints whose name starts with `prefix`: accepted deliveries per endpoint, duplicates (same webhook-id accepted twice), invalid signatures, first and last acceptance. */
  const summary = (prefix: string): { accepted: Record<string, number>; span: Record<string, [number, number]>; dup: number; invalid: number; first: number; last: number } => {
    const accepted: Record<string, number> = {};
    const span: Record<string, [number, number]> = {};
    let dup = 0;
    let invalid = 0;
    let first = Infinity;
    let last = 0;
    for (const [n, b] of boxes) {
      if (!n.startsWith(prefix)) continue;
      const seen = new Set<string>();
      for (const d of b.received) {
        if (!d.valid) invalid++;
        if (d.status >= 300) continue;
        if (seen.has(d.id) || b.before.has(d.id)) dup++;
        seen.add(d.id);
        first = Math.min(first, d.at);
        last = Math.max(last, d.at);
        span[n] = [Math.min(span[n]?.[0] ?? Infinity, d.at), Math.max(span[n]?.[1] ?? 0, d.at)];
      }
      accepted[n] = seen.size;
    }
    return { accepted, span, dup, invalid, first, last };
  };
  /** Empties the records of endpoints whose name starts with `prefix`, remembering the ids they accepted. */
  const reset = (prefix: string): { endpoints: number } => {
    let endpoints = 0;
    for (const [n, b] of boxes) {
      if (!n.startsWith(prefix)) continue;
      for (const d of b.received) if (d.status < 300) b.before.add(d.id);
      b.received = [];
      b.ok = 0;
      endpoints++;
    }
    return { endpoints };
  };
  const server = http.createServer((req, res) => {
    void (async () => {
      const body = await read(req);
      const [, kind, name] = /^\/(hooks|_secrets|_faults|_received|_counts|_progress|_summary|_reset)\/?([^/?]*)/.exec(req.url ?? "") ?? [];
      const json = (status: number, v: unknown): void => void res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(v));
      if (kind === "_secrets" && req.method === "PUT") return json(200, api.setSecrets(name, JSON.parse(body) as string[]) ?? {});
      if (kind === "_faults" && req.method === "PUT") return json(200, api.setFault(name, JSON.parse(body) as EndpointFault | null) ?? {});
      if (kind === "_received") return json(200, api.received(name));
      if (kind === "_counts") return json(200, Object.fromEntries([...boxes].map(([n, b]) => [n, b.received.filter((d) => d.status < 300).length])));
      if (kind === "_summary") return json(200, summary(name));
      if (kind === "_reset" && req.method === "POST") return json(200, reset(name));
      if (kind === "_progress") return json(200, Object.fromEntries([...boxes].filter(([n]) => n.startsWith(name)).map(([n, b]) => [n, b.ok])));
      if (kind !== "hooks" || req.method !== "POST" || !name) return json(404, { error: "no such route" });
      const b = box(name);
      const headers = { "webhook-id": String(req.headers["webhook-id"] ?? ""), "webhook-timestamp": String(req.headers["webhook-timestamp"] ?? ""), "webhook-signature": String(req.headers["webhook-signature"] ?? "") };
      let valid = false;
      let payload: { type?: string; data?: unknown } = {};
      for (const w of b.secrets) {
        try {
          payload = w.verify(body, headers) as typeof payload;
          valid = true;
          break;
        } catch {
          // try the next secret
        }
      }
      if (!valid) {
        try {
          payload = JSON.parse(body) as typeof payload;
        } catch {
          payload = {};
        }
      }
      const f = b.fault;
      if (f?.delayMs) await new Promise((r) => setTimeout(r, f.delayMs));
      let status = valid ? 204 : 401;
      if (f && valid) {
        if (f.status) status = f.status;
        if (f.times !== undefined && --f.times <= 0) delete b.fault;
      }
      b.received.push({ id: headers["webhook-id"], valid, type: String(payload.type ?? ""), data: payload.data, status, at: Date.now() });
      if (status < 300) b.ok++;
      res.writeHead(status, f?.retryAfter && status >= 400 ? { "retry-after": f.retryAfter } : {}).end();
    })().catch(() => void res.writeHead(500).end());
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => server.listen(port, "127.0.0.1", r));
  const p = (server.address() as AddressInfo).port;
  return {
    ...api,
    port: p,
    url: (name) => `http://127.0.0.1:${p}/hooks/${name}`,
    close: () => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))),
  };
}

// As a process of its own (bench:webhooks): the receiver on the port given (0: a free one) until killed.
if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const rx = await startWebhookReceiver(Number(process.argv[2] ?? 0));
  console.log(`webhooks http://127.0.0.1:${rx.port}`);
}
