// `nfx top`'s lane table: per-priority latency quantiles from the histogram's increase between samples, lag per lane, shed rate and the admission factor.
import t from "tap";

import { renderTop, type TopSample, topView } from "../../cmd/top.js";

const hist = (counts: [number, number][]): Map<number, number> => new Map(counts);
const sample = (at: number, o: Partial<TopSample>): TopSample => ({ at, processes: [], counters: new Map(), latency: new Map(), lag: [], breakers: [], lanes: new Map(), admission: new Map(), ...o });

t.test("lanes: quantiles of the interval, pending by priority, shed per second, admission", async (t) => {
  const prev = sample(0, { lanes: new Map([["delivered|critical", hist([[0.01, 10], [0.05, 10], [0.1, 10], [Infinity, 10]])]]) });
  const cur = sample(2000, {
    lanes: new Map([
      ["delivered|critical", hist([[0.01, 108], [0.05, 110], [0.1, 110], [Infinity, 110]])],
      ["decided|bulk", hist([[0.01, 0], [0.05, 0], [0.1, 0], [Infinity, 50]])],
    ]),
    counters: new Map([["nfx_shed_total|priority=bulk,reason=max_delay,stage=shard", 400]]),
    lag: [{ stream: "NFX_SEND_APNS", consumer: "gw-apns-bulk", priority: "bulk", pending: 1200, ackPending: 4 }],
    admission: new Map([["campaign", 0.25], ["shard", 0.5]]),
  });
  const v = topView(prev, cur);
  const crit = v.lanes.find((l) => l.priority === "critical")!;
  t.equal(crit.deliveredP50Ms, 10, "p50 of the 100 new observations");
  t.equal(crit.deliveredP99Ms, 50, "p99 falls in the 50 ms bucket");
  t.equal(crit.decidedP99Ms, null, "nothing decided in the interval");
  const bulk = v.lanes.find((l) => l.priority === "bulk")!;
  t.equal(bulk.pending, 1200);
  t.equal(bulk.shedPerSec, 200, "400 shed over 2 s");
  t.equal(bulk.decidedP99Ms, 100, "beyond the last finite bucket: reported as that bucket");
  t.same(v.admission, [{ part: "campaign", factor: 0.25 }, { part: "shard", factor: 0.5 }]);
  const screen = renderTop(v);
  t.match(screen, /critical +-\/- +10\/50 +0 +0/);
  t.match(screen, "bulk admission: campaign 0.25, shard 0.50");
});
