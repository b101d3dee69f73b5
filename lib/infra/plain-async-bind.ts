// Node 20's AsyncResource#bind without its deprecated accessor, for the synchronous calls that use it on a hot path (an HTTP/2 client request).
import { AsyncResource } from "node:async_hooks";

type Bind = (this: AsyncResource, fn: (...args: unknown[]) => unknown, thisArg?: unknown) => (...args: unknown[]) => unknown;

const proto = AsyncResource.prototype as unknown as { bind: Bind };
const nodeBind = proto.bind;

/**
 * What `AsyncResource#bind` does — the returned function calls `fn` in the
 * resource's async scope (with `thisArg`, or the caller's `this`), has `fn`'s
 * `length`, and an `asyncResource` property naming the resource — except that
 * `asyncResource` is a plain property. Node 20 makes it an accessor pair, each
 * half wrapped by `deprecate()` (DEP0172), two wrappers built per call, which
 * cost an HTTP/2 client about 20 µs per request (docs/benchmarks.md, "Node 20's
 * HTTP/2 requests and a deprecation wrapper").
 */
const plainBind: Bind = function (this: AsyncResource, fn, thisArg) {
  return typeof fn === "function" ? boundTo(this, fn, thisArg) : nodeBind.call(this, fn, thisArg); // Node's own error for a non-function
};

/** `fn` bound to `res` as {@link plainBind} binds it. */
function boundTo(res: AsyncResource, fn: (...args: unknown[]) => unknown, thisArg: unknown): (...args: unknown[]) => unknown {
  const bound =
    thisArg === undefined
      ? function (this: unknown, ...args: unknown[]) {
          return res.runInAsyncScope(fn, this, ...args);
        }
      : (res.runInAsyncScope.bind(res, fn, thisArg) as (...args: unknown[]) => unknown);
  Object.defineProperty(bound, "length", { configurable: true, enumerable: false, writable: false, value: fn.length });
  (bound as { asyncResource?: AsyncResource }).asyncResource = res;
  return bound;
}

/**
 * Runs `call` (synchronous) with `AsyncResource#bind` as {@link plainBind}, and
 * puts back whatever was there before (Node's, or a tool's that wrapped it since)
 * before returning or throwing: only what `call` binds meanwhile is bound the
 * cheaper way; the rest of the process keeps its own. Nested calls are fine.
 * Returns what `call` returns; throws what it throws.
 */
export function withPlainAsyncBind<T>(call: () => T): T {
  const before = proto.bind;
  proto.bind = plainBind;
  try {
    return call();
  } finally {
    proto.bind = before;
  }
}
