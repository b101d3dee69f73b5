// Starts a local nats-server cluster (routes on loopback, JetStream on every node): used by `nfx up --nodes N` and the cluster test harness.
import { join } from "node:path";

import { freePorts, type ServerProcess, startNatsServer } from "./launch.js";

/** One node of a {@link NatsCluster}: its server, ports and store directory. */
export interface NatsNode {
  /** `nfx-n1`, `nfx-n2`, ... (the JetStream server name). */
  name: string;
  server: ServerProcess;
  clientPort: number;
  routePort: number;
  /** Monitoring port (`/varz`, `/jsz`), for finding the JetStream meta leader. */
  httpPort: number;
  storeDir: string;
}

/** A running nats-server cluster. */
export interface NatsCluster {
  nodes: NatsNode[];
  /** Every node's client URL: what roles are given as `nats.servers`. */
  urls: string[];
  /** SIGKILLs node `i` (a crash) and resolves when it has exited. */
  kill(i: number): Promise<void>;
  /** Starts node `i` again on its ports and store (after {@link kill} or a stop); resolves when it accepts connections. */
  restart(i: number): Promise<NatsNode>;
  /** The node index currently JetStream meta leader, or -1 when none is elected (asked over each live node's monitoring port). */
  metaLeader(): Promise<number>;
  /** Stops every node (SIGTERM, SIGKILL after 5 s). */
  stop(): Promise<void>;
  /** Every node's last output, labelled, for error messages and permission checks. */
  output(): string;
}

/**
 * The `cluster {}` block of one node's configuration: its route listener and
 * the routes to every node (its own included: nats-server skips it). Appended
 * to the text `renderNatsServerConf` makes (lib/infra/nats-auth.ts).
 */
export function natsClusterBlock(o: { name: string; routePort: number; routePorts: readonly number[]; httpPort?: number }): string {
  return [
    "cluster {",
    `  name: ${JSON.stringify(o.name)}`,
    `  listen: "127.0.0.1:${o.routePort}"`,
    `  routes: [${o.routePorts.map((p) => JSON.stringify(`nats-route://127.0.0.1:${p}`)).join(", ")}]`,
    "}",
    ...(o.httpPort ? [`http: "127.0.0.1:${o.httpPort}"`] : []),
    "",
  ].join("\n");
}

/**
 * Starts `nodes` nats-servers forming one cluster, each with JetStream and its
 * own store under `dir/n<i>`, configured by `conf(serverName)` (accounts and
 * users, the same on every node) plus {@link natsClusterBlock}. Resolves when
 * every node accepts connections and a JetStream meta leader is elected
 * (deadline 30 s); on failure every node started is stopped before the throw.
 */
export async function startNatsCluster(o: { dir: string; nodes: number; conf: (serverName: string) => string; clientPorts?: readonly number[] }): Promise<NatsCluster> {
  // Every port at once, so none is handed out twice (a port freed by one freePort() call may be the next call's answer).
  const all = await freePorts(3 * o.nodes);
  const clientPorts = o.clientPorts?.some((p) => p > 0) ? [...o.clientPorts] : all.slice(0, o.nodes);
  const routePorts = all.slice(o.nodes, 2 * o.nodes);
  const httpPorts = all.slice(2 * o.nodes);
  const nodes: (NatsNode | undefined)[] = Array.from({ length: o.nodes }, () => undefined);
  const confOf = (i: number): string => `${o.conf(`nfx-n${i + 1}`)}\n${natsClusterBlock({ name: "nfx", routePort: routePorts[i], routePorts, httpPort: httpPorts[i] })}`;
  const start = async (i: number): Promise<NatsNode> => {
    const storeDir = join(o.dir, `n${i + 1}`);
    const server = await startNatsServer({ storeDir, port: clientPorts[i], conf: confOf(i) });
    const node: NatsNode = { name: `nfx-n${i + 1}`, server, clientPort: clientPorts[i], routePort: routePorts[i], httpPort: httpPorts[i], storeDir };
    nodes[i] = node;
    return node;
  };
  const live = (): NatsNode[] => nodes.filter((n): n is NatsNode => !!n && n.server.proc.exitCode === null && n.server.proc.signalCode === null);
  const stop = async (): Promise<void> => void (await Promise.all(nodes.map((n) => (n ? n.server.stop() : Promise.resolve()))));
  const metaLeader = async (): Promise<number> => {
    for (const n of live()) {
      try {
        const res = await fetch(`http://127.0.0.1:${n.httpPort}/jsz`, { signal: AbortSignal.timeout(1000) });
        const leader = ((await res.json()) as { meta_cluster?: { leader?: string } }).meta_cluster?.leader;
        if (leader) return nodes.findIndex((m) => m?.name === leader);
      } catch {
        /* that node is down or busy: ask the next */
      }
    }
    return -1;
  };
  try {
    // Started together: a node waits for its routes to form a JetStream quorum.
    await Promise.all(Array.from({ length: o.nodes }, (_, i) => start(i)));
    const until = Date.now() + 30_000;
    while ((await metaLeader()) < 0) {
      if (Date.now() > until) throw new Error(`no JetStream meta leader after 30 s:\n${outputOf(nodes)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    nodes: nodes as NatsNode[],
    urls: clientPorts.map((p) => `nats://127.0.0.1:${p}`),
    async kill(i) {
      const p = nodes[i]!.server.proc;
      if (p.exitCode !== null || p.signalCode !== null) return;
      await new Promise<void>((r) => (p.once("exit", () => r()), p.kill("SIGKILL")));
    },
    restart: (i) => start(i),
    metaLeader,
    stop,
    output: () => outputOf(nodes),
  };
}

const outputOf = (nodes: readonly (NatsNode | undefined)[]): string => nodes.map((n) => (n ? `--- ${n.name}\n${n.server.output()}` : "")).join("\n");
