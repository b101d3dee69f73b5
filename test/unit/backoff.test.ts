// The shared backoff (lib/core/backoff.ts): doubling from baseMs, capped at maxMs, and the same delays every caller had before it.
import t from "tap";

import { backoffMs } from "../../lib/core/backoff.js";
import { startupBackoffMs } from "../../lib/infra/nats.js";

t.test("doubles from baseMs and stops at maxMs", async (t) => {
  const o = { baseMs: 100, maxMs: 1000 };
  t.same([0, 1, 2, 3, 4, 5, 60, 2000].map((a) => backoffMs(a, o)), [100, 200, 400, 800, 1000, 1000, 1000, 1000]);
  t.equal(backoffMs(Infinity, o), 1000, "no Infinity, no NaN for huge attempts");
  t.equal(backoffMs(-3, o), 100, "a negative attempt counts as 0");
  t.equal(backoffMs(Number.NaN, o), 100, "NaN counts as 0");
  t.equal(backoffMs(2.7, o), 400, "a fractional attempt counts as its floor");
  t.equal(backoffMs(1e6, { baseMs: 0, maxMs: 5 }), 0, "a zero base stays 0");
});

t.test("keeps every caller's delays as they were", async (t) => {
  for (let a = 0; a <= 40; a++) {
    // actors/user-shard.ts, a failed directory read or publish (attempt from 1)
    t.equal(backoffMs(a, { baseMs: 100, maxMs: 5000 }), Math.min(5000, 100 * 2 ** Math.min(a, 6)), `shard retry ${a}`);
    // lib/flow/lanes.ts, nak delay by delivery count
    t.equal(backoffMs(a, { baseMs: 500, maxMs: 30_000 }), Math.min(30_000, 500 * 2 ** Math.min(a, 6)), `nak delay ${a}`);
    // lib/infra/topology.ts, waiting for `nfx init` (attempt from 0)
    t.equal(backoffMs(a, { baseMs: 250, maxMs: 5000 }), Math.min(250 * 2 ** a, 5000), `topology wait ${a}`);
    // lib/infra/nats.ts, start-up connect (attempt from 1)
    if (a >= 1) t.equal(startupBackoffMs(a), Math.min(250 * 2 ** Math.min(a - 1, 10), 5000), `nats start-up ${a}`);
    // lib/gateway/retry-policy.ts, the doubling under the jitter (attempt from 1; default gateways.retry)
    t.equal(backoffMs(a - 1, { baseMs: 1000, maxMs: 300_000 }), Math.min(300_000, 1000 * 2 ** Math.max(0, a - 1)), `provider retry ${a}`);
  }
});
