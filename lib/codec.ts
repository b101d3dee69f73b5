// The wire codec for every message on the hot path: msgpackr, plain maps as objects.
import { Packr } from "msgpackr";

const packr = new Packr({ useRecords: false, mapsAsObjects: true, int64AsType: "number" });

/** Encodes a value with msgpack. Throws on values msgpack cannot carry (functions, symbols). */
export function encode(value: unknown): Uint8Array {
  return packr.pack(value);
}

/** Decodes a msgpack buffer produced by {@link encode}. Throws on malformed input. */
export function decode<T>(bytes: Uint8Array): T {
  return packr.unpack(bytes) as T;
}

const te = new TextEncoder();
const td = new TextDecoder();

/** JSON to bytes, for API replies and KV records read by people and other tools. */
export function encodeJson(value: unknown): Uint8Array {
  return te.encode(JSON.stringify(value));
}

/** Bytes to JSON. Throws SyntaxError on malformed input. */
export function decodeJson<T>(bytes: Uint8Array): T {
  return JSON.parse(td.decode(bytes)) as T;
}
