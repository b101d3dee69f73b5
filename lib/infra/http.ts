// The uWebSockets.js HTTP layer the HTTP API and the WebSocket gateway share: one answer per request, JSON and coded-error answers, bodies read under a limit, origins and CORS, listening.
import { STATUS_CODES } from "node:http";

import type { HttpRequest, HttpResponse, TemplatedApp, us_listen_socket } from "uWebSockets.js";

import { Forbidden, NfxError, toErrorReply } from "../core/errors.js";

/** Response headers, written in insertion order. */
export type Headers = Record<string, string>;

/** What a route answers: `body` as JSON (none for 204), or `raw` bytes whose content type `headers` must carry. */
export interface Answer {
  status: number;
  body?: unknown;
  raw?: Buffer | string;
  headers?: Headers;
}

/** The status line for `code` (`404 Not Found`); a code Node does not know keeps an empty reason (`599 `). */
export const statusLine = (code: number): string => `${code} ${STATUS_CODES[code] ?? ""}`;

/** The token of an `Authorization: Bearer <token>` header (scheme case-insensitive); undefined for any other value or none. */
export const bearerOf = (authorization: string): string | undefined => /^Bearer (.+)$/i.exec(authorization)?.[1];

/** The query string uWS hands over (without `?`, possibly undefined) as parameters; never throws. */
export const queryOf = (query: string | undefined): URLSearchParams => new URLSearchParams(query ?? "");

/** A JSON body's text: "" for undefined (a 204 has no body), JSON otherwise. Throws what JSON.stringify throws (cycles, BigInt). */
export const jsonText = (body: unknown): string => (body === undefined ? "" : JSON.stringify(body));

/**
 * The answer to anything thrown: an {@link NfxError} answers its own status and `{error:{code,message,field}}`;
 * anything else answers 500 NFX_ERR_INTERNAL with no detail (the caller logs it, see {@link Exchange}).
 */
export function errorAnswer(err: unknown): { status: number; body: { error: ReturnType<typeof toErrorReply> } } {
  return { status: err instanceof NfxError ? err.status : 500, body: { error: toErrorReply(err) } };
}

/** The 404 answer of a path no route serves: `no route GET /x` (no field). */
export const noRouteAnswer = (method: string, url: string): Answer => ({ status: 404, body: { error: { code: "NFX_ERR_NOT_FOUND", message: `no route ${method.toUpperCase()} ${url}` } } });

/**
 * Which browser origins may call: a list of exact origins, `*` for any. Requests without an Origin header
 * (not from a browser) pass {@link Origins.check} only when `allowNone` is set; CORS headers are only ever sent to a listed origin.
 */
export class Origins {
  private readonly any: boolean;
  private readonly set: Set<string>;

  constructor(list: readonly string[], private readonly allowNone = false) {
    this.any = list.includes("*");
    this.set = new Set(list);
  }

  /** Whether a non-empty `origin` is listed (or `*` is). */
  allowed(origin: string): boolean {
    return this.any || this.set.has(origin);
  }

  /** Throws {@link Forbidden} (field `origin`) unless `origin` may connect; an empty origin passes only with `allowNone`. */
  check(origin: string): void {
    if (!origin) {
      if (!this.allowNone) throw new Forbidden("origin: required", { field: "origin" });
      return;
    }
    if (!this.allowed(origin)) throw new Forbidden(`origin: ${origin} is not allowed`, { field: "origin" });
  }

  /** The CORS headers of an answer to `origin`: allow-origin and `vary: origin` for a listed origin, none otherwise. */
  corsHeaders(origin: string): Headers {
    return origin && this.allowed(origin) ? { "access-control-allow-origin": origin, vary: "origin" } : {};
  }

  /** The headers of a 204 preflight answer to `origin`: allow-origin, allow-headers and allow-methods for a listed origin, none otherwise. */
  preflightHeaders(origin: string, methods: string, headers: string): Headers {
    return origin && this.allowed(origin) ? { "access-control-allow-origin": origin, "access-control-allow-headers": headers, "access-control-allow-methods": methods } : {};
  }
}

/**
 * One request's answer: written at most once, never after the client went away (uWS forbids touching an
 * aborted response). `headers` are added to every answer after its own (CORS). `onInternal` sees every
 * error that is not an {@link NfxError} before it is answered as 500, also when nothing can be answered any more.
 */
export class Exchange {
  /** Set once answered or aborted; nothing more is written then. */
  done = false;
  /** Headers every answer of this exchange carries, after the answer's own. */
  headers: Headers = {};

  constructor(
    readonly res: HttpResponse,
    private readonly onInternal?: (err: unknown) => void,
  ) {
    res.onAborted(() => {
      this.done = true;
    });
  }

  /** Answers `body` as JSON (`content-type: application/json`); a no-op once done. */
  json(status: number, body: unknown, headers: Headers = {}): void {
    this.write(status, jsonText(body), { "content-type": "application/json" }, headers);
  }

  /** Answers raw bytes; `headers` must carry the content type. A no-op once done. */
  raw(status: number, body: Buffer | string, headers: Headers = {}): void {
    this.write(status, body, headers);
  }

  /** Answers a route's {@link Answer}: raw when it has `raw`, JSON otherwise. */
  answer(a: Answer): void {
    if (a.raw !== undefined) this.raw(a.status, a.raw, a.headers);
    else this.json(a.status, a.body, a.headers);
  }

  /** Answers an error as {@link errorAnswer} does, telling `onInternal` first about one that is not an NfxError. */
  fail(err: unknown): void {
    if (!(err instanceof NfxError)) this.onInternal?.(err);
    const a = errorAnswer(err);
    this.json(a.status, a.body);
  }

  /**
   * Reads the whole body, then calls `then` with it once. Beyond `max` bytes it answers `tooLarge()`
   * (an error, see {@link fail}) and ignores the rest; after an abort nothing is called.
   */
  readBody(max: number, tooLarge: () => unknown, then: (body: Buffer) => void): void {
    const chunks: Buffer[] = [];
    let size = 0;
    this.res.onData((ab, last) => {
      if (this.done) return;
      size += ab.byteLength;
      if (size > max) return this.fail(tooLarge());
      chunks.push(Buffer.from(ab.slice(0)));
      if (last) then(Buffer.concat(chunks));
    });
  }

  private write(status: number, body: Buffer | string, ...groups: Headers[]): void {
    if (this.done) return;
    this.done = true;
    this.res.cork(() => {
      this.res.writeStatus(statusLine(status));
      for (const g of [...groups, this.headers]) for (const [k, v] of Object.entries(g)) this.res.writeHeader(k, v);
      this.res.end(body);
    });
  }
}

/** A route: what it reads from the request up front, whether it takes a body, and what it answers. */
export interface RouteSpec<P> {
  /**
   * Reads everything the route needs from `req`, synchronously (uWS forbids touching `req` later), and may set
   * `x.headers`. Throwing answers the error at once (see {@link Exchange.fail}); the body is then not read.
   */
  prepare(req: HttpRequest, x: Exchange): P;
  /** When set, the body is read up to `max` bytes before `run`; beyond, `tooLarge()` is answered. */
  body?: { max: number; tooLarge: () => unknown };
  /** Runs the route with what `prepare` read and the body (empty without `body`); a rejection is answered as an error. */
  run(p: P, body: Buffer): Promise<Answer>;
  /** Sees every error that is not an NfxError (to log it); it is answered as 500 NFX_ERR_INTERNAL. */
  onInternal?: (err: unknown) => void;
}

/** Turns a {@link RouteSpec} into a uWS handler that answers each request exactly once, or not at all when it is aborted. */
export function route<P>(spec: RouteSpec<P>): (res: HttpResponse, req: HttpRequest) => void {
  return (res, req) => {
    const x = new Exchange(res, spec.onInternal);
    let p: P;
    try {
      p = spec.prepare(req, x);
    } catch (err) {
      x.fail(err);
      return;
    }
    const go = (body: Buffer): void => {
      spec
        .run(p, body)
        .then((a) => x.answer(a))
        .catch((err) => x.fail(err));
    };
    if (!spec.body) return go(Buffer.alloc(0));
    x.readBody(spec.body.max, spec.body.tooLarge, go);
  };
}

/** A handler answering 200 with `body` and `headers` at once (files read at start-up, health checks); `body` is called per request. */
export const fixed =
  (headers: Headers, body: () => Buffer | string) =>
  (res: HttpResponse): void =>
    void res.cork(() => {
      for (const [k, v] of Object.entries(headers)) res.writeHeader(k, v);
      res.end(body());
    });

/** A handler answering a CORS preflight: 204, with {@link Origins.preflightHeaders} for a listed origin. */
export const preflight =
  (origins: Origins, methods: string, headers: string) =>
  (res: HttpResponse, req: HttpRequest): void => {
    const h = origins.preflightHeaders(req.getHeader("origin"), methods, headers);
    res.cork(() => {
      res.writeStatus("204 No Content");
      for (const [k, v] of Object.entries(h)) res.writeHeader(k, v);
      res.end();
    });
  };

/** The catch-all handler: 404 {@link noRouteAnswer} for any method and path no other route serves. */
export const noRoute = (res: HttpResponse, req: HttpRequest): void => new Exchange(res).answer(noRouteAnswer(req.getMethod(), req.getUrl()));

/**
 * Listens on `host:port` (0 picks a port). Rejects with `<what>: cannot listen on host:port` when uWS cannot;
 * resolves with the bound port and a `close` that stops accepting (open connections are the caller's).
 */
export async function listen(uws: typeof import("uWebSockets.js"), app: TemplatedApp, host: string, port: number, what: string): Promise<{ port: number; close(): void }> {
  const socket = await new Promise<us_listen_socket>((resolve, reject) => app.listen(host, port, (s) => (s ? resolve(s) : reject(new Error(`${what}: cannot listen on ${host}:${port}`)))));
  return { port: uws.us_socket_local_port(socket), close: () => uws.us_listen_socket_close(socket) };
}
