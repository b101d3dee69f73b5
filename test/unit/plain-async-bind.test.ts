// AsyncResource#bind without Node 20's deprecation wrappers (lib/infra/plain-async-bind.ts): the same bound function, only inside the call, and an HTTP/2 request through it.
import { AsyncLocalStorage, AsyncResource, executionAsyncId } from "node:async_hooks";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";

import t from "tap";

import { withPlainAsyncBind } from "../../lib/infra/plain-async-bind.js";

/** The bind method AsyncResource instances use now. */
const currentBind = (): unknown => Object.getOwnPropertyDescriptor(AsyncResource.prototype, "bind")?.value;
const nodeBind = currentBind();

t.test("binds as Node does: the resource's scope and context, this, arguments, result, length, asyncResource", async (t) => {
  const als = new AsyncLocalStorage<string>();
  const res = als.run("at creation", () => new AsyncResource("nfx-test"));
  const seen: unknown[] = [];
  function probe(this: unknown, a: number, b: number): number {
    seen.push(executionAsyncId(), als.getStore(), this, a, b);
    return a + b;
  }
  const bound = withPlainAsyncBind(() => res.bind(probe));
  const self = { me: 1 };
  t.equal(bound.call(self, 2, 3), 5, "returns fn's result");
  t.same(seen, [res.asyncId(), "at creation", self, 2, 3], "runs in the resource's scope, with its context, the caller's this and the arguments");
  t.equal(bound.length, 2, "fn's length");
  t.equal((bound as unknown as { asyncResource: AsyncResource }).asyncResource, res, "asyncResource names the resource");
  const d = Object.getOwnPropertyDescriptor(bound, "asyncResource");
  t.ok(d && "value" in d && d.get === undefined, "a plain property, not Node 20's deprecated accessor pair");
  const nodes = res.bind(probe);
  const dn = Object.getOwnPropertyDescriptor(nodes, "asyncResource");
  t.ok(dn && typeof dn.get === "function", "outside the call, Node's own bind (its accessor) again");

  seen.length = 0;
  // Node's typings leave out bind's thisArg.
  const withThis = withPlainAsyncBind(() => (res as unknown as { bind(fn: typeof probe, thisArg: unknown): typeof probe }).bind(probe, self));
  t.equal(withThis.call({ other: true }, 4, 5), 9);
  t.same(seen, [res.asyncId(), "at creation", self, 4, 5], "thisArg wins over the caller's this");
  t.throws(() => withPlainAsyncBind(() => res.bind(42 as unknown as () => void)), { code: "ERR_INVALID_ARG_TYPE" }, "a non-function is refused as Node refuses it");
});

t.test("puts Node's bind back whether the call returns or throws", async (t) => {
  t.equal(withPlainAsyncBind(() => "value"), "value");
  t.equal(currentBind(), nodeBind);
  t.throws(() => withPlainAsyncBind(() => {
    throw new Error("boom");
  }), { message: "boom" });
  t.equal(currentBind(), nodeBind, "restored after a throw");
  const inner = withPlainAsyncBind(() => {
    withPlainAsyncBind(() => undefined);
    return Object.getOwnPropertyDescriptor(new AsyncResource("nfx-test").bind(() => 1), "asyncResource");
  });
  t.ok(inner && "value" in inner, "a nested call leaves the outer one's bind in place");
  // A tool that wrapped bind after this module loaded keeps its wrapper.
  const proto = AsyncResource.prototype as unknown as { bind: unknown };
  const wrapped = function (this: AsyncResource, ...a: unknown[]): unknown {
    return (nodeBind as (...x: unknown[]) => unknown).apply(this, a);
  };
  proto.bind = wrapped;
  t.teardown(() => void (proto.bind = nodeBind));
  withPlainAsyncBind(() => undefined);
  t.equal(currentBind(), wrapped, "what was there before is put back, not Node's");
});

t.test("an HTTP/2 request opened through it before the session connected is answered", async (t) => {
  const server = http2.createServer();
  server.on("stream", (s, h) => {
    s.respond({ ":status": 200 });
    s.end(`got ${String(h[":path"])}`);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  t.teardown(() => void server.close());
  const session = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  t.teardown(() => void session.close());
  // Still connecting: Node binds the request's start (`onConnect`) with AsyncResource#bind and runs it once connected.
  t.ok(session.connecting, "the session is still connecting");
  const stream = withPlainAsyncBind(() => session.request({ ":method": "POST", ":path": "/3/device/abc" }));
  stream.end("{}");
  let body = "";
  stream.setEncoding("utf8");
  stream.on("data", (c: string) => (body += c));
  const status = await new Promise<number>((res, rej) => {
    stream.on("response", (h) => res(Number(h[":status"])));
    stream.on("error", rej);
  });
  await new Promise((r) => stream.on("end", r));
  t.equal(status, 200);
  t.equal(body, "got /3/device/abc");
});
