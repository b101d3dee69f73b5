// hash53: the values checkpoints hold stay the same, and hashing two parts equals hashing their concatenation.
import t from "tap";

import { hash53, hash53After, hash53Of2, hash53Prefix } from "../../lib/core/hash53.js";
import { RateBuckets } from "../../lib/shard/rate-buckets.js";

t.test("hash53 gives the values earlier versions wrote into checkpoints", async (t) => {
  // Computed with the single-string implementation before hash53Of2 existed: a change here would orphan every dedup entry and bucket in a stored checkpoint.
  t.equal(hash53("n|n_01JBXYZ|u000000042"), 5363244762706585);
  t.equal(hash53("u000000042\u0000marketing"), 5762669441550706);
  t.equal(hash53(""), 6269709525491141);
});

t.test("hash53Of2(x, y) and hash53After(hash53Prefix(x), y) are hash53(x + y)", async (t) => {
  const parts = ["", "n|", "n|n_01JBXYZ|", "u000000042", "\u0000marketing", "é漢字😀", "x".repeat(300)];
  for (const x of parts) {
    const p = hash53Prefix(x);
    for (const y of parts) {
      t.equal(hash53Of2(x, y), hash53(x + y), JSON.stringify([x.slice(0, 20), y.slice(0, 20)]));
      t.equal(hash53After(p, y), hash53(x + y), `after a prefix: ${JSON.stringify([x.slice(0, 20), y.slice(0, 20)])}`);
    }
  }
  t.equal(RateBuckets.key("u000000042", "marketing"), hash53("u000000042\u0000marketing"), "a bucket key is the hash of user, NUL, category");
  t.equal(hash53Of2("u000000042", RateBuckets.suffix("marketing")), RateBuckets.key("u000000042", "marketing"));
});
