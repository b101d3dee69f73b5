// The wire codec for every message on the hot path: msgpackr, plain maps as objects.
import { Packr } from "msgpackr";

import { columnsOf, isSendColumns, sendsOf } from "./send-columns.js";
import type { SendBatch } from "./types.js";

// Stream messages use msgpackr records: an object shape repeated in a batch (receipt entries; send batches go as columns) has its keys written once.
const packr = new Packr({ useRecords: true, mapsAsObjects: true, int64AsType: "number" });
// Directory records in Redis are plain msgpack, so Redis's Lua (cmsgpack) can read and write them too.
const plain = new Packr({ useRecords: false, mapsAsObjects: true, int64AsType: "number", variableMapSize: true });

/**
 * Encodes a stream message with msgpack (records for repeated shapes); a send
 * batch goes in its columnar form (lib/core/send-columns.ts). Throws on values
 * msgpack cannot carry (functions, symbols).
 */
export function encode(value: unknown): Uint8Array {
  return packr.pack((value as { type?: unknown } | null)?.type === "send_batch" ? columnsOf(value as SendBatch) : value);
}

/** Decodes a buffer produced by {@link encode} or {@link encodePlain} (a send batch's columns back to its sends). Throws on malformed input. */
export function decode<T>(bytes: Uint8Array): T {
  const v: unknown = packr.unpack(bytes);
  return (isSendColumns(v) ? sendsOf(v) : v) as T;
}

/** Encodes as standard msgpack (no extensions), readable by any msgpack implementation. */
export function encodePlain(value: unknown): Buffer {
  return plain.pack(value);
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
