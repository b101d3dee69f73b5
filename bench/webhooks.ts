// bench:webhooks — deliveries/s to 1,000 endpoints (one answering after 2 s, one failing) through nfx's webhook gateway, against the same deliveries from a bare undici loop; 0 lost, 0 duplicates.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

import { Agent } from "undici";

import { nodeArgsOf } from "../cmd/role-process.js";
import { API } from "../lib/core/subjects.js";
import type { Endpoint } from "../lib/directory/endpoints.js";
import type { EndpointState } from "../lib/flow/endpoint-queues.js";
import { secretKey, signatureHeaders } from "../lib/gateway/webhook-sign.js";
import { callApi, notify } from "../lib/intake/api-client.js";
import { adopt, arg, perItem, redisBytesIn, type RedisCommandStats, redisCommandStats, startBenchCluster, statsGrowth, underNodeFlags, waitUntil } from "./harness.js";
import { cpuSecs } from "./proc-stats.js";
import { report } from "./report.js";

// The bare loop runs in this process: under the webhook gateway's node flags (its young generation), as bench:gateways'
// bare SDK loops run under the provider gateways', so a flag that helps the gateway helps the bare loop alike.
await underNodeFlags(nodeArgsOf("gateway-webhook"));

const ENDPOINTS = arg("endpoints", 1000);
const MESSAGES = arg("messages", 20);
const SOCKETS = arg("sockets", 64);
/**
 * Rounds (`--rounds`, default 3, at most 8), after a warm-up round: each a bare run then an nfx run of `--messages`
 * per endpoint, alternating, so a machine that slows down or speeds up during the bench weighs on both sides alike.
 * Rates and the ratio are over all rounds (deliveries over the receiver's span for them); `by_round` has each round's,
 * with how long nfx's publishes took (`publish_ms`) and when its first delivery arrived after the first publish
 * (`first_delivery_ms`): the rate's span starts at that delivery.
 */
const ROUNDS = Math.max(1, Math.min(8, arg("rounds", 3)));
const RECEIVER = fileURLToPath(new URL("../sandbox/webhook-receiver.js", import.meta.url));

type Summary = { accepted: Record<string, number>; span: Record<string, [number, number]>; dup: number; invalid: number; first: number; last: number };
/** The values of the healthy endpoints (prefix `p`) of a per-endpoint record: endpoints 0 (slow) and 1 (failing) are left out of both sides alike. */
const healthyOf = <T>(rec: Record<string, T>, p: string): T[] => Object.entries(rec).filter(([n]) => n !== `${p}0` && n !== `${p}1`).map(([, v]) => v);
/** The healthy endpoints' span on the receiver's clock, [first, last] acceptance (ms): the slow and the failing endpoint are left out of both rates alike. */
const healthySpan = (s: Summary, p: string): [number, number] => {
  const spans = healthyOf(s.span, p);
  return [Math.min(...spans.map((v) => v[0])), Math.max(...spans.map((v) => v[1]))];
};
/** {@link healthySpan} as a length, seconds. */
const healthySecs = (s: Summary, p: string): number => {
  const [first, last] = healthySpan(s, p);
  return (last - first) / 1000;
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
  const sum = (l: number[]): number => l.reduce((a, c) => a + c, 0);
  const healthyDone = (s: Summary, p: string): number => sum(healthyOf(s.accepted, p));
  /** Deliveries short of `per` each on the healthy endpoints of a summary (an endpoint that got nothing counts whole). */
  const lostOf = (s: Summary, p: string, per: number): number => {
    const got = healthyOf(s.accepted, p);
    return sum(got.map((c) => Math.max(0, per - c))) + (healthy - got.length) * per;
  };
  const reset = async (prefix: string): Promise<void> => void (await fetch(`${rx}/_reset/${prefix}`, { method: "POST" })).body?.cancel();

  // Every process's CPU over the nfx runs (the gateway, the roles feeding it, the servers, the receiver): where the machine's time went.
  const procs: Record<string, number | undefined> = { "nats-server": bc.cluster.nats.proc.pid, "redis-server": bc.cluster.redis.proc.pid, receiver: rxProc.pid };
  for (const [role, p] of bc.cluster.procs) procs[role] = p.pid;
  const cpuNfx: Record<string, number> = Object.fromEntries(Object.keys(procs).map((k) => [k, 0]));
  const redisIn: RedisCommandStats = { calls: new Map(), usec: new Map() };
  let bytesIn = 0;
  let rxBare = 0;
  let bareCpuUs = 0;
  const total = { nfxDone: 0, nfxSecs: 0, bareDone: 0, bareSecs: 0, lost: 0, dup: 0, invalid: 0 };
  const rounds: { nfx_per_s: number; bare_per_s: number; ratio: number; gateway_cpu_us_per_delivery: number; publish_ms: number; first_delivery_ms: number }[] = [];
  const progress = async (): Promise<Record<string, number>> => (await (await fetch(`${rx}/_progress/n`)).json()) as Record<string, number>;
  const healthyOk = (p: Record<string, number>): number => sum(healthyOf(p, "n"));
  const agent = new Agent({ connections: SOCKETS, pipelining: 1, keepAliveTimeout: 30_000 });
  const slowBare: Promise<void>[] = [];
  let bareStopped = false;

  /** nfx: `m` publishes to the topic (round `round`), each one delivery per endpoint; returns when the healthy endpoints have them all. */
  const nfxRun = async (round: number, m: number, what: string): Promise<Summary & { publishStart: number; publishEnd: number }> => {
    const publishStart = Date.now();
    for (let k = 0; k < m; k++) await notify(nc, { topic: "bench", category: "transactional", content: { webhook: { type: "bench.event", data: { round, m: k, pad: "x".repeat(200) } } } });
    const publishEnd = Date.now();
    // Polled on the receiver's progress counts (a summary walks every delivery it holds: CPU the bare run, not polled,
    // would not spend), then summarized once; the rate comes from the receiver's own clock.
    let ok = 0;
    await waitUntil(() => `nfx deliveries to the ${healthy} healthy endpoints in ${what}: ${ok} of ${healthy * m}`, async () => (ok = healthyOk(await progress())) >= healthy * m, 600_000, 250);
    return { ...(await summary("n")), publishStart, publishEnd };
  };
  /** Bare: the same bodies, signed the same way, each endpoint's in order, one request at a time per endpoint, all endpoints at once, on the same undici pool settings. */
  const bareRun = async (round: number, m: number): Promise<Summary> => {
    const bodies = Array.from({ length: m }, (_, k) => JSON.stringify({ type: "bench.event", timestamp: new Date().toISOString(), data: { round, m: k, pad: "x".repeat(200) } }));
    const deadline = Date.now() + 600_000;
    const loops: Promise<void>[] = [];
    for (const [i, ep] of eps.entries()) {
      if (i === 1) continue; // the failing endpoint: a bare loop would retry it forever; nfx pauses it
      // The slow endpoint (2 s an answer) is left out of the rates: its loop goes on in the background, as nfx's worker for it does.
      if (i === 0) slowBare.push(sendAll(ep, i).catch(() => undefined));
      else loops.push(sendAll(ep, i));
    }
    await Promise.all(loops);
    return summary("b");

    async function sendAll(ep: Endpoint, i: number): Promise<void> {
      const keys = ep.secrets.map((s) => secretKey(s.secret));
      for (let k = 0; k < m && Date.now() < deadline && !bareStopped; k++) {
        const id = `bare${round}.${k}.${ep.id}`;
        const res = await agent.request({ origin: rx, path: `/hooks/b${i}`, method: "POST", headers: { "content-type": "application/json", ...signatureHeaders(id, Math.floor(Date.now() / 1000), bodies[k], keys) }, body: bodies[k] });
        await res.body.dump();
        if (res.statusCode >= 300) k--;
      }
    }
  };

  // A warm-up round (a quarter of the messages on each side, not counted): the first requests through a fresh process
  // pay for compiling its code (the receiver's, the gateway's, the bare loop's) and would weigh on whichever side ran first.
  // Then ROUNDS rounds, each a bare run and an nfx run, alternating. Every round's deliveries, the warm-up's too, must each arrive once.
  for (let r = -1; r < ROUNDS; r++) {
    const warm = r < 0;
    const m = warm ? Math.max(1, Math.ceil(MESSAGES / 4)) : MESSAGES;
    const what = warm ? "the warm-up round" : `round ${r + 1}`;
    const round = warm ? 9 : r;

    const cpuB0 = process.cpuUsage();
    const rxB0 = cpuSecs(rxProc.pid);
    const bare = await bareRun(round, m);
    const bareCpu = process.cpuUsage(cpuB0);
    const rxB1 = cpuSecs(rxProc.pid);
    await reset("b");

    const cpu0 = Object.fromEntries(Object.entries(procs).map(([k, pid]) => [k, cpuSecs(pid)]));
    const redis0 = await redisCommandStats(bc.redis);
    const bytes0 = await redisBytesIn(bc.redis);
    const nfx = await nfxRun(round, m, what);
    const cpu1 = Object.fromEntries(Object.entries(procs).map(([k, pid]) => [k, cpuSecs(pid)]));
    const redis1 = await redisCommandStats(bc.redis);
    const bytes1 = await redisBytesIn(bc.redis);
    await reset("n");

    total.lost += lostOf(nfx, "n", m) + lostOf(bare, "b", m);
    total.dup += nfx.dup;
    total.invalid += nfx.invalid;
    if (warm) continue;
    const nfxSecs = healthySecs(nfx, "n");
    const bareSecs = healthySecs(bare, "b");
    const nfxDone = healthyDone(nfx, "n");
    const bareDone = healthyDone(bare, "b");
    total.nfxDone += nfxDone;
    total.nfxSecs += nfxSecs;
    total.bareDone += bareDone;
    total.bareSecs += bareSecs;
    for (const k of Object.keys(procs)) cpuNfx[k] += cpu1[k] - cpu0[k];
    statsGrowth(redis0, redis1, redisIn);
    bytesIn += bytes1 - bytes0;
    rxBare += rxB1 - rxB0;
    bareCpuUs += bareCpu.user + bareCpu.system;
    const nfxRate = nfxDone / Math.max(0.001, nfxSecs);
    const bareRate = bareDone / Math.max(0.001, bareSecs);
    rounds.push({ nfx_per_s: Math.round(nfxRate), bare_per_s: Math.round(bareRate), ratio: Number((nfxRate / bareRate).toFixed(2)), gateway_cpu_us_per_delivery: Math.round(((cpu1["gateway-webhook"] - cpu0["gateway-webhook"]) * 1e6) / want), publish_ms: nfx.publishEnd - nfx.publishStart, first_delivery_ms: healthySpan(nfx, "n")[0] - nfx.publishStart });
    console.error(`round ${r + 1}: ${JSON.stringify(rounds.at(-1))}`);
  }
  bareStopped = true;
  await agent.destroy();
  await Promise.all(slowBare);
  const brief = ({ pending, delivered, failed, attempts, paused }: EndpointState): Partial<EndpointState> => ({ pending, delivered, failed, attempts, paused });
  const slowState = brief(await callApi<EndpointState>(nc, API.endpoints, { action: "state", id: eps[0].id }));
  const failState = brief(await callApi<EndpointState>(nc, API.endpoints, { action: "state", id: eps[1].id }));

  const n = want * ROUNDS;
  const nfxRate = total.nfxDone / Math.max(0.001, total.nfxSecs);
  const bareRate = total.bareDone / Math.max(0.001, total.bareSecs);
  const result = {
    bench: "webhooks", endpoints: ENDPOINTS, messages: MESSAGES, rounds: ROUNDS, deliveries: want, sockets: SOCKETS,
    nfx_per_s: Math.round(nfxRate), bare_per_s: Math.round(bareRate), ratio: Number((nfxRate / bareRate).toFixed(2)),
    nfx_secs: Number(total.nfxSecs.toFixed(1)), bare_secs: Number(total.bareSecs.toFixed(1)),
    gateway_cpu_us_per_delivery: Math.round((cpuNfx["gateway-webhook"] * 1e6) / n), bare_cpu_us_per_delivery: Math.round(bareCpuUs / total.bareDone),
    nfx_cpu_us_per_delivery_by_process: Object.fromEntries(Object.entries(cpuNfx).map(([k, v]) => [k, Math.round((v * 1e6) / n)])),
    redis_calls_per_delivery: perItem(redisIn.calls, n),
    redis_us_per_delivery_by_command: perItem(redisIn.usec, n),
    redis_bytes_in_per_delivery: Math.round(bytesIn / n), receiver_cpu_us_per_bare_delivery: Math.round((rxBare * 1e6) / total.bareDone),
    lost: total.lost, dup: total.dup, invalid_signatures: total.invalid,
    slow_endpoint: slowState, failing_endpoint: failState, by_round: rounds,
  };
  await bc.close();
  rxProc.kill("SIGKILL");
  report("webhooks", result);
}

await main();
