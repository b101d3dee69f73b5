// One webhook request through undici's dispatcher: its answer's status and Retry-After, the body read and dropped, the whole attempt bounded by one timer for every request in flight.
import type { Dispatcher } from "undici";

import { parseRetryAfter } from "./retry-policy.js";

/** What one attempt got: the HTTP status (0: no answer, then `error` says why) and the answer's Retry-After (ms from now). */
export interface PostAnswer {
  status: number;
  error?: string;
  retryAfter?: number;
}

/** A timeout, as the answer names it: the attempt ran past its deadline (this module's sweep, or undici's own connect, headers or body timeout). */
const TIMEOUT_CODES = new Set(["UND_ERR_CONNECT_TIMEOUT", "UND_ERR_HEADERS_TIMEOUT", "UND_ERR_BODY_TIMEOUT"]);

/** Bytes of an answer's body read at most; past them the request is aborted (its status still counts). */
const BODY_LIMIT = 64 * 1024;

class DeadlineExceeded extends Error {
  override name = "TimeoutError";
}
class BodyTooLarge extends Error {}

interface Flight {
  due: number;
  stop(): void;
}

/**
 * Posts bodies with one undici {@link Dispatcher}, each attempt aborted once
 * `timeoutMs` have passed since it was made (waiting for a pooled socket
 * included: "connection to last byte of the answer"). The deadlines share one
 * sweep timer, checked every `sweepMs`, instead of an AbortSignal and a timer
 * per request. An answer's body is read up to 64 KB and dropped. One per
 * gateway process; {@link close} stops the sweep.
 */
export class WebhookPoster {
  /** In-flight attempts in the order they were made: with one `timeoutMs`, that is the order of their deadlines. */
  private readonly flights = new Set<Flight>();
  private readonly sweep: NodeJS.Timeout;

  constructor(private readonly dispatcher: Dispatcher, private readonly timeoutMs: number, sweepMs = 100) {
    this.sweep = setInterval(() => {
      const now = Date.now();
      for (const f of this.flights) {
        if (f.due > now) break;
        this.flights.delete(f);
        f.stop();
      }
    }, sweepMs);
    this.sweep.unref();
  }

  /**
   * POSTs `body` with `headers` to `path` at `origin`. Resolves (never
   * rejects) with the answer's status once its body was read, or, when no
   * answer came, status 0 and the reason (`timeout after N ms`, or the
   * transport error's code and message). An answer whose body failed or ran
   * past the limit or the deadline after its status arrived keeps that status.
   */
  post(origin: string, path: string, headers: Record<string, string>, body: string): Promise<PostAnswer> {
    const started = Date.now();
    return new Promise<PostAnswer>((resolve) => {
      let status = 0;
      let retryAfter: string | string[] | undefined;
      let got = 0;
      let controller: Dispatcher.DispatchController | null = null;
      let expired = false;
      const flight: Flight = {
        due: started + this.timeoutMs,
        stop: () => {
          expired = true;
          controller?.abort(new DeadlineExceeded());
        },
      };
      this.flights.add(flight);
      const done = (a: PostAnswer): void => {
        this.flights.delete(flight);
        resolve(a);
      };
      const answered = (): PostAnswer => {
        const ra = parseRetryAfter(retryAfter, Date.now());
        return ra === undefined ? { status } : { status, retryAfter: ra };
      };
      this.dispatcher.dispatch(
        { origin, path, method: "POST", headers, body, headersTimeout: this.timeoutMs, bodyTimeout: this.timeoutMs },
        {
          onRequestStart: (ctl) => {
            controller = ctl;
            if (expired) ctl.abort(new DeadlineExceeded());
          },
          onResponseStart: (_ctl, statusCode, h) => {
            if (statusCode < 200) return; // 1xx: the answer is still to come
            status = statusCode;
            retryAfter = h["retry-after"];
          },
          onResponseData: (ctl, chunk) => {
            got += chunk.length;
            if (got > BODY_LIMIT) ctl.abort(new BodyTooLarge());
          },
          onResponseEnd: () => done(answered()),
          onResponseError: (_ctl, err) => {
            if (status !== 0) return done(answered());
            const e = err as Error & { code?: string };
            const timedOut = e instanceof DeadlineExceeded || (e.code !== undefined && TIMEOUT_CODES.has(e.code));
            done({ status: 0, error: timedOut ? `timeout after ${Date.now() - started} ms` : `${e.code ?? e.name}: ${e.message}` });
          },
        },
      );
    });
  }

  /** Stops the sweep (attempts still in flight end by undici's own timeouts). */
  close(): void {
    clearInterval(this.sweep);
  }
}
