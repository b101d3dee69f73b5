// bench:gateways — per channel, the send rate through an nfx gateway against the rate of the bare SDK on the same sandbox in the same run.
import { type ChildProcess, spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import { Session } from "node:inspector/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PerformanceObserver } from "node:perf_hooks";
import tls from "node:tls";

import apn from "@parse/node-apn";
import { Client } from "@sendgrid/client";
import { MailService } from "@sendgrid/mail";
import { deleteApp, initializeApp } from "firebase-admin/app";
import { getMessaging } from "firebase-admin/messaging";
import twilio from "twilio";

import { createApnsClient } from "../actors/gateway-apns.js";
import { createEmailClient } from "../actors/gateway-email.js";
import { createFcmClient } from "../actors/gateway-fcm.js";
import { createSmsClient, statusCallbackUrl } from "../actors/gateway-sms.js";
import { mergeDeep } from "../cmd/local-cluster.js";
import { nodeArgsOf } from "../cmd/role-process.js";
import { encode } from "../lib/core/codec.js";
import { type Config, loadConfig } from "../lib/core/config.js";
import { createLogger } from "../lib/core/log.js";
import { type Channel, sendSubject } from "../lib/core/subjects.js";
import type { NotificationBrief, SendBatch } from "../lib/core/types.js";
import { type ChannelClient, runGateway } from "../lib/gateway/runner.js";
import { ensureTopology } from "../lib/infra/topology.js";
import { ensureApnsKey, sandboxOverrides, type SandboxPorts } from "../sandbox/index.js";
import { adopt, arg, perItem, redisBytesIn, type RedisCommandStats, redisCommandStats, startBenchCluster, statsGrowth, underNodeFlags, waitUntil } from "./harness.js";
import { cpuSecs } from "./proc-stats.js";
import { report } from "./report.js";

// The gateways run in this process beside the bare SDK loops: both run under the gateway roles' node flags (cmd/role-process.ts).
await underNodeFlags([...new Set((["gateway-apns", "gateway-fcm", "gateway-email", "gateway-sms"] as const).flatMap((r) => nodeArgsOf(r)))]);

/** Sends per run and channel; `--sends <n>` sets every channel's (a quick trial run). */
const SENDS = arg("sends", 0);
const N: Record<Exclude<Channel, "inapp" | "webhook">, number> = SENDS > 0 ? { apns: SENDS, fcm: SENDS, email: SENDS, sms: SENDS } : { apns: 40_000, fcm: 30_000, email: 40_000, sms: 8_000 };
const BATCH = 500;
/**
 * Rounds per channel (`--rounds`, default 3, at most 8), after a warm-up round: each a bare run then an nfx run of `N`
 * sends, alternating, so a machine that slows down or speeds up during the bench weighs on both sides alike. Rates and the ratio are over all rounds
 * (sends over the time the sandbox took to accept them); `by_round` has each round's.
 */
const ROUNDS = Math.max(1, Math.min(8, arg("rounds", 3)));
const NFX_BIN = new URL("../cmd/nfx.js", import.meta.url).pathname;

/** Starts `nfx sandbox` as its own process on free ports (as a provider is another machine) and reads its ports from its first line. */
async function startSandboxProcess(): Promise<{ ports: SandboxPorts; proc: ChildProcess }> {
  const proc = adopt(spawn(process.execPath, [NFX_BIN, "sandbox", "--apns-port", "0", "--fcm-port", "0", "--sendgrid-port", "0", "--twilio-port", "0", "--control-port", "0"], { stdio: ["ignore", "pipe", "inherit"] }));
  const line = await new Promise<string>((res, rej) => {
    proc.stdout.once("data", (b: Buffer) => res(b.toString()));
    proc.once("exit", (c) => rej(new Error(`sandbox exited ${c}`)));
  });
  const port = (name: string): number => Number(new RegExp(`${name} https?://127\\.0\\.0\\.1:(\\d+)`).exec(line)![1]);
  return { ports: { apns: port("apns"), fcm: port("fcm"), sendgrid: port("sendgrid"), twilio: port("twilio"), control: port("control") }, proc };
}

/**
 * What the sandbox accepted for tokens starting with `prefix`: count per
 * token, and the rate between the first and the last acceptance on the
 * sandbox's clock (start-up of either side is left out alike).
 */
async function accepted(control: number, provider: string, prefix: string): Promise<{ byToken: Map<string, number>; perSec: number; n: number; secs: number }> {
  const all = (await (await fetch(`http://127.0.0.1:${control}/deliveries?provider=${provider}`)).json()) as { token: string; status: number; at: number }[];
  const byToken = new Map<string, number>();
  let first = Infinity;
  let last = 0;
  let n = 0;
  for (const d of all) {
    if (!(d.status >= 200 && d.status < 300 && d.token.startsWith(prefix))) continue;
    byToken.set(d.token, (byToken.get(d.token) ?? 0) + 1);
    first = Math.min(first, d.at);
    last = Math.max(last, d.at);
    n++;
  }
  const secs = Math.max(0.001, (last - first) / 1000);
  return { byToken, perSec: n > 1 ? (n - 1) / secs : 0, n, secs };
}

/**
 * Empties the sandbox's record of deliveries once a run was read: every run then meets a sandbox of the same size (its
 * record otherwise grows by every round of every channel, and so do its garbage collections, which land on whichever
 * side is running).
 */
async function resetSandbox(control: number): Promise<void> {
  const r = await fetch(`http://127.0.0.1:${control}/reset`, { method: "POST" });
  if (!r.ok) throw new Error(`the sandbox did not reset its record: HTTP ${r.status}`);
}

const PROVIDER: Record<Exclude<Channel, "inapp" | "webhook">, string> = { apns: "apns", fcm: "fcm", email: "sendgrid", sms: "twilio" };
/** One side of one round: `r` for the bare SDK, `p` for nfx, and the round (0–9). */
type Run = `${"r" | "p"}${number}`;
/** Distinct tokens per run: `r<round>` for the bare SDK, `p<round>` for nfx (digits for phone numbers). */
const tokenFor = (ch: Channel, run: Run, i: number): string =>
  ch === "email" ? `${run}${i}@example.com` : ch === "sms" ? `${tokenPrefix(ch, run)}${String(i).padStart(8, "0")}` : `${run}${i.toString(16).padStart(8, "0")}`;
const tokenPrefix = (ch: Channel, run: Run): string => (ch === "sms" ? `+1${run[0] === "r" ? 3 : 4}${run.slice(1)}` : run);
const CONTENT: NotificationBrief["content"] = { push: { title: "Bench", body: "Gateway throughput" }, email: { subject: "Bench", text: "Gateway throughput" }, sms: { text: "Gateway throughput" } };

/**
 * Garbage collection in this process while `fn` runs: pauses and their total milliseconds; with `profile` set, a
 * V8 CPU profile of it is written there too (open it in Chrome DevTools or VS Code).
 */
async function observed<T>(fn: () => Promise<T>, profile?: string): Promise<{ value: T; gc: { pauses: number; ms: number } }> {
  const gc = { pauses: 0, ms: 0 };
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      gc.pauses++;
      gc.ms += e.duration;
    }
  });
  obs.observe({ entryTypes: ["gc"] });
  const session = profile ? new Session() : null;
  if (session) {
    session.connect();
    await session.post("Profiler.enable");
    await session.post("Profiler.start");
  }
  try {
    return { value: await fn(), gc };
  } finally {
    obs.disconnect();
    gc.ms = Math.round(gc.ms);
    if (session && profile) {
      const { profile: p } = await session.post("Profiler.stop");
      writeFileSync(profile, JSON.stringify(p));
      session.disconnect();
    }
  }
}

/** Runs `n` tasks with at most `c` in flight. */
async function pool(n: number, c: number, task: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(c, n) }, async () => {
    while (next < n) await task(next++);
  }));
}

/** The bare SDK, configured like the gateway's app (same pool and concurrency), sending `n` messages. */
async function rawSdk(cfg: Config, ch: Exclude<Channel, "inapp">, n: number, prefix: Run): Promise<void> {
  if (ch === "apns") {
    const a = cfg.gateways.apns.apps[0];
    const opts = { token: { key: readFileSync(a.keyFile!), keyId: a.keyId, teamId: a.teamId }, production: false, address: a.address, port: a.port, ca: [readFileSync(a.caFile!)], connectionRetryLimit: 0, clientCount: a.clientCount, peerMaxConcurrentStreams: 500 };
    const p = new apn.MultiProvider(opts);
    // Grouped as the gateway groups them (`groupSize` tokens per SDK call, one notification each), with the same streams in flight.
    const g = a.groupSize;
    const expiry = Math.floor(Date.now() / 1000) + 3600;
    await pool(Math.ceil(n / g), Math.ceil(a.concurrency / g), async (r) => {
      // The same notification as the gateway's: push type, expiry and priority headers, and the notification's id in the
      // payload (which the app reports opens with).
      const note = new apn.Notification({ alert: { title: "Bench", body: "Gateway throughput" } });
      note.topic = a.topic;
      note.pushType = "alert";
      note.payload = { nfx: { id: "n_benchraw" } };
      note.priority = 5;
      note.expiry = expiry;
      await p.send(note, Array.from({ length: Math.min(g, n - r * g) }, (_, j) => tokenFor(ch, prefix, r * g + j)));
    });
    await p.shutdown();
  } else if (ch === "fcm") {
    const f = cfg.gateways.fcm.apps[0];
    const ca = readFileSync(f.caFile!);
    const agent = new (class extends https.Agent {
      override createConnection(o: tls.ConnectionOptions) {
        return tls.connect({ ...o, host: f.host, port: f.port, ca });
      }
    })({ keepAlive: true, maxSockets: f.sockets });
    const app = initializeApp({ projectId: f.projectId, credential: { getAccessToken: () => Promise.resolve({ access_token: f.sandboxToken, expires_in: 3600 }) }, httpAgent: agent }, `raw-${prefix}`);
    const m = getMessaging(app);
    m.enableLegacyHttpTransport();
    // One `send` per message, the SDK's cheapest way (its `sendEach` spends more per message). The same message as the
    // gateway's: the notification's id in `data` (which opens are reported with), Android TTL and priority.
    const expiresAt = Date.now() + 3_600_000;
    await pool(n, f.concurrency, (i) =>
      m.send({
        token: tokenFor(ch, prefix, i), notification: { title: "Bench", body: "Gateway throughput" }, data: { nfx_id: "n_benchraw" },
        android: { ttl: Math.max(0, expiresAt - Date.now()), priority: "normal" },
      }),
    );
    await deleteApp(app);
    agent.destroy();
  } else if (ch === "email") {
    const a = cfg.gateways.email.apps[0];
    const client = new Client();
    client.setApiKey(a.apiKey);
    client.setDefaultRequest("baseUrl", a.baseUrl);
    client.setDefaultRequest("httpAgent" as "baseUrl", new http.Agent({ keepAlive: true, maxSockets: a.sockets }) as unknown as string);
    const mail = new MailService();
    mail.setClient(client);
    // The same request as the gateway's: a category, and per recipient the custom_args SendGrid's event webhook
    // returns (which notification, user and device), without which opens, bounces and deliveries could not be tracked;
    // and, the category being commercial, one-click unsubscribe: each recipient's own signed link in List-Unsubscribe
    // (what Gmail's and Yahoo's bulk-sender rules require), signed here the plain way (HMAC-SHA256 of the claims).
    const secret = cfg.engagement.secret;
    const exp = Math.floor(Date.now() / 1000) + 60 * 86400;
    const unsubscribe = (user: string): string => {
      const claims = Buffer.from(JSON.stringify(["u", user, "marketing", exp])).toString("base64url");
      return `<${cfg.engagement.baseUrl}/v1/consent/u/${claims}.${createHmac("sha256", secret).update(claims).digest().subarray(0, 16).toString("base64url")}>`;
    };
    await pool(Math.ceil(n / BATCH), a.concurrency, (r) =>
      mail.send({
        from: a.from, subject: "Bench", content: [{ type: "text/plain", value: "Gateway throughput" }], categories: ["marketing"], custom_args: { nfx_id: "n_benchraw" },
        headers: { "List-Unsubscribe-Post": "List-Unsubscribe=One-Click" },
        personalizations: Array.from({ length: Math.min(BATCH, n - r * BATCH) }, (_, j) => ({
          to: [{ email: tokenFor(ch, prefix, r * BATCH + j) }], custom_args: { nfx_id: "n_benchraw", nfx_user: `u${r * BATCH + j}`, nfx_device: "d" },
          headers: { "List-Unsubscribe": unsubscribe(`u${r * BATCH + j}`) },
        })),
      } as never),
    );
  } else {
    const a = cfg.gateways.sms.apps[0];
    const base = a.baseUrl!;
    const rc = new (class extends twilio.RequestClient {
      override request<T>(o: Parameters<twilio.RequestClient["request"]>[0]) {
        return super.request<T>({ ...o, uri: o.uri.replace(/^https:\/\/api\.twilio\.com/, base) } as never);
      }
    })({ keepAlive: true, maxSockets: a.sockets });
    rc.axios.defaults.httpAgent = new http.Agent({ keepAlive: true, maxSockets: a.sockets });
    const c = twilio(a.accountSid, a.authToken, { httpClient: rc });
    // The same status callback URL the gateway asks for: the sandbox then posts the same callbacks for both runs, and
    // their cost (the sandbox's, not the client's) weighs on both alike.
    const brief = { id: "n_benchraw" } as NotificationBrief;
    const cbBase = cfg.engagement.baseUrl;
    await pool(n, a.concurrency, (i) => {
      const to = tokenFor(ch, prefix, i);
      return c.messages.create({ to, from: a.from, body: "Gateway throughput", ...(cbBase ? { statusCallback: statusCallbackUrl(cbBase, a.name, brief, { nid: brief.id, user: `u${i}`, device: "d", token: to }) } : {}) });
    });
  }
}

async function main(): Promise<void> {
  const bc = await startBenchCluster("gateways", [], false);
  const sb = await startSandboxProcess();
  const key = ensureApnsKey(join(tmpdir(), "nfx-bench-apns.p8"));
  const cfg = loadConfig({ env: {}, overrides: mergeDeep(bc.cluster.cfg, { ...sandboxOverrides(sb.ports, key), log: { level: "warn" } }) });
  const log = createLogger({ level: "warn", redact: true });
  await ensureTopology(bc.nats, cfg);
  const clients: Record<Exclude<Channel, "inapp" | "webhook">, () => ChannelClient> = {
    apns: () => createApnsClient(cfg), fcm: () => createFcmClient(cfg), email: () => createEmailClient(cfg), sms: () => createSmsClient(cfg),
  };
  const result: Record<string, unknown> = { bench: "gateways" };
  try {
    // BENCH_CHANNELS=apns,fcm runs only those.
    const only = process.env.BENCH_CHANNELS?.split(",");
    for (const ch of (["apns", "fcm", "email", "sms"] as const).filter((c) => !only || only.includes(c))) {
      const n = N[ch];
      const cpu = (): number[] => [cpuSecs(process.pid), cpuSecs(sb.proc.pid), cpuSecs(bc.cluster.nats.proc.pid), cpuSecs(bc.cluster.redis.proc.pid)];
      // BENCH_CPU_PROF=<dir>: a CPU profile of each channel's bare run and gateway run (the last round), <dir>/{raw,gateway}-<channel>.cpuprofile.
      const profDir = process.env.BENCH_CPU_PROF;
      if (profDir) mkdirSync(profDir, { recursive: true });
      const cpuRaw = [0, 0, 0, 0];
      const cpuPipe = [0, 0, 0, 0];
      const add = (into: number[], a: number[], b: number[]): void => b.forEach((v, i) => (into[i] += v - a[i]));
      const rawGc = { pauses: 0, ms: 0 };
      const pipeGc = { pauses: 0, ms: 0 };
      const addGc = (into: { pauses: number; ms: number }, g: { pauses: number; ms: number }): void => void ((into.pauses += g.pauses), (into.ms += g.ms));
      const rounds: { raw_sdk_per_s: number; pipeline_per_s: number; ratio: number }[] = [];
      let rawSends = 0, rawSecs = 0, pipeSends = 0, pipeSecs = 0, lost = 0, dup = 0;
      const redisIn: RedisCommandStats = { calls: new Map(), usec: new Map() };
      let bytesIn = 0;
      // First a warm-up round (a quarter of the sends on each side, numbered 9, not counted in the rates or CPU): the
      // side run first would otherwise pay for compiling the SDK's and Node's HTTP code alone.
      for (let k = -1; k < ROUNDS; k++) {
        const warm = k < 0;
        const round = warm ? 9 : k;
        const m = warm ? Math.ceil(n / 4) : n;
        const prof = (side: string): string | undefined => (profDir && round === ROUNDS - 1 ? join(profDir, `${side}-${ch}.cpuprofile`) : undefined);
        const c0 = cpu();
        const { gc: rg } = await observed(() => rawSdk(cfg, ch, m, `r${round}`), prof("raw"));
        if (!warm) add(cpuRaw, c0, cpu());
        if (!warm) addGc(rawGc, rg);
        const raw = await accepted(sb.ports.control, PROVIDER[ch], tokenPrefix(ch, `r${round}`));
        await resetSandbox(sb.ports.control);

        // nfx: the sends queued on the channel's stream first (a notification of its own per round), then one gateway started; timed until the sandbox accepted them all.
        const prefix: Run = `p${round}`;
        const brief: NotificationBrief = { id: `n_bench${ch}${"0".repeat(20 - ch.length)}${round}`, createdAt: Date.now(), expiresAt: Date.now() + 3_600_000, priority: "normal", category: "marketing", channels: ["push"], content: CONTENT };
        for (let b = 0; b * BATCH < m; b++) {
          const sends = Array.from({ length: Math.min(BATCH, m - b * BATCH) }, (_, j) => ({ nid: brief.id, user: `u${b * BATCH + j}`, device: "d", token: tokenFor(ch, prefix, b * BATCH + j) }));
          const batch: SendBatch = { type: "send_batch", channel: ch, shard: b % cfg.cluster.shards, notifications: { [brief.id]: brief }, sends };
          await bc.nats.js.publish(sendSubject(ch, "normal"), encode(batch), { msgID: `bench:${ch}:${round}:${b}` });
        }
        const stats = async (): Promise<number> => ((await (await fetch(`http://127.0.0.1:${sb.ports.control}/accepted`)).json()) as Record<string, number>)[PROVIDER[ch]];
        const before = await stats();
        const k0 = await redisCommandStats(bc.redis);
        const b0 = await redisBytesIn(bc.redis);
        const c2 = cpu();
        const { gc: pg } = await observed(async () => {
          const gw = await runGateway({ cfg, nats: bc.nats, redis: bc.redis, log, lanes: ["bulk"] }, clients[ch]);
          let now = before;
          await waitUntil(() => `the sandbox to accept ${m} ${ch} sends through the gateway in ${warm ? "the warm-up round" : `round ${round + 1}`} (accepted ${now - before})`, async () => (now = await stats()) >= before + m, 300_000, 200);
          await gw.stop();
        }, prof("gateway"));
        const c3 = cpu();
        const pipe = await accepted(sb.ports.control, PROVIDER[ch], tokenPrefix(ch, prefix));
        await resetSandbox(sb.ports.control);
        // Every round's sends, the warm-up's too, must each arrive once.
        lost += m - pipe.byToken.size;
        dup += [...pipe.byToken.values()].reduce((a, c) => a + c - 1, 0);
        if (warm) continue;
        add(cpuPipe, c2, c3);
        addGc(pipeGc, pg);
        rawSends += raw.n - 1;
        rawSecs += raw.secs;
        // Only the gateway runs' Redis commands count (the bare runs use none; publishing the batches uses none).
        statsGrowth(k0, await redisCommandStats(bc.redis), redisIn);
        bytesIn += (await redisBytesIn(bc.redis)) - b0;
        pipeSends += pipe.n - 1;
        pipeSecs += pipe.secs;
        rounds.push({ raw_sdk_per_s: Math.round(raw.perSec), pipeline_per_s: Math.round(pipe.perSec), ratio: Number((pipe.perSec / raw.perSec).toFixed(2)) });
      }
      // What the gateway asked of redis-server per send (script calls as evalsha, and each command they ran under its own name).
      const redisPerSend = { calls: perItem(redisIn.calls, n * ROUNDS), bytes_in: Math.round(bytesIn / (n * ROUNDS)) };
      // CPU µs per send of each process over all rounds: [this process (SDK or gateway), sandbox, nats-server, redis-server].
      const perSend = (c: number[]): number[] => c.map((v) => Math.round((v * 1e6) / (n * ROUNDS)));
      const raw = rawSends / rawSecs;
      const pipe = pipeSends / pipeSecs;
      result[ch] = {
        sends: n, rounds: ROUNDS, pipeline_per_s: Math.round(pipe), raw_sdk_per_s: Math.round(raw), ratio: Number((pipe / raw).toFixed(2)), lost, duplicates: dup,
        cpu_us_per_send: { raw: perSend(cpuRaw), pipeline: perSend(cpuPipe), order: "client,sandbox,nats,redis" }, gc: { raw: rawGc, pipeline: pipeGc }, redis_per_send: redisPerSend, by_round: rounds,
      };
      console.log(`${ch}: ${JSON.stringify(result[ch])}`);
    }
  } finally {
    sb.proc.kill("SIGTERM");
    await bc.close();
  }
  report("gateways", result);
  process.exit(0);
}

await main();
