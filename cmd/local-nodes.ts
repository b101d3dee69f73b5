// Roles spread over N local "machines" (`nfx up --nodes N`): each node a process group of its own (`nfx node`) with its own config file.
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

import { freePorts } from "../lib/infra/launch.js";
import type { ProcessSpec } from "./roles.js";

const NFX_BIN = fileURLToPath(new URL("./nfx.js", import.meta.url));

/**
 * The processes node `i` of `n` runs: every node runs what scales out and survives a node's loss — ingest (each its own
 * HTTP port), router, a shard actor (the 64 shards spread over the nodes' shard actors), a campaign actor (leased per
 * campaign) and every gateway; the first node also runs the scheduler, the tracker and the WebSocket gateway.
 */
export function nodeRoles(i: number): ProcessSpec[] {
  const everywhere: ProcessSpec[] = ["ingest", "router", "shard", "campaign", "gateway-apns", "gateway-fcm", "gateway-email", "gateway-sms", "gateway-webhook"];
  return i === 0 ? [...everywhere, "scheduler", "tracker", "ws-gateway"] : everywhere;
}

/** One simulated machine. */
export interface LocalNode {
  /** `n1`, `n2`, ... */
  name: string;
  /** Its own config: the cluster's, with its own nats-server listed first and its own HTTP and WebSocket ports. */
  configFile: string;
  roles: readonly ProcessSpec[];
  /** Base URL of this node's HTTP API. */
  httpUrl: string;
  /** The node's supervisor (`nfx node`), leader of the node's process group; changes on restart. */
  proc: ChildProcess;
  /** SIGKILLs the whole process group (the machine dies: its supervisor and every role at once). */
  kill(): Promise<void>;
  /** Starts the node again (after {@link kill}); resolves when every role reports ready. */
  restart(): Promise<void>;
}

/**
 * Writes each node's config from the cluster's `configFile` and starts the nodes, each as `nfx node --roles ...` in a
 * process group of its own, with `env` (the cluster's `roleEnv`; this process's by default); resolves when every
 * node's roles are ready. `stop()` stops every node (SIGTERM: a node stops its roles and exits). Lines printed by a
 * node's roles go to `onLine` labelled `<node>/<role>`.
 */
export async function startNodes(o: { n: number; dataDir: string; configFile: string; natsUrls: readonly string[]; env?: NodeJS.ProcessEnv; onLine?: (who: string, line: string) => void }): Promise<{ nodes: LocalNode[]; stop(): Promise<void> }> {
  const base = JSON.parse(readFileSync(o.configFile, "utf8")) as { http: { host: string; port: number }; ws: { port: number }; nats: { servers: string[] } };
  const nodes: LocalNode[] = [];
  // The other nodes' HTTP and WebSocket ports, taken together so none is handed out twice.
  const ports = await freePorts(2 * (o.n - 1));
  for (let i = 0; i < o.n; i++) {
    const httpPort = i === 0 ? base.http.port : ports[2 * (i - 1)];
    const wsPort = i === 0 ? base.ws.port : ports[2 * (i - 1) + 1];
    // Its own nats-server first (clients connect to the first they reach, in order, when randomisation is off: see nats.ts).
    const servers = [...o.natsUrls.slice(i % o.natsUrls.length), ...o.natsUrls.slice(0, i % o.natsUrls.length)];
    const configFile = join(o.dataDir, `node-${i + 1}.json`);
    writeFileSync(configFile, JSON.stringify({ ...base, nats: { ...base.nats, servers }, http: { ...base.http, port: httpPort }, ws: { ...base.ws, port: wsPort } }, null, 2), { mode: 0o600 });
    const name = `n${i + 1}`;
    const roles = nodeRoles(i);
    const node: LocalNode = {
      name, configFile, roles, httpUrl: `http://${base.http.host}:${httpPort}`, proc: undefined as unknown as ChildProcess,
      kill: async () => {
        const p = node.proc;
        if (p.exitCode !== null || p.signalCode !== null) return;
        const gone = new Promise<void>((r) => p.once("exit", () => r()));
        process.kill(-p.pid!, "SIGKILL");
        await gone;
      },
      restart: () => launch(node),
    };
    nodes.push(node);
  }
  const launch = (node: LocalNode): Promise<void> =>
    new Promise((res, rej) => {
      const p = spawn(process.execPath, [NFX_BIN, "node", "--name", node.name, "--roles", node.roles.join(",")], {
        env: { ...(o.env ?? process.env), NFX_CONFIG: node.configFile },
        stdio: ["ignore", "pipe", "pipe", "ipc"],
        // A process group of its own: a node is killed, and stopped, as a whole.
        detached: true,
      });
      node.proc = p;
      const onLine = (line: string): void => o.onLine?.(node.name, line);
      createInterface({ input: p.stdout! }).on("line", onLine);
      createInterface({ input: p.stderr! }).on("line", onLine);
      let ready = false;
      p.on("message", (m: { type?: string }) => {
        if (m?.type !== "ready" || ready) return;
        ready = true;
        p.channel?.unref();
        res();
      });
      p.once("exit", (code, sig) => !ready && rej(new Error(`node ${node.name} exited (${code ?? sig}) before its roles were ready`)));
    });
  const stop = async (): Promise<void> => {
    await Promise.all(
      nodes.map(
        (n) =>
          new Promise<void>((r) => {
            const p = n.proc;
            if (!p || p.exitCode !== null || p.signalCode !== null) return r();
            p.once("exit", () => r());
            p.kill("SIGTERM");
            // A node that does not stop within its roles' grace is killed whole.
            setTimeout(() => void n.kill(), 15_000).unref();
          }),
      ),
    );
  };
  try {
    await Promise.all(nodes.map(launch));
  } catch (err) {
    await stop();
    throw err;
  }
  return { nodes, stop };
}
