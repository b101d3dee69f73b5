// bench:ws — idle WebSocket connections held by the gateway (memory per connection) and critical in-app latency from producer request to client receipt, idle and during a 1M-recipient bulk campaign.
import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import WebSocket from "ws";

import { decode } from "../lib/core/codec.js";
import type { SendBatch } from "../lib/core/types.js";
import { writeUsers } from "../lib/directory/directory.js";
import { UserTokens } from "../lib/inapp/ws-token.js";
import { listProcesses } from "../lib/infra/processes.js";
import { notify } from "../lib/intake/api-client.js";
import { adopt, countDecided, seedSyntheticUsers, startBenchCluster, waitUntil } from "./harness.js";
import { cpuSecs, rssBytes } from "./proc-stats.js";
import { report } from "./report.js";

const { values } = parseArgs({
  options: {
    connections: { type: "string", default: "100000" },
    gateways: { type: "string", default: "7" },
    clients: { type: "string", default: "6" },
    sources: { type: "string", default: "8" },
    probes: { type: "string", default: "300" },
    users: { type: "string", default: "1000000" },
  },
});
const CONNS = Number(values.connections);
const GATEWAYS = Number(values.gateways);
const CLIENTS = Number(values.clients);
const SOURCES = Array.from({ length: Number(values.sources) }, (_, i) => `127.0.0.${i + 2}`);
const PROBES = Number(values.probes);
const USERS = Number(values.users);
const LOAD = fileURLToPath(new URL("./ws-load.js", import.meta.url));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return Number(s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))].toFixed(2));
};

const bench = await startBenchCluster("ws", ["ingest", "router", "campaign", "shard", "tracker", "ws-gateway"], false, {
  ingest: { channels: ["push", "inapp"] },
  // Load clients answer pings (ws does); a long idle timeout keeps 100k idle sockets from all being pinged at once.
  ws: { idleTimeoutSec: 120 },
});
const { cluster, nats, redis } = bench;
const clients: ChildProcess[] = [];
let result: Record<string, unknown> = {};
try {
  const cfg = cluster.cfg;
  // Each process may hold at most RLIMIT_NOFILE descriptors (20,000 here, not raisable without CAP_SYS_RESOURCE):
  // several gateway processes share the port (uWS listens with SO_REUSEPORT) and the kernel spreads connections over them.
  const gws = [cluster.procs.get("ws-gateway")!];
  for (let i = 1; i < GATEWAYS; i++) gws.push(await cluster.startExtra("ws-gateway"));
  await sleep(2000);
  // The first gateway's memory as its own metrics split it (V8 heap committed and used, external, array buffers), in MB.
  const gwMetrics = (await listProcesses(nats)).find((p) => p.pid === gws[0].pid)?.metricsUrl;
  const memSplit = async (): Promise<Record<string, number>> => {
    if (!gwMetrics) return {};
    const text = await (await fetch(gwMetrics)).text();
    const out: Record<string, number> = {};
    for (const k of ["process_resident_memory_bytes", "nodejs_heap_size_total_bytes", "nodejs_heap_size_used_bytes", "nodejs_external_memory_bytes"]) {
      const m = new RegExp(`^nfx_${k}(?:\\{[^}]*\\})? (\\S+)`, "m").exec(text);
      if (m) out[k.replace(/^(process_|nodejs_)/, "").replace(/_bytes$/, "_mb")] = Math.round(Number(m[1]) / 104857.6) / 10;
    }
    return out;
  };
  const mem0 = await memSplit();
  const rss0 = gws.map((p) => rssBytes(p.pid));
  const url = `ws://${cfg.ws.host}:${cfg.ws.port}/v1/ws`;

  // Idle connections from the load processes.
  const t0 = performance.now();
  const per = Math.ceil(CONNS / CLIENTS);
  const progress = new Map<ChildProcess, { open: number; failed: number }>();
  await Promise.all(
    Array.from({ length: CLIENTS }, (_, c) => {
      const count = Math.max(0, Math.min(per, CONNS - c * per));
      const p = adopt(fork(LOAD, [], { stdio: ["ignore", "inherit", "inherit", "ipc"] }));
      clients.push(p);
      return new Promise<void>((res, rej) => {
        p.on("message", (m: { type: string; open: number; failed: number }) => {
          progress.set(p, m);
          if (m.type === "ready") res();
        });
        p.once("exit", (code) => rej(new Error(`load client exited ${code}`)));
        p.send({ url, secret: cfg.ws.secret, first: c * per, count, sources: SOURCES, window: 256 });
      });
    }),
  );
  const connectSecs = (performance.now() - t0) / 1000;
  const open = [...progress.values()].reduce((a, m) => a + m.open, 0);
  const failed = [...progress.values()].reduce((a, m) => a + m.failed, 0);
  console.error(`${open} connections open (${failed} failed) in ${connectSecs.toFixed(1)} s`);
  await sleep(5000);
  const rss1 = gws.map((p) => rssBytes(p.pid));
  const mem1 = await memSplit();
  const grown = rss1.reduce((a, b) => a + b, 0) - rss0.reduce((a, b) => a + b, 0);
  // Again once the gateways have been idle for 30 s: V8 collects the hand-shake and hello garbage and gives pages back.
  await sleep(25_000);
  const grownSettled = gws.map((p) => rssBytes(p.pid)).reduce((a, b) => a + b, 0) - rss0.reduce((a, b) => a + b, 0);
  const memSettled = await memSplit();

  // Probe users, connected from this process; a receipt is when the item arrives on their socket.
  const tokens = new UserTokens(cfg.ws.secret);
  const probeUsers = Array.from({ length: 10 }, (_, i) => `probe${i}`);
  await writeUsers(redis, cfg.cluster.shards, probeUsers.map((id) => ({ id, devices: [{ id: "phone", platform: "ios" as const, token: `tok-${id}` }] })));
  const arrived = new Map<string, number>();
  const probes = await Promise.all(
    probeUsers.map(
      async (u) => {
        const ws = new WebSocket(`${url}?token=${await tokens.mint(u, 7200)}`);
        return new Promise<WebSocket>((res, rej) => {
          ws.on("message", (d) => {
            const m = JSON.parse((d as Buffer).toString()) as { t: string; id?: string };
            if (m.t !== "n") return;
            arrived.set(m.id!, performance.now());
            ws.send(JSON.stringify({ t: "ack", id: m.id }));
          });
          ws.on("open", () => res(ws));
          ws.on("error", rej);
        });
      },
    ),
  );
  await sleep(1000);
  // Where the time goes: when each probe's send batch reached NFX_SEND_INAPP (JetStream publishes are visible on core NATS).
  const batched = new Map<string, number>();
  const sendSub = nats.nc.subscribe("nfx.send.inapp.critical", {
    callback: (_e, m) => {
      for (const snd of decode<SendBatch>(m.data).sends) batched.set(snd.nid, performance.now());
    },
  });
  const split: { toSend: number[]; toClient: number[] } = { toSend: [], toClient: [] };

  /** Sends `n` critical in-app notifications one after another; returns each one's milliseconds from the producer's request to the client's receipt. */
  const measure = async (n: number, keepGoing: () => boolean = () => true): Promise<number[]> => {
    const out: number[] = [];
    for (let k = 0; k < n && keepGoing(); k++) {
      const user = probeUsers[k % probeUsers.length];
      const start = performance.now();
      const { id } = await notify(nats.nc, { recipients: [user], category: "security", priority: "critical", channels: ["inapp"], content: { inapp: { payload: { k } }, push: { title: "Sign-in", body: `probe ${k}` } } });
      const until = Date.now() + 10_000;
      while (!arrived.has(id) && Date.now() < until) await sleep(0.2);
      const at = arrived.get(id);
      if (at !== undefined) out.push(at - start);
      const b = batched.get(id);
      if (at !== undefined && b !== undefined) {
        split.toSend.push(b - start);
        split.toClient.push(at - b);
      }
      await sleep(30);
    }
    return out;
  };
  await measure(20); // warm-up
  split.toSend.length = split.toClient.length = 0;
  const idle = await measure(PROBES);
  console.error(`idle: p50 ${pct(idle, 50)} ms, p99 ${pct(idle, 99)} ms over ${idle.length}`);
  const idleSplit = { to_send_stream_p50: pct(split.toSend, 50), to_send_stream_p99: pct(split.toSend, 99), to_client_p50: pct(split.toClient, 50), to_client_p99: pct(split.toClient, 99) };
  split.toSend.length = split.toClient.length = 0;

  // The same while a bulk campaign to every one of USERS users fans out.
  await seedSyntheticUsers(redis, cfg.cluster.shards, USERS);
  console.error(`seeded ${USERS} users`);
  const counted = countDecided(nats);
  const shardPid = cluster.procs.get("shard")!.pid;
  const campaignStart = performance.now();
  await notify(nats.nc, { segment: "all", category: "marketing", priority: "bulk", content: { push: { title: "Sale starts", body: "Everything 20% off until midnight" } } });
  const warm = Math.min(20_000, USERS / 10);
  await waitUntil(() => `the campaign to decide its first ${warm} recipients (decided ${counted.decided})`, () => counted.decided >= warm, 120_000);
  const d0 = counted.decided;
  const cpu0 = cpuSecs(shardPid);
  const w0 = performance.now();
  const loaded = await measure(PROBES, () => counted.decided < USERS);
  const windowSecs = (performance.now() - w0) / 1000;
  const d1 = counted.decided;
  console.error(`loaded: p50 ${pct(loaded, 50)} ms, p99 ${pct(loaded, 99)} ms over ${loaded.length}; campaign decided ${d1 - d0} recipients in the window`);
  const loadedSplit = { to_send_stream_p50: pct(split.toSend, 50), to_send_stream_p99: pct(split.toSend, 99), to_client_p50: pct(split.toClient, 50), to_client_p99: pct(split.toClient, 99) };
  sendSub.unsubscribe();
  for (const p of probes) p.close();
  counted.stop();

  result = {
    bench: "ws",
    connections: open,
    connect_failed: failed,
    connect_secs: Number(connectSecs.toFixed(1)),
    gateway_processes: GATEWAYS,
    per_process_fd_limit: 20000,
    bytes_per_conn: Math.round(grown / Math.max(1, open)),
    bytes_per_conn_settled: Math.round(grownSettled / Math.max(1, open)),
    gateway_memory_mb: { before: mem0, connected: mem1, settled: memSettled },
    gateway_rss_mb: rss1.map((b) => Math.round(b / 1048576)),
    p50_ms: pct(idle, 50),
    p99_ms: pct(idle, 99),
    p50_ms_loaded: pct(loaded, 50),
    p99_ms_loaded: pct(loaded, 99),
    probes: { idle: idle.length, loaded: loaded.length },
    split_ms: { idle: idleSplit, loaded: loadedSplit, legend: "request -> send batch on NFX_SEND_INAPP, then -> client receipt" },
    campaign: {
      recipients: USERS,
      decided_during_window: d1 - d0,
      decided_per_s_during_window: Math.round((d1 - d0) / windowSecs),
      window_secs: Number(windowSecs.toFixed(1)),
      started_secs_before_window: Number(((w0 - campaignStart) / 1000).toFixed(1)),
      shard_cpu_secs_in_window: Number((cpuSecs(shardPid) - cpu0).toFixed(1)),
    },
  };
} finally {
  for (const c of clients) c.kill("SIGKILL");
  await bench.close();
}
report("ws", result);
