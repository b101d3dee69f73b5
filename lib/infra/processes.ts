// The process registry: every nfx process announces its roles and metrics URL in KV, so `nfx top`, the status page and Prometheus find it.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { hostname } from "node:os";

import { decodeJson, encodeJson } from "../core/codec.js";
import type { Config } from "../core/config.js";
import type { Logger } from "../core/log.js";
import { BUCKET, PROCESS_KEY } from "../core/subjects.js";
import { collectProcessMetrics, register } from "./metrics.js";
import { kvKeys, type Nats } from "./nats.js";

/** An entry lapses this long after its process last refreshed it. */
export const PROCESS_TTL_MS = 15_000;
const REFRESH_MS = 5_000;

/** One live process. */
export interface ProcessInfo {
  id: string;
  roles: string[];
  host: string;
  pid: number;
  startedAt: number;
  /** `http://host:port/metrics`, when the process serves metrics. */
  metricsUrl?: string;
}

/**
 * Serves `/metrics` (Prometheus text) and `/metrics.json` on
 * `metrics.host:metrics.port` when metrics are enabled, and announces this
 * process in nfx-procs every 5 s until stopped (the entry is deleted on a
 * clean stop, and lapses 15 s after a crash).
 */
export async function announceProcess(cfg: Config, nats: Nats, roles: readonly string[], log: Logger): Promise<{ info: ProcessInfo; stop(): Promise<void> }> {
  const host = hostname();
  const info: ProcessInfo = { id: PROCESS_KEY.of(host, process.pid), roles: [...roles], host, pid: process.pid, startedAt: Date.now() };
  let server: http.Server | null = null;
  if (cfg.metrics.enabled) {
    collectProcessMetrics({ role: roles.join("+") });
    server = http.createServer((req, res) => {
      const path = (req.url ?? "/").split("?")[0];
      const answer = (type: string, body: Promise<string>): void =>
        void body.then(
          (b) => res.writeHead(200, { "content-type": type }).end(b),
          (err: Error) => res.writeHead(500, { "content-type": "text/plain" }).end(String(err?.message ?? err)),
        );
      if (req.method === "GET" && path === "/metrics") return answer(register.contentType, register.metrics());
      if (req.method === "GET" && path === "/metrics.json") return answer("application/json", register.getMetricsAsJSON().then((m) => JSON.stringify({ process: info, metrics: m })));
      res.writeHead(404, { "content-type": "text/plain" }).end("not found: try /metrics\n");
    });
    await new Promise<void>((resolve, reject) => {
      server!.once("error", reject);
      server!.listen(cfg.metrics.port, cfg.metrics.host, () => resolve());
    });
    const port = (server.address() as AddressInfo).port;
    info.metricsUrl = `http://${cfg.metrics.host}:${port}/metrics`;
    log.info({ url: info.metricsUrl }, "metrics served");
  }
  const kv = await nats.kvm.open(BUCKET.procs);
  const put = (): Promise<unknown> => kv.put(info.id, encodeJson(info)).catch((err) => log.warn({ err }, "process announce failed"));
  await put();
  const timer = setInterval(() => void put(), REFRESH_MS);
  timer.unref();
  return {
    info,
    async stop() {
      clearInterval(timer);
      await kv.delete(info.id).catch(() => undefined);
      if (server) {
        server.closeAllConnections();
        await new Promise<void>((r) => server.close(() => r()));
      }
    },
  };
}

/** The live processes of the cluster, each once (keys from {@link kvKeys}). */
export async function listProcesses(nats: Nats): Promise<ProcessInfo[]> {
  const kv = await nats.kvm.open(BUCKET.procs);
  const out: ProcessInfo[] = [];
  for (const k of await kvKeys(nats.jsm, BUCKET.procs, PROCESS_KEY.all)) {
    const e = await kv.get(k);
    if (e && e.operation === "PUT") out.push(decodeJson<ProcessInfo>(e.value));
  }
  return out.sort((a, b) => a.roles.join().localeCompare(b.roles.join()) || a.pid - b.pid);
}
