// Request bodies: decoding with guards that need no recursion (nesting depth measured before JSON.parse, `__proto__` keys found after it).
import { decodeJson } from "./codec.js";
import { BodyTooLarge, RequestInvalid, RequestUndecodable } from "./errors.js";
import { PROTOTYPE_NAME_RULE } from "./own-keys.js";

/**
 * The first nesting depth over `max` that `bytes` (UTF-8 JSON text) reaches,
 * or null when it never nests deeper than `max` arrays/objects. One linear
 * pass over the bytes, constant stack: brackets inside strings (escapes
 * included) do not count. It does not validate the JSON; JSON.parse does that
 * afterwards.
 */
export function jsonDepthOver(bytes: Uint8Array, max: number): number | null {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (inString) {
      if (b === 0x5c) i++; // backslash: skip the escaped byte (\" or \\)
      else if (b === 0x22) inString = false;
      continue;
    }
    if (b === 0x22) inString = true;
    else if (b === 0x5b || b === 0x7b) {
      if (++depth > max) return depth;
    } else if (b === 0x5d || b === 0x7d) depth--;
  }
  return null;
}

/**
 * The dotted path of the first own `__proto__` key in a parsed JSON value
 * (`categories.__proto__`), or null. JSON.parse keeps such a key as plain
 * data, but zod drops it silently and an assignment copying it would replace
 * an object's prototype, so request bodies carrying one are refused. Walks
 * with an explicit stack: call it only on values whose depth is bounded.
 */
export function protoKeyPath(value: unknown): string | null {
  const stack: [unknown, string][] = [[value, ""]];
  while (stack.length > 0) {
    const [v, at] = stack.pop()!;
    if (typeof v !== "object" || v === null) continue;
    for (const k of Object.keys(v)) {
      const path = at ? `${at}.${k}` : k;
      if (k === "__proto__") return path;
      stack.push([(v as Record<string, unknown>)[k], path]);
    }
  }
  return null;
}

/**
 * Decodes a JSON request body of at most `max` bytes nested at most
 * `maxDepth` arrays/objects deep (`ingest.maxJsonDepth`, checked without
 * recursion before parsing). Throws {@link BodyTooLarge},
 * {@link RequestInvalid} naming `(body)` for a body nested too deep (or the
 * path of a `__proto__` key anywhere in it), or
 * {@link RequestUndecodable}; shared with the HTTP surface.
 */
export function decodeBody(data: Uint8Array, max: number, maxDepth: number): unknown {
  if (data.length > max) throw new BodyTooLarge(`(body): ${data.length} bytes is over the ${max}-byte limit`, { field: "(body)" });
  if (jsonDepthOver(data, maxDepth) !== null) {
    throw new RequestInvalid(`(body): JSON must nest at most ${maxDepth} arrays/objects deep (ingest.maxJsonDepth)`, { field: "(body)" });
  }
  let body: unknown;
  try {
    body = decodeJson(data);
  } catch (cause) {
    throw new RequestUndecodable("(body): must be valid JSON", { field: "(body)", cause });
  }
  const proto = protoKeyPath(body);
  if (proto !== null) throw new RequestInvalid(`${proto}: ${PROTOTYPE_NAME_RULE}`, { field: proto });
  return body;
}
