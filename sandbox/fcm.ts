// Sandbox FCM: an HTTPS server on 127.0.0.1 that speaks the FCM HTTP v1 API and answers as Google does.
import { randomUUID } from "node:crypto";
import https from "node:https";

import { afterDelay, type FaultCode, listenLocal } from "./faults.js";
import { type Recorder, tokenFault } from "./recorder.js";

/** How FCM words each injected fault: HTTP status, canonical status, message, FcmError code. */
const FCM_FAULT: Record<Exclude<FaultCode, "reset">, [number, string, string, string | undefined]> = {
  "429": [429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Messages'.", "QUOTA_EXCEEDED"],
  "500": [500, "INTERNAL", "Internal error encountered.", "INTERNAL"],
  "503": [503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE"],
};

/** FCM's error body: `{error:{code,message,status,details:[FcmError]}}`. */
function fcmErrorBody(code: number, status: string, message: string, errorCode?: string): string {
  const details = errorCode ? [{ "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", errorCode }] : [];
  return JSON.stringify({ error: { code, message, status, details } });
}

/**
 * Starts the FCM sandbox on `port` (0 = any free port). Answers
 * `POST /v1/projects/<p>/messages:send`: 200 `{name}`, or FCM's errors
 * (401 UNAUTHENTICATED, 400 INVALID_ARGUMENT, 404 UNREGISTERED), and the
 * recorder's injected faults (429 QUOTA_EXCEEDED, 500 INTERNAL, 503
 * UNAVAILABLE with `retry-after`, connection resets, added latency).
 */
/** What the sandbox reads from a v1 send body (read as sent: values are not checked). */
type FcmMessage = { token?: unknown; data?: { nfx_id?: string }; notification?: { title?: string; body?: string } } & Record<string, unknown>;

export async function startFcmSandbox(o: { port: number; key: Buffer; cert: Buffer; recorder: Recorder }): Promise<{ port: number; close: () => Promise<void> }> {
  const server = https.createServer({ key: o.key, cert: o.cert, keepAlive: true }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const project = /^\/v1\/projects\/([^/]+)\/messages:send$/.exec(req.url ?? "")?.[1];
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string") headers[k] = v;
      let msg: FcmMessage | undefined;
      try {
        msg = (JSON.parse(Buffer.concat(chunks).toString()) as { message?: FcmMessage }).message;
      } catch {
        msg = undefined;
      }
      const token = typeof msg?.token === "string" ? msg.token : "";
      const answer = (status: number, body: string, reason?: string, retryAfter?: number): void => {
        o.recorder.record({
          provider: "fcm", token, nid: msg?.data?.nfx_id, title: msg?.notification?.title, body: msg?.notification?.body,
          account: project, data: msg, headers, status, reason, at: Date.now(), ...(res.destroyed || req.socket.destroyed ? { unanswered: true as const } : {}),
        });
        res.writeHead(status, { "content-type": "application/json; charset=UTF-8", ...(retryAfter !== undefined ? { "retry-after": String(retryAfter) } : {}) });
        res.end(body);
      };
      if (req.method !== "POST" || !project) return answer(404, fcmErrorBody(404, "NOT_FOUND", "Not found"), "NOT_FOUND");
      if (!/^Bearer \S+$/.test(headers.authorization ?? "")) {
        return answer(401, fcmErrorBody(401, "UNAUTHENTICATED", "Request is missing required authentication credential."), "UNAUTHENTICATED");
      }
      if (!msg || !token) return answer(400, fcmErrorBody(400, "INVALID_ARGUMENT", "Request contains an invalid argument.", "INVALID_ARGUMENT"), "INVALID_ARGUMENT");
      const v = o.recorder.faults.decide("fcm", { token, account: project });
      afterDelay(v, () => {
        if (v.error?.code === "reset") {
          o.recorder.record({ provider: "fcm", token, account: project, headers, status: 0, reason: "reset", at: Date.now() });
          return void req.socket.destroy();
        }
        if (v.error) {
          const [status, canonical, message, code] = FCM_FAULT[v.error.code];
          return answer(status, fcmErrorBody(status, canonical, message, code), code ?? canonical, v.error.retryAfterSec);
        }
        const fault = tokenFault(token);
        if (fault === "bad") return answer(400, fcmErrorBody(400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token", "INVALID_ARGUMENT"), "INVALID_ARGUMENT");
        if (fault === "gone") return answer(404, fcmErrorBody(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED"), "UNREGISTERED");
        answer(200, JSON.stringify({ name: `projects/${project}/messages/${randomUUID()}` }));
      });
    });
  });
  return listenLocal(server, o.port);
}
