// `nfx top`: a live terminal view of stage rates, gateway sends and latency, consumer lag and breakers across every process.
import { PRIORITIES, type Priority } from "../lib/core/subjects.js";
import { type ConsumerLag, readLag } from "../lib/infra/metrics.js";
import type { Nats } from "../lib/infra/nats.js";
import { listProcesses, type ProcessInfo } from "../lib/infra/processes.js";
import { breakersOf, type BreakerView, type MetricJson, scrapeProcesses } from "../lib/tracking/delivery-log.js";

/** One sample of the whole cluster. */
export interface TopSample {
  at: number;
  processes: (ProcessInfo & { rssBytes?: number })[];
  /** Counter values summed over processes, by series key. */
  counters: Map<string, number>;
  /** Latency histogram bucket counts summed over processes: channel -> (le -> count). */
  latency: Map<string, Map<number, number>>;
  lag: ConsumerLag[];
  breakers: BreakerView[];
  /** End-to-end latency bucket counts summed over processes: `<stage>|<priority>` -> (le -> count). */
  lanes: Map<string, Map<number, number>>;
  /** Least admission factor per bulk consumer kind (campaign, shard, gateway-apns, ...) over processes. */
  admission: Map<string, number>;
}

/** What `nfx top` shows, computed from two samples. */
export interface TopView {
  at: number;
  processes: { role: string; pid: number; host: string; uptimeSec: number; rssMb?: number }[];
  stages: { stage: string; perSec: number; total: number }[];
  gateways: { channel: string; app: string; sentPerSec: number; failedPerSec: number; retryablePerSec: number; refusedPerSec: number }[];
  latency: { channel: string; p50Ms: number | null; p99Ms: number | null }[];
  lag: ConsumerLag[];
  breakers: BreakerView[];
  /** Per priority lane: latency from acceptance to decided and to delivered (p50/p99 in the interval), consumer lag, sends shed per second. */
  lanes: { priority: Priority; decidedP50Ms: number | null; decidedP99Ms: number | null; deliveredP50Ms: number | null; deliveredP99Ms: number | null; pending: number; shedPerSec: number }[];
  /** Admission factor per bulk consumer kind (1 = not throttled). */
  admission: { part: string; factor: number }[];
}

const series = (name: string, labels: Record<string, string | number>): string => `${name}|${Object.entries(labels).sort().map(([k, v]) => `${k}=${v}`).join(",")}`;

/** Takes one sample: the process registry, each process's metrics, JetStream consumer lag. */
export async function sampleCluster(n: Nats): Promise<TopSample> {
  const [processes, lag] = await Promise.all([listProcesses(n), readLag(n)]);
  const scraped = await scrapeProcesses(processes);
  const counters = new Map<string, number>();
  const latency = new Map<string, Map<number, number>>();
  const rss = new Map<string, number>();
  const lanes = new Map<string, Map<number, number>>();
  const admission = new Map<string, number>();
  for (const s of scraped) {
    for (const m of s.metrics) {
      if (m.name === "nfx_lane_latency_seconds") {
        for (const v of m.values as (MetricJson["values"][number] & { metricName?: string })[]) {
          if (v.metricName !== "nfx_lane_latency_seconds_bucket") continue;
          const k = `${String(v.labels.stage)}|${String(v.labels.priority)}`;
          const le = v.labels.le === "+Inf" ? Infinity : Number(v.labels.le);
          let h = lanes.get(k);
          if (!h) lanes.set(k, (h = new Map<number, number>()));
          h.set(le, (h.get(le) ?? 0) + v.value);
        }
      } else if (m.name === "nfx_admission_factor") {
        for (const v of m.values) admission.set(String(v.labels.part), Math.min(admission.get(String(v.labels.part)) ?? 1, v.value));
      } else if (m.name === "nfx_stage_items_total" || m.name === "nfx_gateway_sends_total" || m.name === "nfx_shed_total") {
        for (const v of m.values) {
          const { role: _r, ...labels } = v.labels;
          const k = series(m.name, labels);
          counters.set(k, (counters.get(k) ?? 0) + v.value);
        }
      } else if (m.name === "nfx_gateway_request_seconds") {
        for (const v of m.values as (MetricJson["values"][number] & { metricName?: string })[]) {
          if (v.metricName !== "nfx_gateway_request_seconds_bucket") continue;
          const ch = String(v.labels.channel);
          const le = v.labels.le === "+Inf" ? Infinity : Number(v.labels.le);
          let h = latency.get(ch);
          if (!h) latency.set(ch, (h = new Map<number, number>()));
          h.set(le, (h.get(le) ?? 0) + v.value);
        }
      } else if (m.name === "nfx_process_resident_memory_bytes") {
        rss.set(s.process.id, m.values[0]?.value ?? 0);
      }
    }
  }
  return {
    at: Date.now(),
    processes: processes.map((p) => ({ ...p, ...(rss.has(p.id) ? { rssBytes: rss.get(p.id)! } : {}) })),
    counters, latency, lag: lag.consumers, breakers: breakersOf(scraped), lanes, admission,
  };
}

/** The `q` quantile (ms) of a cumulative histogram's increase between two samples, or null when nothing was observed. */
function quantile(prev: Map<number, number> | undefined, cur: Map<number, number> | undefined, q: number): number | null {
  if (!cur) return null;
  const les = [...cur.keys()].sort((a, b) => a - b);
  const d = les.map((le) => (cur.get(le) ?? 0) - (prev?.get(le) ?? 0));
  const count = d[d.length - 1] ?? 0;
  if (count <= 0) return null;
  const target = q * count;
  for (let i = 0; i < les.length; i++) if (d[i] >= target) return les[i] === Infinity ? les[i - 1] * 1000 : les[i] * 1000;
  return null;
}

/** Rates between two samples (per second), plus the latest state. */
export function topView(prev: TopSample, cur: TopSample): TopView {
  const dt = Math.max(0.001, (cur.at - prev.at) / 1000);
  const rate = (k: string): number => Math.max(0, ((cur.counters.get(k) ?? 0) - (prev.counters.get(k) ?? 0)) / dt);
  const stages: TopView["stages"] = [];
  const gw = new Map<string, TopView["gateways"][number]>();
  for (const k of cur.counters.keys()) {
    const [name, lbl] = k.split("|") as [string, string];
    const labels = Object.fromEntries(lbl.split(",").filter(Boolean).map((x) => x.split("=") as [string, string]));
    if (name === "nfx_shed_total") continue;
    if (name === "nfx_stage_items_total") stages.push({ stage: labels.stage, perSec: rate(k), total: cur.counters.get(k)! });
    else if (labels.app !== "-") {
      const id = `${labels.channel}|${labels.app}`;
      let g = gw.get(id);
      if (!g) gw.set(id, (g = { channel: labels.channel, app: labels.app, sentPerSec: 0, failedPerSec: 0, retryablePerSec: 0, refusedPerSec: 0 }));
      const r = rate(k);
      if (labels.outcome === "sent") g.sentPerSec += r;
      else if (labels.outcome === "failed") g.failedPerSec += r;
      else if (labels.outcome === "retryable") g.retryablePerSec += r;
      else if (labels.outcome === "refused") g.refusedPerSec += r;
    }
  }
  const order = ["ingest", "router", "shard", "gateway-apns", "gateway-fcm", "gateway-email", "gateway-sms", "inapp", "tracker"];
  stages.sort((a, b) => order.indexOf(a.stage) - order.indexOf(b.stage));
  return {
    at: cur.at,
    processes: cur.processes.map((p) => ({ role: p.roles.join("+"), pid: p.pid, host: p.host, uptimeSec: Math.round((cur.at - p.startedAt) / 1000), ...(p.rssBytes ? { rssMb: Math.round(p.rssBytes / 1048576) } : {}) })),
    stages,
    gateways: [...gw.values()].sort((a, b) => `${a.channel}${a.app}`.localeCompare(`${b.channel}${b.app}`)),
    latency: [...cur.latency.keys()].sort().map((ch) => ({ channel: ch, p50Ms: quantile(prev.latency.get(ch), cur.latency.get(ch), 0.5), p99Ms: quantile(prev.latency.get(ch), cur.latency.get(ch), 0.99) })),
    lag: cur.lag,
    breakers: cur.breakers,
    lanes: PRIORITIES.map((p) => {
      const q = (stage: string, x: number): number | null => quantile(prev.lanes.get(`${stage}|${p}`), cur.lanes.get(`${stage}|${p}`), x);
      let shed = 0;
      for (const k of cur.counters.keys()) if (k.startsWith("nfx_shed_total|") && k.includes(`priority=${p}`)) shed += rate(k);
      return {
        priority: p, decidedP50Ms: q("decided", 0.5), decidedP99Ms: q("decided", 0.99), deliveredP50Ms: q("delivered", 0.5), deliveredP99Ms: q("delivered", 0.99),
        pending: cur.lag.filter((c) => c.priority === p).reduce((a, c) => a + c.pending, 0), shedPerSec: shed,
      };
    }),
    admission: [...cur.admission].sort(([a], [b]) => a.localeCompare(b)).map(([part, factor]) => ({ part, factor })),
  };
}

const num = (v: number): string => Math.round(v).toLocaleString("en-US");
const ms = (v: number | null): string => (v === null ? "-" : v < 1 ? "<1" : num(v));

/** The screen: plain text, one table per concern. */
export function renderTop(v: TopView): string {
  const out = [`nfx top  ${new Date(v.at).toISOString()}  ${v.processes.length} processes   (Ctrl-C quits)`, ""];
  out.push("STAGE            ITEMS/S        TOTAL");
  for (const s of v.stages) out.push(`${s.stage.padEnd(14)} ${num(s.perSec).padStart(9)} ${num(s.total).padStart(12)}`);
  if (v.stages.length === 0) out.push("(no stage has handled anything yet)");
  out.push("", "GATEWAY  APP                    SENT/S  FAILED/S  RETRY/S  REFUSED/S  BREAKER");
  for (const g of v.gateways) {
    const b = v.breakers.find((x) => x.channel === g.channel && x.app === g.app);
    out.push(`${g.channel.padEnd(8)} ${g.app.slice(0, 20).padEnd(20)} ${num(g.sentPerSec).padStart(8)} ${num(g.failedPerSec).padStart(9)} ${num(g.retryablePerSec).padStart(8)} ${num(g.refusedPerSec).padStart(10)}  ${b?.state ?? "-"}`);
  }
  for (const b of v.breakers) if (!v.gateways.some((g) => g.channel === b.channel && g.app === b.app)) out.push(`${b.channel.padEnd(8)} ${b.app.slice(0, 20).padEnd(20)} ${"0".padStart(8)} ${"0".padStart(9)} ${"0".padStart(8)} ${"0".padStart(10)}  ${b.state}`);
  out.push("", "LANE      DECIDED P50/P99 ms  DELIVERED P50/P99 ms   PENDING   SHED/S   (from acceptance, last interval)");
  for (const l of v.lanes) {
    out.push(`${l.priority.padEnd(8)} ${`${ms(l.decidedP50Ms)}/${ms(l.decidedP99Ms)}`.padStart(19)} ${`${ms(l.deliveredP50Ms)}/${ms(l.deliveredP99Ms)}`.padStart(21)} ${num(l.pending).padStart(9)} ${num(l.shedPerSec).padStart(8)}`);
  }
  if (v.admission.length) out.push(`bulk admission: ${v.admission.map((a) => `${a.part} ${a.factor.toFixed(2)}`).join(", ")}   (1.00 = not throttled)`);
  if (v.latency.length) {
    out.push("", "LATENCY  P50 ms  P99 ms   (provider requests in the last interval)");
    for (const l of v.latency) out.push(`${l.channel.padEnd(8)} ${ms(l.p50Ms).padStart(6)} ${ms(l.p99Ms).padStart(7)}`);
  }
  out.push("", "STREAM            CONSUMER               PRIO      PENDING  ACK PENDING");
  for (const c of v.lag.filter((x) => x.pending > 0 || x.ackPending > 0)) {
    out.push(`${c.stream.padEnd(17)} ${c.consumer.padEnd(22)} ${(c.priority ?? "-").padEnd(8)} ${num(c.pending).padStart(8)} ${num(c.ackPending).padStart(12)}`);
  }
  if (!v.lag.some((x) => x.pending > 0 || x.ackPending > 0)) out.push("(no consumer is behind)");
  out.push("", "ROLE                         PID  HOST              UPTIME    RSS MB");
  for (const p of v.processes) out.push(`${p.role.slice(0, 26).padEnd(26)} ${String(p.pid).padStart(6)}  ${p.host.slice(0, 16).padEnd(16)} ${`${p.uptimeSec}s`.padStart(7)} ${(p.rssMb !== undefined ? String(p.rssMb) : "-").padStart(9)}`);
  return out.join("\n");
}
