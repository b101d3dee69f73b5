// A 53-bit string hash (two FNV-1a lanes): compact numeric keys for the shard actor's in-memory windows.

/**
 * Hashes `s` to an integer below 2^53 (a safe JS number, so it can key a Map
 * and be checkpointed as msgpack). Two independent 32-bit FNV-1a lanes over
 * UTF-16 code units; a collision between two live keys of one shard is about
 * n²/2^54 likely (1.5M keys: 1 in 8,000).
 */
export function hash53(s: string): number {
  return hash53Of2(s, "");
}

/** {@link hash53} of `x + y`, without building the string (the shard actor hashes two keys per recipient). */
export function hash53Of2(x: string, y: string): number {
  return hash53After(hash53Prefix(x), y);
}

/** Where hashing stands after a prefix: {@link hash53After}`(hash53Prefix(x), y)` is {@link hash53Of2}`(x, y)`. */
export interface Hash53Prefix {
  readonly a: number;
  readonly b: number;
}

/** The state after hashing `x`, for a prefix many keys share (a notification's dedup keys: hashed once per chunk). */
export function hash53Prefix(x: string): Hash53Prefix {
  let a = 0x811c9dc5;
  let b = 0x01000193 ^ 0x9e3779b9;
  for (let i = 0; i < x.length; i++) {
    const c = x.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
  }
  return { a, b };
}

/** {@link hash53} of the prefix `p` was made from followed by `y`. */
export function hash53After(p: Hash53Prefix, y: string): number {
  let a = p.a;
  let b = p.b;
  for (let i = 0; i < y.length; i++) {
    const c = y.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
  }
  b ^= b >>> 15;
  return (b & 0x1fffff) * 0x100000000 + (a >>> 0);
}
