// The uWS HTTP layer without a server: status lines, bearer and query parsing, error answers, origins and CORS, and one answer per request (body limit, aborts, coded errors) against a recording fake response.
import t from "tap";
import type { HttpRequest, HttpResponse } from "uWebSockets.js";

import { BodyTooLarge, NotFound, RequestInvalid } from "../../lib/core/errors.js";
import { inboxIds, invalidRequest, markTarget } from "../../lib/inapp/inbox-http.js";
import { bearerOf, errorAnswer, Exchange, fixed, jsonText, noRoute, noRouteAnswer, Origins, preflight, queryOf, route, statusLine } from "../../lib/infra/http.js";

/** A response that records what is written, and lets a test feed body chunks and abort. */
function fakeRes() {
  const rec = { status: "", headers: [] as [string, string][], body: undefined as string | undefined, ends: 0 };
  let aborted: (() => void) | undefined;
  let data: ((ab: ArrayBuffer, last: boolean) => void) | undefined;
  const res = {
    onAborted(f: () => void) {
      aborted = f;
      return res;
    },
    onData(f: (ab: ArrayBuffer, last: boolean) => void) {
      data = f;
      return res;
    },
    cork(f: () => void) {
      f();
      return res;
    },
    writeStatus(s: string) {
      rec.status = s;
      return res;
    },
    writeHeader(k: string, v: string) {
      rec.headers.push([k, v]);
      return res;
    },
    end(b?: string | Buffer) {
      rec.ends++;
      rec.body = b === undefined ? undefined : String(b);
      return res;
    },
  };
  const chunk = (s: string, last: boolean): void => {
    const b = Buffer.from(s);
    data!(b.buffer.slice(b.byteOffset, b.byteOffset + b.length), last);
  };
  return { res: res as unknown as HttpResponse, rec, abort: () => aborted!(), chunk };
}

function fakeReq(h: Record<string, string> = {}, query?: string, method = "get", url = "/x"): HttpRequest {
  return { getHeader: (k: string) => h[k] ?? "", getQuery: () => query, getMethod: () => method, getUrl: () => url, getParameter: () => undefined } as unknown as HttpRequest;
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

t.test("pure helpers", async (t) => {
  t.equal(statusLine(200), "200 OK");
  t.equal(statusLine(413), "413 Payload Too Large");
  t.equal(statusLine(599), "599 ", "an unknown code keeps an empty reason");
  t.equal(bearerOf("Bearer abc"), "abc");
  t.equal(bearerOf("bearer abc"), "abc", "the scheme is case-insensitive");
  t.equal(bearerOf("Basic abc"), undefined);
  t.equal(bearerOf(""), undefined);
  t.equal(queryOf(undefined).toString(), "");
  t.equal(queryOf("a=1&token=x").get("token"), "x");
  t.equal(jsonText(undefined), "", "no body for 204");
  t.equal(jsonText({ a: 1 }), '{"a":1}');
  t.same(errorAnswer(new NotFound("template t not found", { field: "id" })), { status: 404, body: { error: { code: "NFX_ERR_NOT_FOUND", message: "template t not found", field: "id" } } });
  t.same(errorAnswer(new Error("secret detail")), { status: 500, body: { error: { code: "NFX_ERR_INTERNAL", message: "internal error" } } }, "unknown errors leak nothing");
  t.same(noRouteAnswer("post", "/nope"), { status: 404, body: { error: { code: "NFX_ERR_NOT_FOUND", message: "no route POST /nope" } } });
});

t.test("origins and CORS", async (t) => {
  const o = new Origins(["https://app.example"]);
  t.ok(o.allowed("https://app.example"));
  t.notOk(o.allowed("https://evil.example"));
  t.same(o.corsHeaders("https://app.example"), { "access-control-allow-origin": "https://app.example", vary: "origin" });
  t.same(o.corsHeaders("https://evil.example"), {}, "no CORS for an unlisted origin");
  t.same(o.corsHeaders(""), {}, "no CORS without an origin");
  t.same(o.preflightHeaders("https://app.example", "GET, POST", "authorization"), { "access-control-allow-origin": "https://app.example", "access-control-allow-headers": "authorization", "access-control-allow-methods": "GET, POST" });
  t.throws(() => o.check(""), { code: "NFX_ERR_FORBIDDEN", message: "origin: required", field: "origin" });
  t.throws(() => o.check("https://evil.example"), { code: "NFX_ERR_FORBIDDEN", message: "origin: https://evil.example is not allowed" });
  t.doesNotThrow(() => o.check("https://app.example"));
  t.doesNotThrow(() => new Origins([], true).check(""), "allowNone admits requests without an Origin");
  t.ok(new Origins(["*"]).allowed("https://any.example"), "* admits any origin");
});

t.test("exchange: one answer, never after an abort, headers in order", async (t) => {
  const f = fakeRes();
  const x = new Exchange(f.res);
  x.headers = { vary: "origin" };
  x.json(202, { id: "n1" }, { "idempotent-replayed": "true" });
  x.json(500, { late: true });
  t.equal(f.rec.status, "202 Accepted");
  t.same(f.rec.headers, [["content-type", "application/json"], ["idempotent-replayed", "true"], ["vary", "origin"]]);
  t.equal(f.rec.body, '{"id":"n1"}');
  t.equal(f.rec.ends, 1, "answered once");

  const g = fakeRes();
  const y = new Exchange(g.res);
  g.abort();
  y.json(200, {});
  t.equal(g.rec.ends, 0, "nothing written after an abort");

  const h = fakeRes();
  const seen: unknown[] = [];
  new Exchange(h.res, (e) => seen.push(e)).fail(new Error("boom"));
  t.equal(h.rec.status, "500 Internal Server Error");
  t.equal(seen.length, 1, "onInternal sees the unknown error");
  const k = fakeRes();
  new Exchange(k.res, (e) => seen.push(e)).fail(new RequestInvalid("x: bad", { field: "x" }));
  t.equal(k.rec.status, "400 Bad Request");
  t.equal(k.rec.body, '{"error":{"code":"NFX_ERR_REQUEST_INVALID","message":"x: bad","field":"x"}}');
  t.equal(seen.length, 1, "coded errors are not internal");
});

t.test("route: prepare, body under a limit, coded errors", async (t) => {
  const echo = route({
    body: { max: 10, tooLarge: () => new BodyTooLarge("(body): over 10 bytes", { field: "(body)" }) },
    prepare: (req) => {
      if (req.getHeader("x-refuse")) throw new NotFound("refused", { field: "x" });
      return { who: req.getHeader("x-who") };
    },
    run: async (p, body) => ({ status: 200, body: { who: p.who, got: body.toString() } }),
  });

  const a = fakeRes();
  echo(a.res, fakeReq({ "x-who": "ann" }));
  a.chunk("hel", false);
  a.chunk("lo", true);
  await tick();
  t.equal(a.rec.body, '{"who":"ann","got":"hello"}', "chunks are joined");

  const b = fakeRes();
  echo(b.res, fakeReq());
  b.chunk("0123456789", false);
  b.chunk("x", false);
  b.chunk("y", true);
  await tick();
  t.equal(b.rec.status, "413 Payload Too Large");
  t.equal(b.rec.ends, 1, "the rest of the body is ignored");

  const c = fakeRes();
  echo(c.res, fakeReq({ "x-refuse": "1" }));
  t.equal(c.rec.status, "404 Not Found", "prepare's error is answered at once, before any body");

  const d = fakeRes();
  echo(d.res, fakeReq());
  d.chunk("ab", false);
  d.abort();
  await tick();
  t.equal(d.rec.ends, 0, "an aborted request is not answered");

  const raw = fakeRes();
  route({ prepare: () => null, run: async () => ({ status: 302, raw: "", headers: { location: "https://x.example" } }) })(raw.res, fakeReq());
  await tick();
  t.equal(raw.rec.status, "302 Found");
  t.same(raw.rec.headers, [["location", "https://x.example"]], "raw answers carry only their own headers");
});

t.test("fixed answers, preflight, no route", async (t) => {
  const a = fakeRes();
  fixed({ "content-type": "application/json" }, () => '{"ok":true}')(a.res);
  t.same([a.rec.status, a.rec.headers, a.rec.body], ["", [["content-type", "application/json"]], '{"ok":true}']);
  const o = new Origins(["https://app.example"]);
  const p = fakeRes();
  preflight(o, "GET, POST", "authorization, content-type")(p.res, fakeReq({ origin: "https://app.example" }));
  t.equal(p.rec.status, "204 No Content");
  t.equal(p.rec.headers.length, 3);
  const q = fakeRes();
  preflight(o, "GET, POST", "authorization, content-type")(q.res, fakeReq({ origin: "https://evil.example" }));
  t.same([q.rec.status, q.rec.headers], ["204 No Content", []]);
  const n = fakeRes();
  noRoute(n.res, fakeReq({}, undefined, "delete", "/v1/nothing"));
  t.equal(n.rec.body, '{"error":{"code":"NFX_ERR_NOT_FOUND","message":"no route DELETE /v1/nothing"}}');
});

t.test("inbox validation shared by HTTP and WebSocket commands", async (t) => {
  t.same(markTarget("read", undefined, true), "all");
  t.same(markTarget("seen", ["a"], undefined), ["a"]);
  t.throws(() => markTarget("seen", undefined, undefined), { message: "ids: required unless all is true", field: "ids" });
  t.throws(() => markTarget("archive", undefined, true), { message: "all: only read may apply to all items", field: "all" });
  const bad = inboxIds.safeParse(["no spaces allowed"]);
  t.notOk(bad.success);
  if (!bad.success) t.match(invalidRequest(bad.error.issues[0]), { code: "NFX_ERR_REQUEST_INVALID", message: /must be notification ids/ });
});
