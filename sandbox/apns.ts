// Sandbox APNs: an HTTP/2 + TLS server on 127.0.0.1 that speaks APNs' provider API and answers as Apple does.
import { randomUUID } from "node:crypto";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";

import { afterDelay, type FaultCode } from "./faults.js";
import { type Recorder, tokenFault } from "./recorder.js";

/** How APNs words each injected fault. */
const APNS_FAULT: Record<Exclude<FaultCode, "reset">, [number, string]> = {
  "429": [429, "TooManyRequests"],
  "500": [500, "InternalServerError"],
  "503": [503, "ServiceUnavailable"],
};

/** What the sandbox reads from a push body (read as sent: values are not checked). */
type ApnsPayload = { nfx?: { id?: string }; aps?: { alert?: { title?: string; body?: string } } } & Record<string, unknown>;

/** How old a provider token APNs accepts (its `iat`), in seconds. */
const TOKEN_MAX_AGE_SEC = 3600;

/** Apple's payload limit for regular pushes. */
const MAX_PAYLOAD = 4096;

function jwtParts(auth: string | undefined): { kid?: string; iss?: string; alg?: string; iat?: number } | null {
  const m = /^bearer ([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$/i.exec(auth ?? "");
  if (!m) return null;
  try {
    const h = JSON.parse(Buffer.from(m[1], "base64url").toString()) as { kid?: string; alg?: string };
    const c = JSON.parse(Buffer.from(m[2], "base64url").toString()) as { iss?: string; iat?: number };
    return { kid: h.kid, alg: h.alg, iss: c.iss, iat: c.iat };
  } catch {
    return null;
  }
}

/**
 * Starts the APNs sandbox on `port` (0 = any free port). Answers
 * `POST /3/device/<token>`: 200 with `apns-id`, or Apple's JSON `{reason}`
 * errors (403 MissingProviderToken/InvalidProviderToken, ExpiredProviderToken
 * for a token issued over an hour ago, 400 MissingTopic,
 * 413 PayloadTooLarge, 400 BadDeviceToken, 410 Unregistered), and the
 * injected faults of the recorder (429 TooManyRequests, 500, 503
 * ServiceUnavailable with `retry-after`, stream resets, added latency).
 */
export async function startApnsSandbox(o: { port: number; key: Buffer; cert: Buffer; recorder: Recorder }): Promise<{ port: number; close: () => Promise<void> }> {
  const server = http2.createSecureServer({ key: o.key, cert: o.cert, allowHTTP1: false, settings: { maxConcurrentStreams: 1000 } });
  server.on("stream", (stream, h) => {
    // A stream this sandbox resets ends with an error of its own (and a client may reset one): neither is the server's failure.
    stream.on("error", () => undefined);
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => {
      const path = String(h[":path"] ?? "");
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(h)) if (!k.startsWith(":") && typeof v === "string") headers[k] = v;
      const token = /^\/3\/device\/([^/?]+)$/.exec(path)?.[1] ?? "";
      const raw = Buffer.concat(chunks);
      const answer = (status: number, reason?: string, extra: Record<string, string | number> = {}): void => {
        let payload: ApnsPayload | undefined;
        try {
          payload = JSON.parse(raw.toString()) as ApnsPayload;
        } catch {
          payload = undefined;
        }
        o.recorder.record({
          provider: "apns", token, nid: payload?.nfx?.id, title: payload?.aps?.alert?.title, body: payload?.aps?.alert?.body,
          account: headers["apns-topic"], data: payload, headers, status, reason, at: Date.now(), ...(stream.destroyed ? { unanswered: true as const } : {}),
        });
        if (stream.destroyed) return;
        const apnsId = headers["apns-id"] ?? randomUUID();
        if (status === 200) {
          stream.respond({ ":status": 200, "apns-id": apnsId });
          stream.end();
          return;
        }
        stream.respond({ ":status": status, "apns-id": apnsId, "content-type": "application/json", ...(extra.retryAfter !== undefined ? { "retry-after": String(extra.retryAfter) } : {}) });
        delete extra.retryAfter;
        stream.end(JSON.stringify({ reason, ...extra }));
      };
      if (h[":method"] !== "POST") return answer(405, "MethodNotAllowed");
      if (!token) return answer(404, "BadPath");
      if (!headers.authorization) return answer(403, "MissingProviderToken");
      const jwt = jwtParts(headers.authorization);
      if (!jwt || jwt.alg !== "ES256" || !jwt.kid || !jwt.iss) return answer(403, "InvalidProviderToken");
      // Apple refuses a provider token issued more than an hour ago.
      if (typeof jwt.iat === "number" && Date.now() / 1000 - jwt.iat > TOKEN_MAX_AGE_SEC) return answer(403, "ExpiredProviderToken");
      if (!headers["apns-topic"]) return answer(400, "MissingTopic");
      if (raw.length > MAX_PAYLOAD) return answer(413, "PayloadTooLarge");
      if (raw.length === 0) return answer(400, "PayloadEmpty");
      const v = o.recorder.faults.decide("apns", { token, account: headers["apns-topic"] });
      afterDelay(v, () => {
        if (v.error?.code === "reset") {
          o.recorder.record({ provider: "apns", token, account: headers["apns-topic"], headers, status: 0, reason: "reset", at: Date.now() });
          return void (stream.destroyed || stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR));
        }
        if (v.error) {
          const [status, reason] = APNS_FAULT[v.error.code];
          return answer(status, reason, v.error.retryAfterSec !== undefined ? { retryAfter: v.error.retryAfterSec } : {});
        }
        const fault = tokenFault(token);
        if (fault === "bad") return answer(400, "BadDeviceToken");
        if (fault === "gone") return answer(410, "Unregistered", { timestamp: Date.now() });
        answer(200);
      });
    });
  });
  // Open sessions are destroyed on close: server.close() alone waits for every client to hang up.
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (s) => (sessions.add(s), s.once("close", () => sessions.delete(s))));
  await new Promise<void>((r) => server.listen(o.port, "127.0.0.1", r));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        for (const s of sessions) s.destroy();
      }),
  };
}
