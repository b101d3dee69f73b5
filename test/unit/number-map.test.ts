// NumberMap (lib/core/number-map.ts) agrees with a Map under random sets, deletes and prunes, and refuses keys it cannot hold; packChanged packs only what changed; a change journal is bounded by the last whole pack.
import t from "tap";

import { hash53 } from "../../lib/core/hash53.js";
import { NumberMap } from "../../lib/core/number-map.js";
import { ChangeJournal, forEachPacked, packChanged, packEntries } from "../../lib/core/pair-pack.js";
import { DedupWindow } from "../../lib/shard/dedup-window.js";
import { RateBuckets } from "../../lib/shard/rate-buckets.js";

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
  changed.reset(m.size); // as after a whole pack of the map
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

t.test("ChangeJournal: bounded by the last whole pack; past it the notes are dropped and the next pack must be whole", (t) => {
  const j = new ChangeJournal();
  j.reset(3000);
  for (let k = 0; k < 3000; k++) j.note(k);
  t.notOk(j.overflowed, "as many notes as the whole pack held: kept");
  t.equal(j.size, 3000);
  j.note(3000);
  t.ok(j.overflowed, "one more: overflowed");
  t.equal(j.size, 0, "its notes are dropped");
  j.note(3001);
  t.equal(j.size, 0, "and none kept until the next whole pack");
  j.clear();
  t.ok(j.overflowed, "a clear (after a pack of changes) leaves it overflowed");
  j.reset(10);
  t.notOk(j.overflowed, "a whole pack resets it");
  for (let k = 0; k < 1024; k++) j.note(k);
  t.notOk(j.overflowed, "at least 1,024 notes are kept whatever the whole pack held");

  // The shard's state: a window filling up from nothing overflows, its changes refuse to pack, and a whole pack resets it.
  let clock = 1_000_000;
  const w = new DedupWindow(60_000, () => clock);
  const b = new RateBuckets(() => clock);
  const cap = { count: 5, periodSec: 60 };
  w.pack();
  b.pack();
  for (let i = 0; i < 2000; i++) {
    w.add(`n|u${i}`);
    b.take(`u${i}`, "promo", cap);
  }
  t.ok(w.changesOverflowed && b.changesOverflowed, "2,000 new entries on an empty whole pack: both overflowed");
  t.throws(() => w.packChanges(), /pack whole/, "the window's changes refuse to pack");
  t.throws(() => b.packChanges(), /pack whole/, "and the buckets'");
  const back = new DedupWindow(60_000, () => clock);
  back.restore(w.pack());
  t.ok(back.size === 2000 && back.has("n|u1999"), "the whole pack holds every entry");
  b.pack();
  t.notOk(w.changesOverflowed || b.changesOverflowed, "a whole pack resets both");
  clock += 1000;
  w.add("n|late");
  const d = new DedupWindow(60_000, () => clock);
  d.restore(w.packChanges());
  t.ok(d.size === 1 && d.has("n|late"), "changes pack again after it");
  t.end();
});
