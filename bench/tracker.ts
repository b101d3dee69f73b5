// bench:tracker — receipt entries folded per second by the tracker (counters, per-channel totals, and with or without the per-user log), from a backlog on NFX_RECEIPTS.
import { parseArgs } from "node:util";

import { readTotals } from "../lib/campaign/counters.js";
import { encode } from "../lib/core/codec.js";
import { BUCKET, receiptSubject } from "../lib/core/subjects.js";
import type { ReceiptBatch } from "../lib/core/types.js";
import { ensureTopology } from "../lib/infra/topology.js";
import { UserLog } from "../lib/tracking/user-log.js";
import { startBenchCluster } from "./harness.js";
import { cpuSecs } from "./proc-stats.js";
import { report } from "./report.js";

const { values } = parseArgs({ options: { entries: { type: "string", default: "1000000" }, notifications: { type: "string", default: "100" } } });
const E = Number(values.entries);
const NIDS = Number(values.notifications);
const PER_BATCH = 500;

/** One run: a backlog of E gateway receipt entries (sent, one per device, PER_BATCH per message) over NIDS notifications, then a tracker started on it. */
async function run(userLog: boolean): Promise<Record<string, number>> {
  const b = await startBenchCluster(`tracker-${userLog ? "log" : "nolog"}`, [], false, { tracker: { userLog } });
  try {
    await ensureTopology(b.nats, b.cluster.cfg);
    const at = Date.now();
    const pubs: Promise<unknown>[] = [];
    for (let i = 0, k = 0; i < E; i += PER_BATCH, k++) {
      const nid = `n_bench${String(k % NIDS).padStart(6, "0")}`;
      const entries = Array.from({ length: Math.min(PER_BATCH, E - i) }, (_, j) => ({ user: `u${i + j}`, outcome: "sent" as const, channel: "apns" as const, device: `d${i + j}`, providerId: "00000000-0000-0000-0000-000000000000", at }));
      const rb: ReceiptBatch = { type: "receipts", nid, stage: "gateway", entries };
      pubs.push(b.nats.js.publish(receiptSubject(nid), encode(rb), { msgID: `bench:${k}` }));
      if (pubs.length >= 256) await Promise.all(pubs.splice(0));
    }
    await Promise.all(pubs);
    const kv = await b.nats.kvm.open(BUCKET.counters);
    const t0 = performance.now();
    const p = await b.cluster.startRole("tracker");
    const cpu0 = cpuSecs(p.pid);
    let sent = 0;
    while (sent < E) {
      await new Promise((r) => setTimeout(r, 50));
      sent = (await readTotals(kv)).channels.push.sent;
      if (performance.now() - t0 > 600_000) throw new Error(`stuck at ${sent} of ${E}`);
    }
    const secs = (performance.now() - t0) / 1000;
    const cpu = cpuSecs(p.pid) - cpu0;
    // The log is written before the counters it goes with: u0's entry is there.
    const logged = userLog ? (await new UserLog(b.redis, b.cluster.cfg.cluster.shards).read("u0")).length : 0;
    return { entries: E, seconds: Math.round(secs * 100) / 100, entries_per_sec: Math.round(E / secs), tracker_cpu_us_per_entry: Math.round((cpu * 1e6) / E * 10) / 10, user_log_entries_of_u0: logged };
  } finally {
    await b.close();
  }
}

const withLog = await run(true);
const withoutLog = await run(false);
report("tracker", { bench: "tracker", notifications: NIDS, entries_per_batch: PER_BATCH, with_user_log: withLog, without_user_log: withoutLog });
