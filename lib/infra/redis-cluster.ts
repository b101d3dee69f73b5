// Starts a local Redis Cluster (masters with replicas, one redis-server per node in a directory of its own, on free loopback ports): used by the test harness and startLocalCluster.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";

import { Redis as RedisClient } from "ioredis";

import { freePorts, requireBinary, track, waitForPort } from "./launch.js";
import { REDIS_SERVER_FLAGS } from "./redis.js";

/** One redis-server of a {@link RedisCluster}. Its process changes when it is restarted; read `proc` each time. */
export interface RedisClusterNode {
  /** Client port on 127.0.0.1. */
  readonly port: number;
  /** Cluster bus port (`cluster-port`), chosen free like the client port rather than assumed free at port + 10000. */
  readonly busPort: number;
  /** `redis://127.0.0.1:<port>`. */
  readonly url: string;
  /** The node's directory: its `nodes.conf` (and append-only file with `persist`). */
  readonly dir: string;
  /** The running (or last) process. */
  readonly proc: ChildProcess;
  /** True while the process runs. */
  running: () => boolean;
  /** Stops it (SIGTERM, then SIGKILL after 5 s); resolves when it exited. A test SIGKILLs `proc` itself to crash it. */
  stop: () => Promise<void>;
  /**
   * Starts it again on the same ports and directory (its nodes.conf makes it
   * rejoin the cluster, as a replica if its slots failed over meanwhile).
   * Resolves when it accepts connections; throws if it is running or exits first.
   */
  start: () => Promise<void>;
  /** The last 64 KB the node wrote, for error messages. */
  output: () => string;
}

/** A running Redis Cluster of local processes. */
export interface RedisCluster {
  /** Every node's URL: the seed nodes of `redis.cluster`. */
  readonly seeds: string[];
  readonly nodes: readonly RedisClusterNode[];
  /**
   * Resolves once every running node reports `cluster_state:ok`, knows
   * every node, and every running replica's link to its master is up;
   * rejects after `ms` naming the node that is not.
   */
  waitHealthy: (ms?: number) => Promise<void>;
  /** Ports of the nodes that are masters now and not failed, as a running node sees them (roles change after a failover). */
  masters: () => Promise<number[]>;
  /** Stops every node; resolves when all exited. Safe to call twice. */
  stop: () => Promise<void>;
}

export interface RedisClusterOptions {
  /** Parent of the node directories (`node-<i>`), which are emptied first: every cluster starts fresh. */
  dir: string;
  /** Masters, each holding a third (for 3) of the 16384 slots. At least 3 (redis-cli refuses fewer). */
  masters: number;
  /** Replicas per master. */
  replicasPerMaster: number;
  /** Append-only file per node (kept across a node's restart within this cluster's life). */
  persist?: boolean;
  /** `cluster-node-timeout`: how long a master may be unreachable before its replica takes over. Default 5000 ms. */
  nodeTimeoutMs?: number;
  /** Bound on the whole start (processes, `--cluster create`, health). Default 60 s. */
  deadlineMs?: number;
}

/** `cluster info` / `info replication` lines as a map. */
const fields = (text: string): Map<string, string> => new Map(text.split(/\r?\n/).map((l) => l.split(":", 2) as [string, string]).filter((kv) => kv.length === 2));

/** One short-lived connection to a node that gives up at once when the node is down (this module's probes never queue). */
function probe(port: number): RedisClient {
  return new RedisClient({ host: "127.0.0.1", port, lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 1000 });
}

/** Why `port` is not healthy yet, or null when it is. */
async function unhealthy(port: number, nodes: number): Promise<string | null> {
  const r = probe(port);
  try {
    await r.connect();
    const info = fields(String(await r.call("CLUSTER", "INFO")));
    if (info.get("cluster_state") !== "ok") return `cluster_state:${info.get("cluster_state")}`;
    if (Number(info.get("cluster_known_nodes")) !== nodes) return `knows ${info.get("cluster_known_nodes")} of ${nodes} nodes`;
    const repl = fields(await r.info("replication"));
    if (repl.get("role") === "slave" && repl.get("master_link_status") !== "up") return `replica link ${repl.get("master_link_status")}`;
    return null;
  } catch (err) {
    return (err as Error).message;
  } finally {
    r.disconnect();
  }
}

/** Runs redis-cli with `args`; resolves its output, rejects on a non-zero exit or after `ms` (the process is killed). */
function redisCli(args: string[], ms: number): Promise<string> {
  return new Promise((res, rej) => {
    const p = spawn("redis-cli", args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    p.stdout.on("data", (b: Buffer) => void (out += b.toString()));
    p.stderr.on("data", (b: Buffer) => void (out += b.toString()));
    const t = setTimeout(() => p.kill("SIGKILL"), ms);
    p.once("error", (err) => (clearTimeout(t), rej(err)));
    p.once("exit", (code, sig) => {
      clearTimeout(t);
      if (code === 0) res(out);
      else rej(new Error(`redis-cli ${args.slice(0, 2).join(" ")} ${sig ? `killed (${sig}) after ${ms} ms` : `exited with ${code}`}: ${out.slice(-4000)}`));
    });
  });
}

/**
 * Starts a Redis Cluster of `masters` masters with `replicasPerMaster`
 * replicas each: one `redis-server --cluster-enabled yes` per node on
 * 127.0.0.1, each in `<dir>/node-<i>` with a client port and a bus port
 * picked free by the OS (`freePorts`, retried if taken before the node binds
 * it), joined with `redis-cli --cluster create … --cluster-replicas N
 * --cluster-yes`. Resolves once every node reports `cluster_state:ok` and
 * every replica is linked. Every process is registered like
 * {@link startRedisServer}'s (killed if this process exits) and, if the start
 * fails or passes `deadlineMs`, stopped before the throw. Throws
 * RuntimeMissing if redis-server or redis-cli is not on PATH.
 */
export async function startRedisCluster(o: RedisClusterOptions): Promise<RedisCluster> {
  requireBinary("redis-server");
  requireBinary("redis-cli");
  const total = o.masters * (1 + o.replicasPerMaster);
  const nodeTimeoutMs = o.nodeTimeoutMs ?? 5000;
  const until = Date.now() + (o.deadlineMs ?? 60_000);
  const left = (): number => Math.max(1, until - Date.now());
  const nodes: RedisClusterNode[] = [];
  const stop = async (): Promise<void> => void (await Promise.all(nodes.map((n) => n.stop())));
  const taken = new Set<number>();

  const launch = async (dir: string, port: number, busPort: number, waitMs = Math.min(10_000, left())): Promise<{ proc: ChildProcess; t: ReturnType<typeof track> }> => {
    const args = [
      "--port", String(port), "--bind", "127.0.0.1", "--protected-mode", "yes", "--dir", dir, "--save", "", "--appendonly", o.persist ? "yes" : "no",
      "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port", String(busPort), "--cluster-node-timeout", String(nodeTimeoutMs),
      ...REDIS_SERVER_FLAGS,
    ];
    const proc = spawn("redis-server", args, { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
    const t = track(proc);
    try {
      await Promise.race([
        waitForPort(port, waitMs),
        new Promise((_, rej) => proc.once("exit", (c) => rej(new Error(`redis-server (cluster node :${port}) exited with ${c}: ${t.output()}`)))),
      ]);
      return { proc, t };
    } catch (err) {
      await t.stop();
      throw err;
    }
  };

  const startNode = async (i: number): Promise<RedisClusterNode> => {
    const dir = join(o.dir, `node-${i}`);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    for (let attempt = 0; ; attempt++) {
      let [port, busPort] = await freePorts(2);
      while (taken.has(port) || taken.has(busPort)) [port, busPort] = await freePorts(2);
      taken.add(port).add(busPort);
      let cur: Awaited<ReturnType<typeof launch>>;
      try {
        cur = await launch(dir, port, busPort);
      } catch (err) {
        // Another process took a port between the probe and the bind: pick again.
        if (attempt >= 4 || Date.now() > until) throw err;
        continue;
      }
      const node: RedisClusterNode = {
        port, busPort, url: `redis://127.0.0.1:${port}`, dir,
        get proc() {
          return cur.proc;
        },
        running: () => cur.proc.exitCode === null && cur.proc.signalCode === null,
        stop: () => cur.t.stop(),
        output: () => cur.t.output(),
        async start() {
          if (node.running()) throw new Error(`redis cluster node :${port} is running`);
          // A restart has its own 10 s, not what is left of the cluster's start-up deadline.
          cur = await launch(dir, port, busPort, 10_000);
        },
      };
      return node;
    }
  };

  const waitHealthy = async (ms = 30_000): Promise<void> => {
    const end = Date.now() + ms;
    for (;;) {
      const live = nodes.filter((n) => n.running());
      const why = await Promise.all(live.map(async (n) => [n.port, await unhealthy(n.port, total)] as const));
      const bad = why.find(([, w]) => w !== null);
      if (!bad) return;
      if (Date.now() > end) throw new Error(`redis cluster not healthy after ${ms} ms: node :${bad[0]}: ${bad[1]}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  const masters = async (): Promise<number[]> => {
    for (const n of nodes.filter((x) => x.running())) {
      const r = probe(n.port);
      try {
        await r.connect();
        const text = String(await r.call("CLUSTER", "NODES"));
        // <id> <ip:port@cport> <flags> ...: masters not marked fail.
        return text.split("\n").map((l) => l.split(" ")).filter((f) => f.length > 2 && f[2].split(",").includes("master") && !f[2].includes("fail")).map((f) => Number(f[1].split("@")[0].split(":").pop())).sort((a, b) => a - b);
      } catch {
        // try the next node
      } finally {
        r.disconnect();
      }
    }
    throw new Error("redis cluster: no node answers CLUSTER NODES");
  };

  try {
    if (o.masters < 3) throw new Error(`masters: must be at least 3 (redis-cli --cluster create refuses fewer), got ${o.masters}`);
    mkdirSync(o.dir, { recursive: true });
    for (let i = 0; i < total; i++) nodes.push(await startNode(i));
    await redisCli(["--cluster", "create", ...nodes.map((n) => `127.0.0.1:${n.port}`), "--cluster-replicas", String(o.replicasPerMaster), "--cluster-yes"], left());
    await waitHealthy(left());
  } catch (err) {
    await stop();
    throw err;
  }
  return { seeds: nodes.map((n) => n.url), nodes, waitHealthy, masters, stop };
}
