// bench:webhooks — deliveries/s to 1,000 endpoints (one answering after 2 s, one failing) through nfx's webhook gateway, against the same deliveries from a bare undici loop; 0 lost, 0 duplicates.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

import { Agent } from "undici";

import { API } from "../lib/core/subjects.js";
import type { Endpoint } from "../lib/directory/endpoints.js";
import type { EndpointState } from "../lib/flow/endpoint-queues.js";
import { secretKey, signatureHeaders } from "../lib/gateway/webhook-sign.js";
import { callApi, notify } from "../lib/intake/api-client.js";
import { adopt, arg, callsPer, redisBytesIn, redisCalls, startBenchCluster, waitUntil } from "./harness.js";
import { cpuSecs } from "./proc-stats.js";
import { report } from "./report.js";

const ENDPOINTS = arg("endpoints", 1000);
const MESSAGES = arg("messages", 20);
const SOCKETS = arg("sockets", 64);
const RECEIVER = fileURLToPath(new URL("../sandbox/webhook-receiver.js", import.meta.url));

type Summary = { accepted: Record<string, number>; span: Record<string, [number, number]>; dup: number; invalid: number; first: number; last: number };
/** The healthy endpoints' span on the receiver's clock (first to last acceptance), seconds: the slow and the failing endpoint are left out of both rates alike. */
const healthySecs = (s: Summary, p: string): number => {
  const spans = Object.entries(s.span).filter(([n]) => n !== `${p}0` && n !== `${p}1`).map(([, v]) => v);
  return (Math.max(...spans.map((v) => v[1])) - Math.min(...spans.map((v) => v[0]))) / 1000;
};

async function main(): Promise<void> {
  // The receiver is its own process (as endpoints are other machines), started first so the cluster's guard stops it too.
  const rxProc = adopt(spawn(process.execPath, [RECEIVER, "0"], { stdio: ["ignore", "pipe", "inherit"] }));
  const rxPort = Number(/:(\d+)/.exec(await new Promise<string>((res, rej) => {
    rxProc.stdout.once("data", (b: Buffer) => res(b.toString()));
    rxProc.once("exit", (c) => rej(new Error(`webhook receiver exited ${c}`)));
  }))![1]);
  const rx = `http://127.0.0.1:${rxPort}`;
  const put = (path: string, body: unknown): Promise<Response> => fetch(`${rx}${path}`, { method: "PUT", body: JSON.stringify(body) });
  const summary = async (prefix: string): Promise<Summary> => (await (await fetch(`${rx}/_summary/${prefix}`)).json()) as Summary;

  const bc = await startBenchCluster("webhooks", ["ingest", "router", "gateway-webhook"], false, {
    endpoints: { allowNetworks: ["127.0.0.0/8"], socketsPerHost: SOCKETS, backoffBaseMs: 1000, pauseAfterFailures: 5, pauseAfterMs: 5000 },
  });
  const nc = bc.nats.nc;
  // The endpoints: e0 answers after 2 s, e1 always 503; the others at once.
  await callApi(nc, API.topics, { action: "put", name: "bench" });
  const eps: Endpoint[] = [];
  for (let i = 0; i < ENDPOINTS; i++) {
    const ep = await callApi<Endpoint>(nc, API.endpoints, { action: "create", url: `${rx}/hooks/n${i}`, topics: ["bench"] });
    await put(`/_secrets/n${i}`, ep.secrets.map((s) => s.secret));
    await put(`/_secrets/b${i}`, ep.secrets.map((s) => s.secret));
    eps.push(ep);
  }
  for (const p of ["n", "b"]) {
    await put(`/_faults/${p}0`, { delayMs: 2000 });
    await put(`/_faults/${p}1`, { status: 503 });
  }
  const healthy = ENDPOINTS - 2;
  const want = healthy * MESSAGES;

  // nfx: MESSAGES publishes to the topic, each one delivery per endpoint.
  const gw = bc.cluster.procs.get("gateway-webhook")!;
  // Every process's CPU over the nfx run (the gateway, the roles feeding it, the servers, the receiver): where the machine's time went.
  const procs: Record<string, number | undefined> = { "nats-server": bc.cluster.nats.proc.pid, "redis-server": bc.cluster.redis.proc.pid, receiver: rxProc.pid };
  for (const [role, p] of bc.cluster.procs) procs[role] = p.pid;
  const cpuAll0 = Object.fromEntries(Object.entries(procs).map(([k, pid]) => [k, cpuSecs(pid)]));
  const cpu0 = cpuSecs(gw.pid);
  const calls0 = await redisCalls(bc.redis);
  const bytesIn0 = await redisBytesIn(bc.redis);
  const t0 = Date.now();
  for (let m = 0; m < MESSAGES; m++) await notify(nc, { topic: "bench", category: "transactional", content: { webhook: { type: "bench.event", data: { m, pad: "x".repeat(200) } } } });
  const healthyDone = (s: Summary, p: string): number => Object.entries(s.accepted).filter(([n]) => n !== `${p}0` && n !== `${p}1`).reduce((a, [, c]) => a + c, 0);
  // Polled on the receiver's progress counts (a summary walks every delivery it holds: CPU the bare run, not polled,
  // would not spend), then summarized once; the rate comes from the receiver's own clock.
  const progress = async (): Promise<Record<string, number>> => (await (await fetch(`${rx}/_progress/n`)).json()) as Record<string, number>;
  const healthyOk = (p: Record<string, number>): number => Object.entries(p).filter(([n]) => n !== "n0" && n !== "n1").reduce((a, [, c]) => a + c, 0);
  let ok = 0;
  await waitUntil(() => `nfx deliveries to the ${healthy} healthy endpoints: ${ok} of ${want}`, async () => (ok = healthyOk(await progress())) >= want, 600_000, 250);
  const nfx = await summary("n");
  const nfxSecs = healthySecs(nfx, "n");
  const nfxCpu = cpuSecs(gw.pid) - cpu0;
  const calls1 = await redisCalls(bc.redis);
  const bytesIn1 = await redisBytesIn(bc.redis);
  const cpuUsPerDelivery = Object.fromEntries(Object.entries(procs).map(([k, pid]) => [k, Math.round(((cpuSecs(pid) - cpuAll0[k]) * 1e6) / want)]));
  const brief = ({ pending, delivered, failed, attempts, paused }: EndpointState): Partial<EndpointState> => ({ pending, delivered, failed, attempts, paused });
  const slowState = brief(await callApi<EndpointState>(nc, API.endpoints, { action: "state", id: eps[0].id }));
  const failState = brief(await callApi<EndpointState>(nc, API.endpoints, { action: "state", id: eps[1].id }));
  const nfxWall = (Date.now() - t0) / 1000;

  // Bare: the same bodies, signed the same way, each endpoint's in order, one request at a time per endpoint, all endpoints at once, on the same undici pool settings.
  const agent = new Agent({ connections: SOCKETS, pipelining: 1, keepAliveTimeout: 30_000 });
  const bodies = Array.from({ length: MESSAGES }, (_, m) => JSON.stringify({ type: "bench.event", timestamp: new Date().toISOString(), data: { m, pad: "x".repeat(200) } }));
  const cpuB0 = process.cpuUsage();
  const rxBare0 = cpuSecs(rxProc.pid);
  const deadline = Date.now() + 600_000;
  await Promise.all(eps.map(async (ep, i) => {
    if (i === 1) return; // the failing endpoint: a bare loop would retry it forever; nfx pauses it
    const keys = ep.secrets.map((s) => secretKey(s.secret));
    for (let m = 0; m < MESSAGES && Date.now() < deadline; m++) {
      const id = `bare${m}.${ep.id}`;
      const res = await agent.request({ origin: rx, path: `/hooks/b${i}`, method: "POST", headers: { "content-type": "application/json", ...signatureHeaders(id, Math.floor(Date.now() / 1000), bodies[m], keys) }, body: bodies[m] });
      await res.body.dump();
      if (res.statusCode >= 300) m--;
    }
  }));
  const bareCpu = process.cpuUsage(cpuB0);
  await agent.close();
  const bare = await summary("b");
  const bareSecs = healthySecs(bare, "b");
  const bareDone = healthyDone(bare, "b");

  const lost = Object.entries(nfx.accepted).filter(([n]) => n !== "n0" && n !== "n1").reduce((a, [, c]) => a + Math.max(0, MESSAGES - c), 0) + (healthy - Object.keys(nfx.accepted).filter((n) => n !== "n0" && n !== "n1").length) * MESSAGES;
  const nfxRate = healthyDone(nfx, "n") / Math.max(0.001, nfxSecs);
  const bareRate = bareDone / Math.max(0.001, bareSecs);
  const result = {
    bench: "webhooks", endpoints: ENDPOINTS, messages: MESSAGES, deliveries: want, sockets: SOCKETS,
    nfx_per_s: Math.round(nfxRate), bare_per_s: Math.round(bareRate), ratio: Number((nfxRate / bareRate).toFixed(2)),
    nfx_secs: Number(nfxSecs.toFixed(1)), nfx_wall_secs: Number(nfxWall.toFixed(1)), bare_secs: Number(bareSecs.toFixed(1)),
    gateway_cpu_us_per_delivery: Math.round((nfxCpu * 1e6) / want), bare_cpu_us_per_delivery: Math.round((bareCpu.user + bareCpu.system) / bareDone),
    nfx_cpu_us_per_delivery_by_process: cpuUsPerDelivery,
    redis_calls_per_delivery: callsPer(calls0, calls1, want),
    redis_bytes_in_per_delivery: Math.round((bytesIn1 - bytesIn0) / want), receiver_cpu_us_per_bare_delivery: Math.round(((cpuSecs(rxProc.pid) - rxBare0) * 1e6) / bareDone),
    lost, dup: nfx.dup, invalid_signatures: nfx.invalid,
    slow_endpoint: slowState, failing_endpoint: failState,
  };
  await bc.close();
  rxProc.kill("SIGKILL");
  report("webhooks", result);
}

await main();
