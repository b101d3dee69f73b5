// `nfx up --nodes 3` (npm run test:cluster): three "machines", each a process group with its own config; the 64 shards spread over their shard actors; a machine dies and comes back, and only its share of the shards moves.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

import t from "tap";

import { openClients } from "../../cmd/cli-context.js";
import { loadConfig } from "../../lib/core/config.js";
import { LANE_CLASSES, type LaneClass } from "../../lib/core/subjects.js";
import type { UserRecord } from "../../lib/core/types.js";
import { writeUsers } from "../../lib/directory/directory.js";
import { preferredOwner } from "../../lib/flow/shard-ownership.js";
import { notify, status } from "../../lib/intake/api-client.js";
import { eventually } from "../helpers/cluster.js";
import { shardHolders } from "../helpers/shards.js";

const NFX = fileURLToPath(new URL("../../cmd/nfx.js", import.meta.url));
/** The process group (the node supervisor's pid) of a process, from /proc/<pid>/stat; 0 when it is gone. */
const groupOf = (pid: number): number => {
  try {
    return Number(readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ")[2]);
  } catch {
    return 0;
  }
};
/** Whether `port` can be listened on at 127.0.0.1 now. */
const portFree = (port: number): Promise<boolean> =>
  new Promise((res) => {
    const s = createServer();
    s.once("error", () => res(false));
    s.listen(port, "127.0.0.1", () => s.close(() => res(true)));
  });
/** The first of `n` consecutive ports, all free now, between 10,000 and 30,000. */
async function consecutiveFreePorts(n: number): Promise<number> {
  for (;;) {
    const base = 10_000 + Math.floor(Math.random() * 20_000);
    let ok = true;
    for (let i = 0; i < n && ok; i++) ok = await portFree(base + i);
    if (ok) return base;
  }
}
/** Owner ids are host-pid-random. */
const pidOf = (owner: string): number => Number(owner.split("-").at(-2));

t.test("nfx up --nodes 3: shards spread over three machines, a machine's loss and return move only its share", { timeout: 600_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "nfx-nodes-"));
  // Every fixed port of the cluster in one run of consecutive ports, all free now and below the ephemeral range
  // (32768-60999 here), where the OS hands out ports at any moment: outgoing connections' local ports, and the free
  // ports nfx up itself asks for (routes, monitoring, Redis Cluster). --nodes puts node i's nats-server on natsPort + i.
  const base = await consecutiveFreePorts(11);
  const natsPort = base;
  const configFile = join(dir, "config.json");
  writeFileSync(configFile, JSON.stringify({
    up: { dataDir: join(dir, "data"), natsPort, redisPort: base + 3 },
    http: { port: base + 4 }, ws: { port: base + 5 }, log: { level: "warn" },
    sandbox: { apnsPort: base + 6, fcmPort: base + 7, sendgridPort: base + 8, twilioPort: base + 9, controlPort: base + 10 },
  }));
  const lines: string[] = [];
  const up: ChildProcess = spawn(process.execPath, [NFX, "--config", configFile, "up", "--nodes", "3"], { stdio: ["ignore", "pipe", "pipe"] });
  const upExited = new Promise<void>((r) => up.once("exit", () => r()));
  createInterface({ input: up.stdout! }).on("line", (l) => void lines.push(l));
  createInterface({ input: up.stderr! }).on("line", (l) => void lines.push(l));
  t.teardown(async () => {
    if (up.exitCode === null) up.kill("SIGINT");
    await upExited;
    if (!t.passing()) console.error([...lines.filter((l) => /shard|lease|owner|hand/i.test(l)).slice(-100), "--- last lines", ...lines.slice(-60)].join("\n"));
    rmSync(dir, { recursive: true, force: true });
  });
  t.ok(await eventually(() => lines.some((l) => l.startsWith("nfx is up on 3 nodes")) || up.exitCode !== null, 300_000), "nfx up --nodes 3 is up");
  // The node lines follow the "is up" line, possibly in a later chunk of output.
  const isNodeLine = (l: string): boolean => /^n\d \(process group \d+/.test(l);
  await eventually(() => lines.filter(isNodeLine).length >= 3, 10_000);
  const nodeLines = lines.filter(isNodeLine);
  t.equal(nodeLines.length, 3, "three nodes, each a process group");
  const groups = nodeLines.map((l) => Number(/process group (\d+)/.exec(l)![1]));
  const cfg = loadConfig({ file: join(dir, "data", "cluster-config.json"), env: {} });
  t.equal(cfg.streams.replicas, 3, "streams replicated three times");
  t.equal(cfg.redis.cluster.length, 6, "a Redis Cluster of six processes");
  for (let i = 0; i < 3; i++) {
    const own = JSON.parse(readFileSync(join(dir, "data", `node-${i + 1}.json`), "utf8")) as { nats: { servers: string[] } };
    t.equal(own.nats.servers[0], cfg.nats.servers[i], `node ${i + 1} has its own config, its own nats-server first`);
  }
  const { nats, redis, close } = await openClients(cfg, "test");
  t.teardown(close);

  /** Node index (0-2) of each shard's holder, per lane class; -1 where the holder is in no node's group. */
  const placement = async (cls: LaneClass): Promise<number[]> => {
    const h = await shardHolders(nats, cls);
    return Array.from({ length: cfg.cluster.shards }, (_, s) => (h.has(s) ? groups.indexOf(groupOf(pidOf(h.get(s)!.owner))) : -1));
  };
  const spread = (p: number[]): number[] => [0, 1, 2].map((i) => p.filter((x) => x === i).length);
  /**
   * Whether every shard of `cls` is held by its rendezvous owner among the shard actors holding shards: the hand-overs
   * of a start or a membership change are done. Placement compared before that would count a hand-over still under way
   * (an actor that started first gives up its surplus as the others join) as a move.
   */
  const settled = async (cls: LaneClass): Promise<boolean> => {
    const h = await shardHolders(nats, cls);
    const members = [...new Set([...h.values()].map((x) => x.owner))];
    return h.size === cfg.cluster.shards && [...h].every(([s, x]) => preferredOwner(s, members) === x.owner);
  };
  const before: Record<LaneClass, number[]> = { urgent: [], bulk: [] };
  t.ok(await eventually(async () => {
    for (const cls of LANE_CLASSES) if (!(await settled(cls))) return false;
    for (const cls of LANE_CLASSES) before[cls] = await placement(cls);
    return LANE_CLASSES.every((cls) => spread(before[cls]).every((n) => n >= cfg.cluster.shards / 6) && !before[cls].includes(-1));
  }, 120_000), "the 64 shards of each lane class are spread over the three nodes' shard actors, each with its rendezvous owner");
  t.comment(`spread: urgent ${spread(before.urgent).join("/")}, bulk ${spread(before.bulk).join("/")}`);

  const now = Date.now();
  const users = Array.from({ length: 300 }, (_, i): UserRecord => ({ id: `m${i}`, lastActive: now, devices: [{ id: "p", platform: "ios", token: `tok-m-${i}-0123456789abcdef` }] }));
  await writeUsers(redis, cfg.cluster.shards, users);
  const deliveredOnce = async (title: string): Promise<boolean> => {
    const { id } = await notify(nats.nc, { recipients: users.map((u) => u.id), category: "transactional", content: { push: { title, body: "b" } } });
    if (!(await eventually(async () => (await status(nats.nc, id)).complete, 120_000))) return false;
    // What the sandbox APNs received, from its control API (it runs in the `nfx up` process).
    const res = await fetch(`http://127.0.0.1:${cfg.sandbox.controlPort}/deliveries?provider=apns`).then((r) => r.json() as Promise<{ nid: string; token: string; status: number }[]>);
    const ok = res.filter((d) => d.nid === id && d.status === 200).map((d) => d.token);
    return new Set(ok).size === users.length && ok.length === users.length;
  };
  t.ok(await deliveredOnce("before"), "a notification to 300 users is delivered, once each");

  // Node 3 dies: its process group (supervisor and every role) SIGKILLed at once, as a machine losing power.
  process.kill(-groups[2], "SIGKILL");
  const after: Record<LaneClass, number[]> = { urgent: [], bulk: [] };
  t.ok(await eventually(async () => {
    for (const cls of LANE_CLASSES) if (!(await settled(cls))) return false;
    for (const cls of LANE_CLASSES) after[cls] = await placement(cls);
    return LANE_CLASSES.every((cls) => after[cls].every((x) => x === 0 || x === 1));
  }, 120_000), "every shard of node 3 is taken over by nodes 1 and 2");
  for (const cls of LANE_CLASSES) {
    const moved = before[cls].map((x, s) => (x !== 2 && x !== after[cls][s] ? s : -1)).filter((s) => s >= 0);
    t.same(moved, [], `${cls}: no shard of nodes 1 and 2 changed hands (only node 3's share moved)`);
  }
  t.ok(await deliveredOnce("during"), "with a machine gone, a notification is still delivered once each");
  t.ok(lines.every((l) => !/exited .* restarting/.test(l)), "no role on nodes 1 and 2 died");

  // A new machine joins with a shard actor (`nfx node`, as on a machine of its own, with node 3's config): the shards it takes
  // come from nodes 1 and 2, and none moves between those two.
  const joined = spawn(process.execPath, [NFX, "node", "--name", "n4", "--roles", "shard"], {
    env: { ...process.env, NFX_CONFIG: join(dir, "data", "node-3.json") }, stdio: ["ignore", "pipe", "pipe", "ipc"], detached: true,
  });
  createInterface({ input: joined.stdout! }).on("line", (l) => void lines.push(`[n4] ${l}`));
  t.teardown(() => void (joined.exitCode === null && process.kill(-joined.pid!, "SIGKILL")));
  groups[2] = joined.pid!;
  const rejoined: Record<LaneClass, number[]> = { urgent: [], bulk: [] };
  t.ok(await eventually(async () => {
    for (const cls of LANE_CLASSES) if (!(await settled(cls))) return false;
    for (const cls of LANE_CLASSES) rejoined[cls] = await placement(cls);
    return LANE_CLASSES.every((cls) => spread(rejoined[cls])[2] >= cfg.cluster.shards / 6 && !rejoined[cls].includes(-1));
  }, 120_000), "the joining machine's shard actor takes its share");
  for (const cls of LANE_CLASSES) {
    const between = after[cls].map((x, s) => (rejoined[cls][s] !== 2 && rejoined[cls][s] !== x ? s : -1)).filter((s) => s >= 0);
    t.same(between, [], `${cls}: every shard that moved went to the new machine`);
  }
  t.ok(await deliveredOnce("after"), "after the join, a notification is delivered once each");
  joined.kill("SIGTERM");

  // Stopping it all with Ctrl-C: every process of every node and every server goes.
  up.kill("SIGINT");
  await upExited;
  t.equal(up.exitCode, 0, "Ctrl-C stops nfx up cleanly");
  t.ok(groups.slice(0, 2).every((g) => groupOf(g) === 0), "the nodes' process groups are gone");
});
