// The one shard function: user id -> shard number. Used by router, campaign, directory and gateways alike.

/**
 * FNV-1a 32-bit hash of the UTF-8 bytes of `userId`, modulo `shards`.
 * Stable across processes, versions and languages; never change it under a
 * running cluster (every stored key and stream subject depends on it).
 */
export function shardOf(userId: string, shards: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < userId.length; i++) {
    let c = userId.charCodeAt(i);
    if (c < 0x80) {
      h = Math.imul(h ^ c, 0x01000193);
      continue;
    }
    // Encode as UTF-8 so the hash matches other languages' byte-wise FNV.
    if (c >= 0xd800 && c < 0xdc00 && i + 1 < userId.length) {
      const lo = userId.charCodeAt(i + 1);
      if (lo >= 0xdc00 && lo < 0xe000) {
        c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
        i++;
      }
    }
    const bytes =
      c < 0x800
        ? [0xc0 | (c >> 6), 0x80 | (c & 63)]
        : c < 0x10000
          ? [0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63)]
          : [0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63)];
    for (const b of bytes) h = Math.imul(h ^ b, 0x01000193);
  }
  return (h >>> 0) % shards;
}

/** `users` grouped by {@link shardOf}, each shard's list in input order (shards in order of first appearance). */
export function groupByShard(users: Iterable<string>, shards: number): Map<number, string[]> {
  const byShard = new Map<number, string[]>();
  for (const u of users) {
    const s = shardOf(u, shards);
    const l = byShard.get(s);
    if (l) l.push(u);
    else byShard.set(s, [u]);
  }
  return byShard;
}
