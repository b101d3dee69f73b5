// Admission control's feedback: the factor halves while urgent latency is above target, grows back below it, never leaves [minFactor, 1], and pace() waits in proportion.
import t from "tap";

import { loadConfig } from "../../lib/core/config.js";
import { Admission, type LatencyReport } from "../../lib/flow/admission.js";

const cfg = loadConfig({ overrides: { lanes: { admission: { targetMs: 50, minFactor: 0.05, intervalMs: 250 } } }, env: {} });
const report = (src: string, p99: number, waiting = 0): LatencyReport => ({ src, stage: "delivered", p99, n: 10, waiting, at: 0 });

t.test("the factor follows urgent latency: down to 0.7·f above target, up to 1.5·f + 0.05 below 70% of it", async (t) => {
  const a = new Admission(null, cfg, "test");
  t.teardown(() => a.close());
  let now = 1_000_000;
  t.equal(a.factor, 1, "unthrottled at start");
  a.receive(report("gw", 200), now);
  a.tick(now);
  t.equal(a.factor, 0.7);
  for (let i = 0; i < 10; i++) {
    now += 250;
    a.receive(report("gw", 200), now);
    a.tick(now);
  }
  t.equal(a.factor, 0.05, "never below minFactor");
  t.equal(a.state().signal, 200);
  // Between 70% and 100% of the target: held.
  now += 250;
  a.receive(report("gw", 40), now);
  a.tick(now);
  t.equal(a.factor, 0.05, "held between 35 and 50 ms");
  now += 250;
  a.receive(report("gw", 10), now);
  a.tick(now);
  t.equal(a.factor, 0.125, "grows to 1.5·f + 0.05 below 35 ms");
  // The worst reporter counts, and an urgent item waiting long counts as latency even with no samples.
  a.receive(report("gw", 10), now);
  a.receive(report("shard", 0, 900), now);
  a.tick(now);
  t.equal(a.state().signal, 900, "a starved lane's waiting age is the signal");
  t.ok(a.factor < 0.125);
  // Reports older than three intervals are forgotten: with no urgent traffic the factor recovers to 1.
  now += 1000;
  for (let i = 0; i < 12; i++) a.tick((now += 250));
  t.equal(a.state().signal, null);
  t.equal(a.factor, 1, "recovers fully without urgent traffic");
});

t.test("pace waits workMs·(1/f − 1) and counts it; nothing at f = 1", async (t) => {
  const a = new Admission(null, cfg, "test");
  t.teardown(() => a.close());
  t.equal(await a.pace(100), 0, "no wait unthrottled");
  a.receive(report("gw", 500), Date.now());
  a.tick();
  t.equal(a.factor, 0.7);
  const waited = await a.pace(70);
  t.equal(Math.round(waited), 30, "at f = 0.7, 3/7 of the work's time");
  t.equal(a.state().throttledMs, 30);
});

t.test("disabled admission never throttles", async (t) => {
  const off = new Admission(null, loadConfig({ overrides: { lanes: { admission: { enabled: false } } }, env: {} }), "test");
  off.receive(report("gw", 10_000));
  off.tick();
  t.equal(off.factor, 1);
  t.equal(await off.pace(50), 0);
  off.close();
});
