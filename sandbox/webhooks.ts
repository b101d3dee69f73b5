// Posts the sandbox providers' delivery webhooks to the customer's URL, with retries and backoff, and records every attempt.
import http from "node:http";
import https from "node:https";

import type { Recorder, WebhookProvider } from "./recorder.js";

/** An attempt that gets no answer within this long counts as a connection error (status 0). */
const ATTEMPT_TIMEOUT_MS = 10_000;

/** Options of a {@link WebhookPoster}. */
export interface WebhookPosterOptions {
  provider: WebhookProvider;
  recorder: Recorder;
  /** Retries after the first attempt. */
  retries: number;
  /** Delay before the first retry. */
  backoffMs: number;
  /** Factor applied to the delay before each next retry (2: doubling, 1: constant). */
  backoffFactor: number;
}

/** One webhook to post: its body, headers computed afresh for each attempt (a new signing timestamp), and the events it carries (for the recorder). */
export interface WebhookRequest {
  url: string;
  body: string;
  headers: () => Record<string, string>;
  events: readonly Record<string, unknown>[];
}

/** True for an absolute http: or https: URL, the only kind a provider accepts as a webhook URL. */
export function isWebhookUrl(url: string): boolean {
  try {
    const u = new URL(url);
    return u.protocol === "http:" || u.protocol === "https:";
  } catch {
    return false;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());

/**
 * Posts webhooks as a provider does, over its own keep-alive agents.
 * Each attempt is recorded (`recorder.recordWebhook`); a non-2xx answer, a
 * connection error or a timeout is retried up to `retries` times with
 * backoff. After {@link close}, in-flight attempts are torn down
 * and nothing more is tried. Never throws.
 */
export class WebhookPoster {
  private readonly agents = { http: new http.Agent({ keepAlive: true }), https: new https.Agent({ keepAlive: true }) };
  private readonly inFlight = new Set<http.ClientRequest>();
  private closed = false;

  constructor(private readonly o: WebhookPosterOptions) {}

  /** Posts `w` until a receiver answers 2xx or the retries run out; resolves with the last status (0: connection error, or closed). */
  async post(w: WebhookRequest): Promise<number> {
    let status = 0;
    for (let attempt = 0; attempt <= this.o.retries && !this.closed; attempt++) {
      if (attempt > 0) await sleep(this.o.backoffMs * this.o.backoffFactor ** (attempt - 1));
      if (this.closed) break;
      status = await this.attempt(w.url, w.body, w.headers());
      if (this.closed) break;
      this.o.recorder.recordWebhook({ provider: this.o.provider, url: w.url, status, events: w.events.length, at: Date.now() }, w.events);
      if (status >= 200 && status < 300) break;
    }
    return status;
  }

  /** Stops retrying and tears down every connection. */
  close(): void {
    this.closed = true;
    for (const r of this.inFlight) r.destroy();
    this.agents.http.destroy();
    this.agents.https.destroy();
  }

  /** One POST; resolves with the answer's status, or 0 on any error. The answer's body is read and dropped. */
  private attempt(url: string, body: string, headers: Record<string, string>): Promise<number> {
    return new Promise((resolve) => {
      const u = new URL(url);
      const mod = u.protocol === "https:" ? https : http;
      const req = mod.request(u, { method: "POST", agent: u.protocol === "https:" ? this.agents.https : this.agents.http, headers: { ...headers, "content-length": String(Buffer.byteLength(body)) }, timeout: ATTEMPT_TIMEOUT_MS });
      const done = (status: number): void => {
        this.inFlight.delete(req);
        resolve(status);
      };
      req.on("response", (res) => {
        res.resume();
        res.on("end", () => done(res.statusCode ?? 0));
        res.on("error", () => done(0));
      });
      req.on("timeout", () => req.destroy(new Error("webhook: no answer")));
      req.on("error", () => done(0));
      this.inFlight.add(req);
      req.end(body);
    });
  }
}
