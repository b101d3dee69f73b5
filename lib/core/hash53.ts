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

/** The two lanes after the last {@link lanes} call (module state: hashing is synchronous, and no object is made per hash). */
let laneA = 0;
let laneB = 0;
const A0 = 0x811c9dc5;
const B0 = 0x01000193 ^ 0x9e3779b9;

/** Runs both FNV-1a lanes from (`a`, `b`) over `s`, leaving them in laneA and laneB. */
function lanes(s: string, a: number, b: number): void {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
  }
  laneA = a;
  laneB = b;
}

/** The 53-bit value of the two lanes. */
const finish = (a: number, b: number): number => {
  b ^= b >>> 15;
  return (b & 0x1fffff) * 0x100000000 + (a >>> 0);
};

/** {@link hash53} of `x + y`, without building the string (the shard actor hashes two keys per recipient). */
export function hash53Of2(x: string, y: string): number {
  lanes(x, A0, B0);
  lanes(y, laneA, laneB);
  return finish(laneA, laneB);
}

/** Where hashing stands after a prefix: {@link hash53After}`(hash53Prefix(x), y)` is {@link hash53Of2}`(x, y)`. */
export interface Hash53Prefix {
  readonly a: number;
  readonly b: number;
}

/** The state after hashing `x`, for a prefix many keys share (a notification's dedup keys: hashed once per chunk). */
export function hash53Prefix(x: string): Hash53Prefix {
  lanes(x, A0, B0);
  return { a: laneA, b: laneB };
}

/** {@link hash53} of the prefix `p` was made from followed by `y`. */
export function hash53After(p: Hash53Prefix, y: string): number {
  lanes(y, p.a, p.b);
  return finish(laneA, laneB);
}
