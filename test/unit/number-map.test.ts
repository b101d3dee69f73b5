// NumberMap (lib/core/number-map.ts) agrees with a Map under random sets, deletes and prunes, and refuses keys it cannot hold; packChanged packs only what changed.
import t from "tap";

import { hash53 } from "../../lib/core/hash53.js";
import { NumberMap } from "../../lib/core/number-map.js";
import { ChangeJournal, forEachPacked, packChanged, packEntries } from "../../lib/core/pair-pack.js";

t.test("random sets, deletes and retains give the same entries as a Map", (t) => {
  let seed = 7;
  const rnd = (n: number): number => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n);
  const m = new NumberMap();
  const ref = new Map<number, number>();
  // Few distinct keys (so deletes hit and probe runs wrap), hashes and small integers mixed.
  const pool = Array.from({ length: 3000 }, (_, i) => (i % 3 === 0 ? i : hash53(`u${i}`)));
  for (let step = 0; step < 200_000; step++) {
    const k = pool[rnd(pool.length)];
    const op = rnd(10);
    if (op < 6) {
      m.set(k, step);
      ref.set(k, step);
    } else if (op < 9) {
      if (m.delete(k) !== ref.delete(k)) t.fail(`delete ${k} at step ${step}`);
    }
    else if (m.get(k) !== ref.get(k)) t.fail(`get ${k}`);
    if (step % 50_000 === 49_999) {
      m.retain((v) => v % 2 === 0);
      for (const [rk, rv] of ref) if (rv % 2 !== 0) ref.delete(rk);
    }
  }
  t.equal(m.size, ref.size, "same size");
  const seen = new Map<number, number>();
  m.forEach((v, k) => seen.set(k, v));
  t.same([...seen].sort((a, b) => a[0] - b[0]), [...ref].sort((a, b) => a[0] - b[0]), "same entries");
  t.end();
});

t.test("a million entries in about 24 bytes each; packing prunes and round-trips", (t) => {
  const m = new NumberMap();
  for (let i = 0; i < 1_000_000; i++) m.set(hash53(`user-${i}`), i);
  t.equal(m.size, 1_000_000);
  t.ok(m.bytes / m.size <= 34, `${(m.bytes / m.size).toFixed(1)} bytes per entry`);
  const packed = packEntries(m, (v) => (v < 500_000 ? v : null));
  t.equal(m.size, 500_000, "entries whose value is null were dropped");
  const back = new NumberMap();
  forEachPacked(packed, 0, (k, v) => back.set(k, v));
  t.equal(back.size, 500_000, "what was packed reads back");
  t.equal(back.get(hash53("user-42")), 42);
  t.equal(back.get(hash53("user-600000")), undefined);
  t.throws(() => m.set(-1, 1), RangeError, "a negative key is refused");
  t.throws(() => m.set(2 ** 53, 1), RangeError, "a key past 2^53 is refused");
  t.end();
});

t.test("packChanged: each key written since the last pack once, with its current value; gone or expired ones skipped", (t) => {
  const m = new NumberMap();
  const changed = new ChangeJournal();
  for (let k = 0; k < 5000; k++) m.set(k, 100);
  const write = (k: number, v: number): void => {
    m.set(k, v);
    changed.note(k);
  };
  write(1, 200);
  write(2, 300);
  write(1, 250); // written twice: packed once, with its last value
  write(3, 5); // expired by the time of the pack
  write(4, 400);
  m.delete(4); // gone since
  for (let i = 0; i < 3000; i++) write(10_000 + i, 1000 + i); // more notes than the journal's first size
  const got = new Map<number, number>();
  forEachPacked(packChanged(m, changed, (v) => (v >= 100 ? v : null)), 0, (k, v) => void got.set(k, v));
  t.equal(got.size, 3002, "keys 1, 2 and the 3,000 new ones; not 3 (expired), 4 (gone) or the 4,996 unchanged");
  t.same([got.get(1), got.get(2), got.get(12_999)], [250, 300, 3999], "each with its current value");
  t.equal(changed.size, 0, "the journal is cleared");
  t.equal(forEachPacked(packChanged(m, changed, (v) => v), 0, () => t.fail("nothing changed since")), 4, "a pack with no changes is empty");
  t.end();
});
