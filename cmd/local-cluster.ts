// A whole nfx cluster on this machine: nats-server, redis-server, the sandbox providers and every role as its own process.
import type { ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";

import { pino } from "pino";

import { DEV_NATS_SECRET } from "../config/schema.js";
import { type Config, envWithout, loadConfig } from "../lib/core/config.js";
import { createLogger } from "../lib/core/log.js";
import { freePorts, type ServerProcess, startNatsServer, startRedisServer } from "../lib/infra/launch.js";
import { connectNats } from "../lib/infra/nats.js";
import { renderNatsServerConf } from "../lib/infra/nats-auth.js";
import { type NatsCluster, startNatsCluster } from "../lib/infra/nats-cluster.js";
import { type RedisCluster, startRedisCluster } from "../lib/infra/redis-cluster.js";
import { freshSecret, localSecrets } from "../lib/infra/secrets.js";
import { ensureTopology } from "../lib/infra/topology.js";
import { ensureApnsKey, type Sandbox, sandboxOverrides, type SandboxPorts, SENDGRID_WEBHOOK_PUBLIC_KEY, startSandbox } from "../sandbox/index.js";
import { niceOf, setNice, spawnRoleProcess, stopProcesses } from "./role-process.js";
import { type ProcessSpec, type Role, ROLES } from "./roles.js";

/** The API key a local cluster gets when its config names none. Development only. */
export const DEV_API_KEY = "nfx-dev-key-not-for-production";

export interface LocalClusterOptions {
  /** Holds nats-server's store, redis-server's files and the generated config and APNs key. */
  dataDir: string;
  /** 0 = any free port. With `natsNodes` > 1: the first node's port, the others on the next ports (0: all free). */
  natsPort: number;
  /** nats-servers in one cluster (routes on loopback, JetStream on each); streams and buckets get min(3, n) replicas. Default 1. */
  natsNodes?: number;
  redisPort: number;
  /** HTTP API port of the ingest role; 0 = a free port. */
  httpPort: number;
  /** WebSocket gateway port; 0 or absent = a free port. */
  wsPort?: number;
  /** Keep Redis data on disk (append-only file). */
  persist: boolean;
  /** One redis-server (default, on `redisPort`), or a Redis Cluster of three masters with a replica each on free ports, which roles reach through `redis.cluster`. */
  redis?: "single" | "cluster";
  /** Sandbox ports (0 = any free), or null to use real providers from the user's config. */
  sandbox: (Partial<SandboxPorts> & { faults?: readonly unknown[] }) | null;
  /** One process per spec: a role, or a lane role restricted to a lane class (`shard@urgent`). */
  roles: readonly ProcessSpec[];
  /**
   * Roles of `roles` to run together in one process (`nfx run <role>...`) instead of one each; `procs` then maps each
   * of them to that process. The test harness uses it: a role process spends about a CPU-second loading modules.
   */
  together?: readonly Role[];
  /** Extra configuration layered over the user's file. */
  overrides?: Record<string, unknown>;
  /** The user's config file, if any. */
  configFile?: string;
  /** Receives every line a role process prints. */
  onLine?: (role: string, line: string) => void;
}

export interface LocalCluster {
  /** The nats-server (with `natsNodes` > 1: the first node's; see {@link natsCluster}). */
  nats: ServerProcess;
  /** The nats-server cluster, when `natsNodes` > 1. */
  natsCluster: NatsCluster | null;
  /** nats-server's configuration text (accounts, users, permissions), to restart it alike. */
  natsConf: string;
  /** The redis-server; with `redis: "cluster"`, the cluster's first node (the cluster is {@link redisCluster}). */
  redis: ServerProcess;
  /** The Redis Cluster when started with `redis: "cluster"`, else null. */
  redisCluster: RedisCluster | null;
  sandbox: Sandbox | null;
  /** Base URL of the ingest role's HTTP API. */
  httpUrl: string;
  /** Base URL of the WebSocket gateway (http://; the socket is at ws://…/v1/ws, the demo page at /demo). */
  wsUrl: string;
  /** The API key local tools use when the config has none: the development key below. */
  apiKey: string;
  /** The config file every role process was started with. */
  configFile: string;
  /** The environment role processes are started with: this process's, without the `NFX_*` variables that would override what the cluster set (`envWithout`, lib/core/config.ts). */
  roleEnv: NodeJS.ProcessEnv;
  cfg: Config;
  /** The processes by spec (`shard`, `shard@urgent`, ...); roles started `together` share one. */
  procs: Map<ProcessSpec, ChildProcess>;
  /** Starts (or restarts) a role process and resolves when it reports ready. */
  startRole(role: ProcessSpec): Promise<ChildProcess>;
  /** Starts one more process of `role` (e.g. a second shard actor), stopped with the cluster; resolves when it reports ready. */
  startExtra(role: ProcessSpec): Promise<ChildProcess>;
  /** Stops roles, then the sandbox, redis-server and nats-server. Safe to call twice. */
  stop(): Promise<void>;
  /**
   * SIGKILLs nats-server and starts it again on the same port and store
   * directory (a crash and a restart); `nats` is then the new server. Roles
   * reconnect by themselves. Resolves when the new server accepts connections.
   */
  restartNats(): Promise<ServerProcess>;
}

/** `b` layered over `a`: objects merge key by key, anything else (arrays too) replaces. */
export function mergeDeep(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const cur = out[k];
    out[k] = v && typeof v === "object" && !Array.isArray(v) && cur && typeof cur === "object" ? mergeDeep(cur as Record<string, unknown>, v as Record<string, unknown>) : v;
  }
  return out;
}

/** The generated secrets of an earlier cluster in the same data dir, for the keys `fresh` generates now; {} when there are none. */
function previousSecrets(configFile: string, fresh: Record<string, unknown>): Record<string, unknown> {
  if (!existsSync(configFile)) return {};
  try {
    const prev = JSON.parse(readFileSync(configFile, "utf8")) as { ws?: { secret?: unknown }; engagement?: { secret?: unknown } };
    const want = fresh as { ws?: { secret?: string }; engagement?: { secret?: string } };
    const ws = want.ws?.secret !== undefined && typeof prev.ws?.secret === "string" ? { ws: { secret: prev.ws.secret } } : {};
    const eng = want.engagement?.secret !== undefined && typeof prev.engagement?.secret === "string" ? { engagement: { secret: prev.engagement.secret } } : {};
    return { ...ws, ...eng };
  } catch {
    return {};
  }
}

/**
 * Boots the cluster. Every role runs as `nfx run <role>` in its own process
 * with a generated config file; this resolves when each has reported over IPC
 * that it is ready. On failure everything already started is stopped before the throw.
 */
export async function startLocalCluster(o: LocalClusterOptions): Promise<LocalCluster> {
  const dataDir = resolve(o.dataDir);
  mkdirSync(dataDir, { recursive: true });
  const stops: (() => Promise<void>)[] = [];
  const procs = new Map<ProcessSpec, ChildProcess>();
  const extras: ChildProcess[] = [];
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await stopProcesses([...new Set([...procs.values(), ...extras])]);
    for (const s of stops.reverse()) await s().catch(() => undefined);
  };
  try {
    // Fresh NATS credentials per cluster unless the user's config sets its own secret (lib/infra/nats-auth.ts).
    const userCfg = loadConfig({ file: o.configFile, overrides: o.overrides ?? {}, env: {} });
    const natsSecret = userCfg.nats.secret === DEV_NATS_SECRET ? freshSecret() : userCfg.nats.secret;
    const natsConf = renderNatsServerConf({ secret: natsSecret, producers: userCfg.nats.producers, serverName: "nfx-local" });
    const natsNodes = o.natsNodes ?? 1;
    let natsCluster: NatsCluster | null = null;
    if (natsNodes > 1) {
      const clientPorts = o.natsPort ? Array.from({ length: natsNodes }, (_, i) => o.natsPort + i) : undefined;
      const conf = (serverName: string): string => renderNatsServerConf({ secret: natsSecret, producers: userCfg.nats.producers, serverName });
      natsCluster = await startNatsCluster({ dir: join(dataDir, "nats"), nodes: natsNodes, conf, clientPorts });
      const nc = natsCluster;
      stops.push(() => nc.stop());
      for (const n of natsCluster.nodes) setNice(n.server.proc, userCfg.lanes.nice.servers, (msg) => console.error(msg));
    }
    const nats = natsCluster ? natsCluster.nodes[0].server : await startNatsServer({ storeDir: join(dataDir, "nats"), port: o.natsPort, conf: natsConf });
    let natsNow = nats;
    if (!natsCluster) stops.push(() => natsNow.stop());
    const redisCluster = o.redis === "cluster" ? await startRedisCluster({ dir: join(dataDir, "redis-cluster"), masters: 3, replicasPerMaster: 1, persist: o.persist }) : null;
    const redis = redisCluster ? redisCluster.nodes[0] : await startRedisServer({ dir: join(dataDir, "redis"), port: o.redisPort, persist: o.persist });
    stops.push(redisCluster ? redisCluster.stop : redis.stop);
    const reportNice = (msg: string): void => console.error(msg);
    if (!natsCluster) setNice(nats.proc, userCfg.lanes.nice.servers, reportNice);
    for (const r of redisCluster ? redisCluster.nodes : [redis]) setNice(r.proc, userCfg.lanes.nice.servers, reportNice);
    let sandbox: Sandbox | null = null;
    // The ports left to choose, taken together so the same port is not handed out twice.
    const free = await freePorts(Number(!o.httpPort) + Number(!o.wsPort));
    const httpPort = o.httpPort || free.shift()!;
    const wsPort = o.wsPort || free.shift()!;
    let overrides: Record<string, unknown> = {
      nats: { servers: natsCluster ? natsCluster.urls : [nats.url], secret: natsSecret },
      redis: redisCluster ? { cluster: redisCluster.seeds } : { url: redis.url, cluster: [] },
      http: { port: httpPort }, ws: { port: wsPort },
      ...(natsCluster ? { streams: { replicas: Math.min(3, natsNodes) } } : {}),
    };
    if (o.sandbox) {
      // The sandbox's SendGrid posts its signed events to this cluster's webhook; Twilio calls back where each message asks.
      sandbox = await startSandbox(o.sandbox, o.sandbox.faults, { sendgridWebhookUrl: `http://127.0.0.1:${httpPort}/v1/webhooks/sendgrid` });
      stops.push(sandbox.close);
      // Local endpoints (the sandbox's webhook receiver, a developer's own server) are on loopback: allowed here, refused by default.
      overrides = mergeDeep(overrides, { engagement: { baseUrl: `http://127.0.0.1:${httpPort}` }, webhooks: { sendgridPublicKey: SENDGRID_WEBHOOK_PUBLIC_KEY }, endpoints: { allowNetworks: ["127.0.0.0/8", "::1/128"] } });
    }
    overrides = mergeDeep(overrides, o.overrides ?? {});
    if (sandbox) {
      // Every configured provider app (one per channel by default) is pointed at the sandbox.
      const apps = loadConfig({ file: o.configFile, overrides, env: {} }).gateways;
      overrides = mergeDeep(overrides, sandboxOverrides(sandbox.ports, ensureApnsKey(join(dataDir, "apns-sandbox-key.p8")), apps));
    }
    // A local cluster without API keys gets a development key, so the HTTP API can be tried at once.
    if (loadConfig({ file: o.configFile, overrides }).apiKeys.length === 0) {
      overrides = mergeDeep(overrides, { apiKeys: [{ name: "dev", key: DEV_API_KEY, scopes: ["admin"] }] });
    }
    // Secrets the user's config leaves at their published defaults: fresh ones per cluster (kept when its data dir is reused, so
    // tokens and tracking links survive a restart), and the WebSocket gateway's own origins.
    const configFile = join(dataDir, "cluster-config.json");
    const fresh = localSecrets(loadConfig({ file: o.configFile, overrides }), wsPort);
    overrides = mergeDeep(overrides, mergeDeep(fresh, previousSecrets(configFile, fresh)));
    // What this cluster set (its servers, ports, sandbox apps, secrets, the caller's overrides) is not the shell's to
    // override: a role started here never follows, say, an NFX_REDIS__URL left over from another setup. `cfg`, what the
    // roles run with, is read with the same environment.
    const { env: roleEnv, dropped } = envWithout(process.env, overrides);
    for (const d of dropped.filter((x) => x.differs)) console.error(`nfx: ${d.name} ignored: this local cluster sets ${d.key} itself`);
    const base = loadConfig({ file: o.configFile, overrides, env: {} });
    const cfg = loadConfig({ file: o.configFile, overrides, env: roleEnv });
    writeFileSync(configFile, JSON.stringify(base, null, 2), { mode: 0o600 });
    // Roles may not create streams (least privilege): the topology is made once here, as nfx-admin.
    const admin = await connectNats(base, createLogger({ level: "warn", redact: true }, pino.destination(2)), "nfx-up-init");
    try {
      await ensureTopology(admin, base);
    } finally {
      await admin.nc.close();
    }

    const spawnRole = (spec: ProcessSpec, extra: boolean): Promise<ChildProcess> =>
      spawnRoleProcess(spec, {
        configFile, nice: niceOf(base, spec), readyTimeoutMs: cfg.up.readyTimeoutMs, env: roleEnv, onLine: (line) => o.onLine?.(spec, line),
        started: (p) => void (extra ? extras.push(p) : procs.set(spec, p)),
      });

    const startRole = (role: ProcessSpec): Promise<ChildProcess> => spawnRole(role, false);
    const startExtra = (role: ProcessSpec): Promise<ChildProcess> => spawnRole(role, true);
    const together = o.roles.filter((r): r is Role => (o.together ?? []).includes(r as Role));
    const shared = together.length > 1
      ? spawnRoleProcess(together, {
        configFile, nice: 0, readyTimeoutMs: cfg.up.readyTimeoutMs, env: roleEnv, onLine: (line) => o.onLine?.(together.join("+"), line),
        started: (p) => together.forEach((r) => procs.set(r, p)),
      })
      : null;
    await Promise.all([shared, ...o.roles.filter((r) => !(shared && together.includes(r as Role))).map(startRole)]);
    const apiKey = cfg.apiKeys.find((k) => k.scopes.includes("admin"))?.key ?? cfg.apiKeys[0].key;
    const cluster: LocalCluster = { nats, natsCluster, natsConf, redis, redisCluster, sandbox, httpUrl: `http://${cfg.http.host}:${cfg.http.port}`, wsUrl: `http://${cfg.ws.host}:${cfg.ws.port}`, apiKey, configFile, roleEnv, cfg, procs, startRole, startExtra, stop, restartNats };
    async function restartNats(): Promise<ServerProcess> {
      const old = natsNow.proc;
      if (old.exitCode === null && old.signalCode === null) await new Promise<void>((r) => (old.once("exit", () => r()), old.kill("SIGKILL")));
      natsNow = await startNatsServer({ storeDir: join(dataDir, "nats"), port: natsNow.port, conf: natsConf });
      setNice(natsNow.proc, userCfg.lanes.nice.servers, (msg) => console.error(msg));
      cluster.nats = natsNow;
      return natsNow;
    }
    return cluster;
  } catch (err) {
    await stop();
    throw err;
  }
}

export { ROLES };
