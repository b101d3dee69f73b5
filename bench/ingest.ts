// bench:ingest — one ingest process: NATS request/reply rate (closed loop), HTTP rate, and HTTP latency at a fixed 5,000 requests/s.
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";

import { connect, headers } from "@nats-io/transport-node";
import { pino } from "pino";

import { startLocalCluster } from "../cmd/local-cluster.js";
import { createLogger } from "../lib/core/log.js";
import { STREAM } from "../lib/core/subjects.js";
import { connectNats } from "../lib/infra/nats.js";
import { inboxPrefixOf, natsPassword } from "../lib/infra/nats-auth.js";
import { API_KEY_HEADER } from "../lib/intake/api-client.js";
import { guardBench } from "./harness.js";
import { report } from "./report.js";

const { values } = parseArgs({
  options: { seconds: { type: "string", default: "8" }, rate: { type: "string", default: "5000" }, inflight: { type: "string", default: "512" }, pin: { type: "boolean", default: false } },
});
/** --pin: nats-server on CPU 1; ingest, redis-server and hey on CPU 0 (taskset), to see ingest's latency without nats-server competing for its core. */
const PIN = values.pin;
const SECONDS = Number(values.seconds);
const RATE = Number(values.rate);
const INFLIGHT = Number(values.inflight);
const KEY = "bench-key-0123456789";

const body = (i: number): string =>
  JSON.stringify({ recipients: [`user-${i % 5000}`, `user-${(i * 7) % 5000}`], category: "transactional", content: { push: { title: "Your code", body: `Code ${i}`, data: { i: String(i) } } } });

const pct = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;

const dir = mkdtempSync(join(tmpdir(), "nfx-bench-ingest-"));
const cluster = await startLocalCluster({
  dataDir: dir, natsPort: 0, redisPort: 0, httpPort: 0, persist: false, sandbox: null, roles: ["ingest"],
  overrides: { log: { level: "warn" }, apiKeys: [{ name: "bench", key: KEY, scopes: ["send"] }] },
});
const stopAll = async (): Promise<void> => {
  await cluster.stop();
  rmSync(dir, { recursive: true, force: true });
};
const guard = guardBench("ingest", stopAll);
let result: Record<string, unknown> = {};
if (PIN) {
  spawnSync("taskset", ["-cp", "1", String(cluster.nats.proc.pid)]);
  spawnSync("taskset", ["-cp", "0", String(cluster.redis.proc.pid)]);
  for (const p of cluster.procs.values()) spawnSync("taskset", ["-cp", "0", String(p.pid)]);
}
try {
  const admin = await connectNats(cluster.cfg, createLogger({ level: "warn", redact: true }, pino.destination(2)), "bench-admin");
  const stored0 = (await admin.jsm.streams.info(STREAM.intake)).state.messages;

  // 1. NATS: closed loop, INFLIGHT requests outstanding, for SECONDS.
  // As a producer: account PRODUCERS, through the service import, with its API key (docs/security.md).
  const nc = await connect({ servers: cluster.nats.url, user: "producer", pass: natsPassword(cluster.cfg.nats.secret, "producer"), inboxPrefix: inboxPrefixOf({ producer: "producer" }) });
  const keyed = headers();
  keyed.set(API_KEY_HEADER, KEY);
  const te = new TextEncoder();
  let natsOk = 0;
  let natsErr = 0;
  let i = 0;
  const natsEnd = performance.now() + SECONDS * 1000;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: INFLIGHT }, async () => {
      while (performance.now() < natsEnd) {
        const m = await nc.request("nfx.api.notify", te.encode(body(i++)), { timeout: 10_000, headers: keyed });
        if (m.headers?.get("Nfx-Error")) natsErr++;
        else natsOk++;
      }
    }),
  );
  const natsSecs = (performance.now() - t0) / 1000;
  await nc.close();

  // 2. HTTP: fixed rate RATE/s for SECONDS (open loop), latency of each request.
  // uWS closes keep-alive connections idle for 10 s; each phase gets fresh sockets (see newAgent below).
  let agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  const url = new URL(`${cluster.httpUrl}/v1/notifications`);
  const post = (b: string): Promise<number> =>
    new Promise((resolve, reject) => {
      const req = http.request(
        { agent, host: url.hostname, port: url.port, path: url.pathname, method: "POST", headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json", "content-length": Buffer.byteLength(b) } },
        (res) => {
          res.resume();
          res.on("end", () => resolve(res.statusCode ?? 0));
        },
      );
      req.on("error", reject);
      req.end(b);
    });
  /** Sends at RATE/s for `secs`; returns each request's latency (ms) and the errors. */
  const fixedRate = async (secs: number): Promise<{ lat: number[]; errors: number; secs: number }> => {
    const lat: number[] = [];
    let errors = 0;
    const pending: Promise<void>[] = [];
    const start = performance.now();
    const total = RATE * secs;
    for (let sent = 0; sent < total; ) {
      const due = Math.min(total, Math.floor(((performance.now() - start) / 1000) * RATE));
      for (; sent < due; sent++) {
        const s = performance.now();
        pending.push(post(body(i++)).then((st) => (st === 202 ? void lat.push(performance.now() - s) : void errors++), () => void errors++));
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    await Promise.all(pending);
    return { lat: lat.sort((a, b) => a - b), errors, secs: (performance.now() - start) / 1000 };
  };
  const warm = await fixedRate(2); // connections opened, JIT warm; not counted
  const { lat, errors: httpErr, secs: httpSecs } = await fixedRate(SECONDS);

  // 2b. The same fixed rate from `hey` (Go, Debian package), a lighter load generator than Node's http client.
  const heyRun = (secs: number): { lat: number[]; errors: number } | null => {
    if (spawnSync("sh", ["-c", "command -v hey"]).status !== 0) return null;
    const workers = 50;
    const r = spawnSync(PIN ? "taskset" : "hey", [...(PIN ? ["-c", "0", "hey"] : []),"-z", `${secs}s`, "-c", String(workers), "-q", String(RATE / workers), "-m", "POST", "-T", "application/json",
      "-H", `Authorization: Bearer ${KEY}`, "-d", body(1), "-o", "csv", url.href], { encoding: "utf8", maxBuffer: 256 * 1048576 });
    const rows = r.stdout.split("\n").slice(1).filter(Boolean).map((l) => l.split(","));
    return { lat: rows.filter((c) => c[6] === "202").map((c) => Number(c[0]) * 1000).sort((a, b) => a - b), errors: rows.filter((c) => c[6] !== "202").length };
  };
  const heyWarm = heyRun(2);
  const hey = heyRun(SECONDS);

  // 3. HTTP: closed loop for the maximum rate.
  agent.destroy();
  agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  let httpMaxOk = 0;
  const maxEnd = performance.now() + SECONDS * 1000;
  const m0 = performance.now();
  await Promise.all(
    Array.from({ length: 128 }, async () => {
      while (performance.now() < maxEnd) if ((await post(body(i++)).catch(() => 0)) === 202) httpMaxOk++;
    }),
  );
  const maxSecs = (performance.now() - m0) / 1000;
  agent.destroy();

  const stored = (await admin.jsm.streams.info(STREAM.intake)).state.messages - stored0;
  await admin.nc.close();
  result = {
    bench: "ingest",
    nats_rps: Math.round(natsOk / natsSecs),
    nats_errors: natsErr,
    http_rate_target: RATE,
    http_load_generator: hey ? "hey" : "node",
    http_rps: Math.round((hey ? hey.lat.length / SECONDS : lat.length / httpSecs)),
    http_p50_ms: Number(pct(hey?.lat ?? lat, 50).toFixed(2)),
    http_p90_ms: Number(pct(hey?.lat ?? lat, 90).toFixed(2)),
    http_p99_ms: Number(pct(hey?.lat ?? lat, 99).toFixed(2)),
    http_errors: (hey?.errors ?? 0) + httpErr,
    http_node_client_p50_ms: Number(pct(lat, 50).toFixed(2)),
    http_node_client_p99_ms: Number(pct(lat, 99).toFixed(2)),
    http_max_rps: Math.round(httpMaxOk / maxSecs),
    stored_delta: stored,
    accepted: natsOk + warm.lat.length + lat.length + (heyWarm?.lat.length ?? 0) + (hey?.lat.length ?? 0) + httpMaxOk,
    lost: natsOk + warm.lat.length + lat.length + (heyWarm?.lat.length ?? 0) + (hey?.lat.length ?? 0) + httpMaxOk - stored,
    pinned: PIN,
    note: `one ingest process; load generator, nats-server and redis-server on the same 2 cores${PIN ? " (nats-server alone on CPU 1)" : ""}; ${INFLIGHT} NATS requests in flight`,
  };
} finally {
  await stopAll();
  guard.done();
}
report("ingest", result);
