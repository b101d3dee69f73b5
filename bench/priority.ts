// bench:priority — critical latency (in-app over WebSocket and push at the sandbox) idle and under a full-speed 1M-user bulk campaign, bulk throughput with and without the urgent stream, per-stage split, lost and duplicated sends.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

import WebSocket from "ws";

import type { ProcessSpec } from "../cmd/roles.js";
import type { CampaignStatus } from "../lib/campaign/campaigns.js";
import { decode, decodeJson } from "../lib/core/codec.js";
import { hash53 } from "../lib/core/hash53.js";
import { ADMISSION, API } from "../lib/core/subjects.js";
import type { SendBatch } from "../lib/core/types.js";
import { writeUsers } from "../lib/directory/directory.js";
import { UserTokens } from "../lib/inapp/ws-token.js";
import { listProcesses } from "../lib/infra/processes.js";
import { callApi, notify } from "../lib/intake/api-client.js";
import type { Delivery } from "../sandbox/recorder.js";
import { type BenchCluster, seedSyntheticUsers, startBenchCluster } from "./harness.js";
import { cpuSecs, hwm } from "./proc-stats.js";
import { report } from "./report.js";

const { values } = parseArgs({
  options: {
    users: { type: "string", default: "1000000" },
    isolation: { type: "string", default: "on" },
    gateways: { type: "string", default: "split" },
    admission: { type: "string", default: "on" },
    "critical-rate": { type: "string", default: "20" },
    "high-rate": { type: "string", default: "20" },
    "idle-secs": { type: "string", default: "20" },
    "window-secs": { type: "string", default: "8" },
    "campaign-secs": { type: "string", default: "300" },
    "probe-timeout-ms": { type: "string", default: "5000" },
    "deadline-min": { type: "string", default: "25" },
  },
});
const USERS = Number(values.users);
const ISOLATION = values.isolation !== "off";
const SPLIT_GW = values.gateways === "split";
const CRIT_RATE = Number(values["critical-rate"]);
const HIGH_RATE = Number(values["high-rate"]);
const IDLE_SECS = Number(values["idle-secs"]);
const WINDOW_SECS = Number(values["window-secs"]);
const CAMPAIGN_SECS = Number(values["campaign-secs"]);
const PROBE_TIMEOUT = Number(values["probe-timeout-ms"]);
const DEADLINE_MS = Number(values["deadline-min"]) * 60_000;
if (!(USERS > 0 && CRIT_RATE > 0 && HIGH_RATE >= 0 && IDLE_SECS > 0 && WINDOW_SECS > 0 && CAMPAIGN_SECS > 0)) throw new Error("flags: --users, --critical-rate, --idle-secs, --window-secs, --campaign-secs must be > 0");
if (!["shared", "split"].includes(values.gateways)) throw new Error("--gateways: shared or split");
if (!["on", "off"].includes(values.admission)) throw new Error("--admission: on or off");

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const round = (x: number, d = 1): number => Number(x.toFixed(d));
/** The p-th percentile of `xs` (nearest rank); null when there are none. */
const pct = (xs: readonly number[], p: number): number | null => {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return round(s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))], 2);
};
const worse = (a: number | null, b: number | null): number | null => (a === null ? b : b === null ? a : Math.max(a, b));
/** Nice value of a process from /proc (field 19); null when it is gone. */
const niceOfPid = (pid: number | undefined): number | null => {
  try {
    return Number(readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ")[16]);
  } catch {
    return null;
  }
};

const GATEWAYS: ProcessSpec[] = ISOLATION && SPLIT_GW ? ["gateway-apns@urgent", "gateway-apns@bulk", "gateway-fcm@urgent", "gateway-fcm@bulk"] : ["gateway-apns", "gateway-fcm"];
const ROLES: ProcessSpec[] = ["ingest", "scheduler", "router", "campaign", ...(ISOLATION ? (["shard@urgent", "shard@bulk"] as const) : (["shard"] as const)), ...GATEWAYS, "tracker", "ws-gateway"];
const OVERRIDES: Record<string, unknown> = {
  ingest: { channels: ["push", "inapp"] },
  ws: { idleTimeoutSec: 120 },
  campaign: { defaultRate: 0 },
  ...(ISOLATION ? (values.admission === "off" ? { lanes: { admission: { enabled: false } } } : {}) : { lanes: { nice: { urgent: 0, bulk: 0, other: 0, servers: 0 }, admission: { enabled: false } } }),
};

type Path = "inapp" | "push";
type Prio = "critical" | "high";
type Phase = "warmup" | "idle" | "loaded";
/** One urgent probe: when it was requested and when each stage saw it (performance.now() ms). */
interface Probe {
  k: number;
  prio: Prio;
  path: Path;
  phase: Phase;
  start: number;
  nid?: string;
  reply?: number;
  error?: string;
}

let bench: BenchCluster | null = null;
let closing: Promise<void> | null = null;
const closeAll = (): Promise<void> => (closing ??= (async () => { await bench?.close().catch((err) => console.error("close failed", err)); })());
const wsClients: WebSocket[] = [];
/** False once the probe sockets are being closed on purpose (no reconnect then). */
let wsOpen = true;
const dropClients = (): void => {
  wsOpen = false;
  for (const w of wsClients) w.terminate();
};

let result: Record<string, unknown> = {};
let failed = false;
try {
  console.error(`roles: ${ROLES.join(" ")}`);
  // Ctrl-C, a failure or the deadline: probe sockets dropped, then the cluster stopped (bench/harness.ts).
  bench = await startBenchCluster("priority", ROLES, true, OVERRIDES, { deadlineMin: DEADLINE_MS / 60_000, onEnd: dropClients });
  const { cluster, nats, redis } = bench;
  const cfg = cluster.cfg;
  const sandbox = cluster.sandbox!;

  // Arrivals at the sandbox: probes by notification id (each a Set of times to see duplicates), campaign sends counted and checked for duplicates per token.
  let campaignId = "";
  let campaignAccepted = 0;
  let campaignDup = 0;
  const campaignTokens = new Set<number>();
  const pushArrivals = new Map<string, number[]>();
  const recorder = sandbox.recorder;
  // The recorder keeps every delivery object; at a million sends that is gigabytes in this process, so only counts are kept here.
  recorder.record = (d: Delivery): void => {
    if (d.status < 200 || d.status >= 300) {
      recorder.deliveries.push(d);
      return;
    }
    recorder.acceptedCount[d.provider]++;
    const now = performance.now();
    if (d.nid !== undefined && d.nid === campaignId) {
      campaignAccepted++;
      const h = hash53(`${d.provider}|${d.token}`);
      if (campaignTokens.has(h)) campaignDup++;
      else campaignTokens.add(h);
    } else if (d.nid !== undefined) {
      const a = pushArrivals.get(d.nid);
      if (a) a.push(now);
      else pushArrivals.set(d.nid, [now]);
    }
  };

  // Probe users: in-app ones connected over WebSocket from this process, push-only ones with one device each (iOS and Android alternately).
  const N_PROBE = 10;
  const inappUsers = Array.from({ length: N_PROBE }, (_, i) => `probe-ws-${i}`);
  const pushUsers = Array.from({ length: N_PROBE }, (_, i) => `probe-push-${i}`);
  await writeUsers(redis, cfg.cluster.shards, [
    ...inappUsers.map((id) => ({ id, devices: [] })),
    ...pushUsers.map((id, i) => ({
      id,
      devices: [
        i % 2 === 0
          ? { id: "ios-0", platform: "ios" as const, token: (i.toString(16) + "ab").repeat(32).slice(0, 64), app: "com.example.app" }
          : { id: "android-0", platform: "android" as const, token: `probe${i}:APA91b${"x".repeat(134)}`, app: "com.example.app" },
      ],
    })),
  ]);
  const wsArrivals = new Map<string, number[]>();
  const tokens = new UserTokens(cfg.ws.secret);
  const url = `ws://${cfg.ws.host}:${cfg.ws.port}/v1/ws`;
  // Each probe socket reconnects when it closes (and the closes are counted): a client that lost its socket cannot receive live sends.
  let wsCloses = 0;
  const connectProbe = async (u: string): Promise<void> => {
    const ws = new WebSocket(`${url}?token=${await tokens.mint(u, 7200)}`);
    wsClients.push(ws);
    await new Promise<void>((res, rej) => {
      ws.on("message", (d) => {
        const m = JSON.parse((d as Buffer).toString()) as { t: string; id?: string };
        if (m.t !== "n" || !m.id) return;
        const now = performance.now();
        const a = wsArrivals.get(m.id);
        if (a) a.push(now);
        else wsArrivals.set(m.id, [now]);
        ws.send(JSON.stringify({ t: "ack", id: m.id }));
      });
      ws.once("open", () => {
        ws.once("close", (code) => {
          if (!wsOpen) return;
          wsCloses++;
          console.error(`probe socket of ${u} closed (${code}); reconnecting`);
          setTimeout(() => void connectProbe(u).catch((err: Error) => console.error(`reconnect of ${u} failed: ${err.message}`)), 100);
        });
        res();
      });
      ws.once("error", rej);
    });
  };

  // Where the time goes: the router's fan chunk and the shard's send batch of each urgent notification, as JetStream publishes seen on core NATS.
  const fanAt = new Map<string, number>();
  const batchAt = new Map<string, number>();
  const subs = [
    ...(["critical", "high"] as const).map((p) =>
      nats.nc.subscribe(`nfx.fan.${p}.*`, {
        callback: (_e, m) => {
          const nid = m.headers?.get("Nats-Msg-Id")?.split(":")[1];
          if (nid && !fanAt.has(nid)) fanAt.set(nid, performance.now());
        },
      }),
    ),
    ...(["apns", "fcm", "inapp"] as const).flatMap((ch) =>
      (["critical", "high"] as const).map((p) =>
        nats.nc.subscribe(`nfx.send.${ch}.${p}`, {
          callback: (_e, m) => {
            const now = performance.now();
            for (const s of decode<SendBatch>(m.data).sends) if (!batchAt.has(s.nid)) batchAt.set(s.nid, now);
          },
        }),
      ),
    ),
  ];
  const pidNameOf = (pid: number): string => [...cluster.procs.entries()].find(([, p]) => p.pid === pid)?.[0] ?? String(pid);
  // Admission control's input: the urgent-lane latency reports (worst signal per stage while loaded).
  const reports: { stage: string; signal: number; at: number }[] = [];
  const bySrc: Record<string, { reports: number; max_p99: number; max_waiting: number; waiting_over_5s: number }> = {};
  subs.push(
    nats.nc.subscribe(ADMISSION.all, {
      callback: (_e, m) => {
        try {
          const r = decodeJson<{ src: string; stage: string; p99: number; waiting: number; n: number }>(m.data);
          const key = `${r.stage}/${r.src.replace(/^.*-(\d+)-([a-z-]+)$/, (_x, pid: string, part: string) => `${pidNameOf(Number(pid))}/${part}`)}`;
          const b = (bySrc[key] ??= { reports: 0, max_p99: 0, max_waiting: 0, waiting_over_5s: 0 });
          b.reports++;
          b.max_p99 = Math.max(b.max_p99, r.p99);
          b.max_waiting = Math.max(b.max_waiting, r.waiting);
          if (r.waiting > 5000) b.waiting_over_5s++;
          if (r.n > 0 || r.waiting > 0) reports.push({ stage: r.stage, signal: Math.max(r.p99, r.waiting), at: performance.now() });
        } catch {
          /* not a report */
        }
      },
    }),
  );

  // The urgent stream: a fixed schedule (not waiting for arrivals), critical and high each alternating in-app and push.
  const probes: Probe[] = [];
  let phase: Phase = "warmup";
  let streaming = false;
  const counters = { critical: 0, high: 0 };
  const fire = (prio: Prio): void => {
    const n = counters[prio]++;
    const path: Path = n % 2 === 0 ? "inapp" : "push";
    const k = probes.length;
    const user = path === "inapp" ? inappUsers[(n >> 1) % N_PROBE] : pushUsers[(n >> 1) % N_PROBE];
    const category = prio === "critical" ? "security" : "transactional";
    const content = path === "inapp" ? { inapp: { payload: { k } } } : { push: { title: "Sign-in", body: `probe ${k}` } };
    const p: Probe = { k, prio, path, phase, start: performance.now() };
    probes.push(p);
    notify(nats.nc, { recipients: [user], category, priority: prio, channels: [path], content }, { timeoutMs: PROBE_TIMEOUT })
      .then(({ id }) => {
        p.nid = id;
        p.reply = performance.now();
      })
      .catch((err: Error) => {
        p.error = err.message;
      });
  };
  const stream = (prio: Prio, rate: number): void => {
    if (rate <= 0) return;
    const every = 1000 / rate;
    let next = performance.now();
    const tick = (): void => {
      if (!streaming) return;
      fire(prio);
      next += every;
      setTimeout(tick, Math.max(0, next - performance.now()));
    };
    tick();
  };
  const startStream = (): void => {
    if (streaming) return;
    streaming = true;
    stream("critical", CRIT_RATE);
    // Offset the high stream by half a period so the two do not fire together.
    setTimeout(() => stream("high", HIGH_RATE), 500 / Math.max(CRIT_RATE, HIGH_RATE));
  };
  const stopStream = (): void => {
    streaming = false;
  };

  const procs = (): { name: string; pid: number | undefined }[] => [
    ...[...cluster.procs.entries()].map(([name, p]) => ({ name, pid: p.pid })),
    { name: "nats-server", pid: cluster.nats.proc.pid },
    { name: "redis-server", pid: cluster.redis.proc.pid },
    { name: "bench+sandbox", pid: process.pid },
  ];
  const cpuSnap = (): Record<string, number> => Object.fromEntries(procs().map((p) => [p.name, cpuSecs(p.pid)]));
  const cpuDelta = (a: Record<string, number>, b: Record<string, number>): Record<string, number> => Object.fromEntries(Object.keys(b).map((k) => [k, round(b[k] - (a[k] ?? 0))]));

  // Seed the directory as bench:ws does.
  const seedStart = performance.now();
  await seedSyntheticUsers(redis, cfg.cluster.shards, USERS);
  console.error(`seeded ${USERS} users in ${((performance.now() - seedStart) / 1000).toFixed(1)} s`);
  // Probe sockets open only now: a long seeding (minutes on a busy machine) must not outlast the gateway's idle timeout.
  for (const u of inappUsers) await connectProbe(u);
  await sleep(500);

  // Phase 1: idle (no campaign). A short warm-up, then the measured stream.
  startStream();
  await sleep(3000);
  stopStream();
  await sleep(PROBE_TIMEOUT);
  phase = "idle";
  const cpuIdle0 = cpuSnap();
  const idleT0 = performance.now();
  startStream();
  await sleep(IDLE_SECS * 1000);
  stopStream();
  const idleSecs = (performance.now() - idleT0) / 1000;
  const cpuIdle = cpuDelta(cpuIdle0, cpuSnap());
  await sleep(Math.min(PROBE_TIMEOUT, 2000));
  console.error(`idle phase: ${probes.filter((p) => p.phase === "idle").length} probes in ${idleSecs.toFixed(1)} s`);

  // Phase 2: the campaign at full speed; windows without and with the urgent stream alternate while it runs.
  phase = "loaded";
  const cpuLoad0 = cpuSnap();
  const campaignT0 = performance.now();
  ({ id: campaignId } = await notify(nats.nc, { segment: "all", category: "marketing", priority: "bulk", content: { push: { title: "Sale starts", body: "Everything 20% off until midnight" } } }));
  console.error(`campaign ${campaignId} started`);
  // Admission control as the processes report it in their metrics: the least factor seen per (process, part), and throttled seconds at the end.
  const pidName = new Map(procs().map((p) => [p.pid, p.name]));
  const minFactor: Record<string, number> = {};
  const throttledSecs: Record<string, number> = {};
  const scrape = async (): Promise<void> => {
    for (const info of await listProcesses(nats).catch(() => [])) {
      if (!info.metricsUrl) continue;
      const text = await fetch(info.metricsUrl, { signal: AbortSignal.timeout(3000) }).then((r) => r.text()).catch(() => "");
      const who = pidName.get(info.pid) ?? String(info.pid);
      for (const m of text.matchAll(/^nfx_(admission_factor|bulk_throttled_seconds_total)\{[^}]*part="([^"]+)"[^}]*\} ([-+\d.eE]+)$/gm)) {
        const key = `${who}/${m[2]}`;
        const v = Number(m[3]);
        if (m[1] === "admission_factor") minFactor[key] = Math.min(minFactor[key] ?? 1, v);
        else throttledSecs[key] = round(v, 2);
      }
    }
  };
  let status: CampaignStatus | null = null;
  let statusErr = 0;
  let polling = true;
  const poller = (async () => {
    while (polling) {
      try {
        status = await callApi<CampaignStatus>(nats.nc, API.campaign, { id: campaignId, action: "status" }, 10_000);
      } catch {
        statusErr++;
      }
      await scrape();
      await sleep(2000);
    }
  })();
  while (campaignAccepted === 0 && performance.now() - campaignT0 < 60_000) await sleep(20);
  const firstSendMs = performance.now() - campaignT0;
  await sleep(2000); // past the first ramp-up
  const windows: { urgent: boolean; secs: number; sends: number; per_s: number }[] = [];
  let on = false;
  const stopAt = campaignT0 + CAMPAIGN_SECS * 1000;
  for (;;) {
    const s = status as CampaignStatus | null;
    if (s?.complete || performance.now() + WINDOW_SECS * 1000 > stopAt) break;
    if (on) startStream();
    const a0 = campaignAccepted;
    const t0 = performance.now();
    await sleep(WINDOW_SECS * 1000);
    stopStream();
    const secs = (performance.now() - t0) / 1000;
    const sends = campaignAccepted - a0;
    windows.push({ urgent: on, secs: round(secs, 2), sends, per_s: Math.round(sends / secs) });
    console.error(`window ${windows.length} urgent=${on}: ${Math.round(sends / secs)} campaign sends/s; campaign ${(status as CampaignStatus | null)?.state ?? "?"} ${campaignAccepted} accepted`);
    // A window that ends with the campaign drained (no sends in it) does not count.
    if (sends === 0) {
      windows.pop();
      break;
    }
    on = !on;
  }
  const loadedSecs = (performance.now() - campaignT0) / 1000;
  const cpuLoaded = cpuDelta(cpuLoad0, cpuSnap());
  await sleep(PROBE_TIMEOUT);
  polling = false;
  await poller;
  const finalStatus = status as CampaignStatus | null;
  const complete = finalStatus?.complete ?? false;
  if (!complete) {
    await callApi(nats.nc, API.campaign, { id: campaignId, action: "cancel" }, 10_000).catch((err: Error) => console.error(`cancel failed: ${err.message}`));
  }
  for (const s of subs) s.unsubscribe();
  dropClients();

  // Results. A probe is lost when it did not arrive within the timeout (an error reply counts as lost too); dup when it arrived twice.
  const arrivalsOf = (p: Probe): number[] => (p.nid ? ((p.path === "inapp" ? wsArrivals : pushArrivals).get(p.nid) ?? []) : []);
  const stats = (sel: Probe[]) => {
    const lat: number[] = [];
    let lost = 0;
    let dup = 0;
    let late = 0;
    let errors = 0;
    let lateMax = 0;
    const toFan: number[] = [];
    const fanToBatch: number[] = [];
    const batchToArrival: number[] = [];
    const toReply: number[] = [];
    for (const p of sel) {
      const arr = arrivalsOf(p);
      if (p.error !== undefined) errors++;
      if (arr.length > 1) dup += arr.length - 1;
      const first = arr.length ? Math.min(...arr) : undefined;
      if (first === undefined || first - p.start > PROBE_TIMEOUT) {
        lost++;
        if (first !== undefined) {
          late++;
          lateMax = Math.max(lateMax, first - p.start);
        }
        continue;
      }
      lat.push(first - p.start);
      if (p.reply !== undefined) toReply.push(p.reply - p.start);
      const f = p.nid ? fanAt.get(p.nid) : undefined;
      const b = p.nid ? batchAt.get(p.nid) : undefined;
      if (f !== undefined && b !== undefined) {
        toFan.push(f - p.start);
        fanToBatch.push(b - f);
        batchToArrival.push(first - b);
      }
    }
    return {
      n: sel.length, p50_ms: pct(lat, 50), p99_ms: pct(lat, 99), max_ms: lat.length ? round(Math.max(...lat), 1) : null, lost, late, late_max_ms: round(lateMax), errors, dup,
      split_ms: {
        request_to_fan: { p50: pct(toFan, 50), p99: pct(toFan, 99) },
        fan_to_send_batch: { p50: pct(fanToBatch, 50), p99: pct(fanToBatch, 99) },
        send_batch_to_arrival: { p50: pct(batchToArrival, 50), p99: pct(batchToArrival, 99) },
        request_to_reply: { p50: pct(toReply, 50), p99: pct(toReply, 99) },
      },
    };
  };
  const sel = (ph: Phase, prio?: Prio, path?: Path): Probe[] => probes.filter((p) => p.phase === ph && (!prio || p.prio === prio) && (!path || p.path === path));
  const idle = { critical: stats(sel("idle", "critical")), critical_inapp: stats(sel("idle", "critical", "inapp")), critical_push: stats(sel("idle", "critical", "push")), high: stats(sel("idle", "high")) };
  const loaded = { critical: stats(sel("loaded", "critical")), critical_inapp: stats(sel("loaded", "critical", "inapp")), critical_push: stats(sel("loaded", "critical", "push")), high: stats(sel("loaded", "high")), high_inapp: stats(sel("loaded", "high", "inapp")), high_push: stats(sel("loaded", "high", "push")) };
  const rate = (ws: typeof windows): number | null => {
    const secs = ws.reduce((a, w) => a + w.secs, 0);
    return secs > 0 ? Math.round(ws.reduce((a, w) => a + w.sends, 0) / secs) : null;
  };
  const without = rate(windows.filter((w) => !w.urgent));
  const withUrgent = rate(windows.filter((w) => w.urgent));
  const loadedReports = reports.filter((r) => r.at >= campaignT0);
  const all = [...sel("idle"), ...sel("loaded")];
  const allStats = stats(all);
  const campCounters = (finalStatus)?.counters as unknown as Record<string, unknown> | undefined;
  const sum = (o: unknown): number => (typeof o === "number" ? o : o && typeof o === "object" ? Object.values(o).reduce<number>((a, v) => a + sum(v), 0) : 0);
  await scrape();

  result = {
    bench: "priority",
    isolation: ISOLATION ? "on" : "off",
    admission: ISOLATION && values.admission !== "off" ? "on" : "off",
    gateways: ISOLATION && SPLIT_GW ? "split" : "shared",
    roles: ROLES,
    users: USERS,
    urgent_rate_per_s: { critical: CRIT_RATE, high: HIGH_RATE },
    critical_p50_ms: worse(loaded.critical_inapp.p50_ms, loaded.critical_push.p50_ms),
    critical_p99_ms: worse(loaded.critical_inapp.p99_ms, loaded.critical_push.p99_ms),
    critical_p50_ms_idle: worse(idle.critical_inapp.p50_ms, idle.critical_push.p50_ms),
    critical_p99_ms_idle: worse(idle.critical_inapp.p99_ms, idle.critical_push.p99_ms),
    bulk_sends_per_s: withUrgent,
    bulk_sends_per_s_without_urgent: without,
    bulk_ratio: withUrgent !== null && without ? round(withUrgent / without, 3) : null,
    shed: campCounters ? sum(campCounters.shed) : null,
    shed_sends: campCounters ? sum(campCounters.shedSends) : null,
    lost: allStats.lost,
    ws_probe_closes: wsCloses,
    lost_never_arrived: allStats.lost - allStats.late,
    dup: allStats.dup,
    campaign_dup: campaignDup,
    targets: { critical_p99_ms: 50, critical_p99_ms_idle: 15, bulk_ratio: 0.8 },
    loaded,
    idle,
    windows,
    campaign: {
      id: campaignId,
      complete,
      state: finalStatus?.state ?? null,
      members: finalStatus?.members ?? null,
      counters: campCounters ?? null,
      throttle: finalStatus?.throttle ?? null,
      accepted_at_sandbox: campaignAccepted,
      first_send_ms: Math.round(firstSendMs),
      measured_secs: round(loadedSecs),
      status_errors: statusErr,
    },
    admission_factor_min: minFactor,
    bulk_throttled_secs: throttledSecs,
    admission_reports: {
      count: loadedReports.length,
      signal_p50_ms: pct(loadedReports.map((r) => r.signal), 50),
      signal_max_ms: loadedReports.length ? Math.max(...loadedReports.map((r) => r.signal)) : null,
      by_source: bySrc,
    },
    nice: Object.fromEntries(procs().map((p) => [p.name, niceOfPid(p.pid)])),
    cpu_secs: { idle: cpuIdle, idle_secs: round(idleSecs), loaded: cpuLoaded, loaded_secs: round(loadedSecs) },
    peak_rss_mb: Object.fromEntries(procs().map((p) => [p.name, hwm(p.pid)])),
    note: "2-core machine shared with other work; the sandbox providers and the probe clients run in the bench process",
  };
} catch (err) {
  failed = true;
  console.error("bench:priority failed:", err);
} finally {
  dropClients();
  await closeAll();
}
if (failed) process.exit(1);
report("priority", result);
process.exit(0);
