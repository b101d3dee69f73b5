#!/usr/bin/env node
// The `nfx` command line: init, run, up, send, status, sandbox, users, demo.
import { readFileSync } from "node:fs";

import { Command, InvalidArgumentError, Option } from "commander";

import type { Config } from "../lib/core/config.js";
import { NfxError, NotFound } from "../lib/core/errors.js";
import { createLogger } from "../lib/core/log.js";
import { BUCKET, CONTENT_CHANNELS, ID_PATTERN, LANE_CLASSES, type LaneClass, PRIORITIES } from "../lib/core/subjects.js";
import { broadcastsFor } from "../lib/inapp/broadcasts.js";
import { connectNats } from "../lib/infra/nats.js";
import { NATS_ROLE_USERS, natsPassword, natsUserName, renderNatsServerConf } from "../lib/infra/nats-auth.js";
import { ensureTopology } from "../lib/infra/topology.js";
import { ApiError, notify, status } from "../lib/intake/api-client.js";
import { TemplateStore } from "../lib/intake/templates.js";
import { explain } from "../lib/shard/trails.js";
import { SANDBOX_PROVIDERS } from "../sandbox/faults.js";
import type { SandboxPorts } from "../sandbox/index.js";
import { registerCampaignCommands } from "./campaign-cli.js";
import { cliConfig, cliLog, withConnections } from "./cli-context.js";
import { registerDirectoryCommands } from "./directory-cli.js";
import { registerDlqCommands } from "./dlq-cli.js";
import { formatStatus } from "./format.js";
import { registerObserveCommands } from "./observe-cli.js";
import { LANE_ROLES, parseProcessSpec, type ProcessSpec, type Role, ROLES, startRoles, UP_PROCESSES } from "./roles.js";
import { registerTopicCommands } from "./topics-cli.js";

const program = new Command("nfx")
  .description("nfx: notification fan-out engine on NATS JetStream")
  .option("-c, --config <file>", "JSON config file (else $NFX_CONFIG); NFX_* variables override it");

const config = (): Config => cliConfig(program);
const list = (v: string): string[] => v.split(",").map((s) => s.trim()).filter(Boolean);

const waitForSignal = (): Promise<string> =>
  new Promise((r) => {
    process.once("SIGINT", () => r("SIGINT"));
    process.once("SIGTERM", () => r("SIGTERM"));
  });

program
  .command("init")
  .description("create or update every stream, consumer and KV bucket (idempotent)")
  .action(async () => {
    const cfg = config();
    const log = cliLog(cfg);
    const n = await connectNats(cfg, log, "nfx-init");
    const t = await ensureTopology(n, cfg);
    console.log(`streams: ${t.streams.join(", ")}\nconsumers: ${t.consumers.length}\nkv buckets: ${t.buckets.join(", ")}`);
    await n.nc.close();
  });

program
  .command("run")
  .description(`run one or more roles in this process: ${ROLES.join(", ")}`)
  .argument("<roles...>", "roles to run")
  .option("--lanes <class>", `lane roles (${LANE_ROLES.join(", ")}) consume only this lane class: urgent (critical, high) or bulk (normal, bulk)`)
  .action(async (roles: string[], o: { lanes?: string }) => {
    let lanes: readonly LaneClass[] = LANE_CLASSES;
    try {
      for (const r of roles) lanes = parseProcessSpec(o.lanes ? `${r}@${o.lanes}` : r).lanes;
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message.replace(/^role:/, o.lanes ? "--lanes:" : "role:"));
    }
    const cfg = config();
    const log = createLogger({ level: cfg.log.level, redact: cfg.log.redact });
    // Stop on a signal, or when the parent (`nfx up`, a test harness) goes, however it went — also during start-up, when
    // the servers may be gone and start-up would wait for them forever.
    const parentGone = new Promise<string>((r) => process.once("disconnect", () => r("parent gone")));
    const stopAsked = Promise.race([waitForSignal(), parentGone]);
    let started = false;
    void stopAsked.then((why) => {
      if (started) return;
      log.warn({ signal: why }, "stopped during start-up");
      process.exit(1);
    });
    const running = await startRoles(roles as Role[], cfg, log, lanes);
    started = true;
    // Started by `nfx up` or a test harness: tell the parent over IPC that every role is ready.
    process.send?.({ type: "ready", roles });
    const sig = await stopAsked;
    log.info({ signal: sig }, "stopping");
    // A graceful stop finishes work in flight; with the servers gone it could wait forever, so it gets 10 s.
    const forced = setTimeout(() => (log.warn("graceful stop took over 10 s; exiting"), process.exit(1)), 10_000);
    await running.stop();
    clearTimeout(forced);
    process.exit(0);
  });

program
  .command("nats-conf")
  .description("print nats-server's configuration for this cluster: accounts NFX and PRODUCERS, one user per role, passwords derived from nats.secret")
  .option("--server-name <name>", "server_name of the generated config", "nfx")
  .action((o: { serverName: string }) => {
    const cfg = config();
    process.stdout.write(renderNatsServerConf({ secret: cfg.nats.secret, producers: cfg.nats.producers, serverName: o.serverName }));
  });

program
  .command("nats-password")
  .description("print the NATS password of a user: a producer name from nats.producers, or nfx-<role> / nfx-admin")
  .argument("<user>", "user name")
  .action((user: string) => {
    const cfg = config();
    const known = [...cfg.nats.producers, natsUserName("admin"), ...NATS_ROLE_USERS.map(natsUserName)];
    if (!known.includes(user)) throw new InvalidArgumentError(`user: unknown NATS user "${user}" (one of ${known.join(", ")})`);
    console.log(natsPassword(cfg.nats.secret, user));
  });

program
  .command("node", { hidden: true })
  .description("run one node's role processes (what `nfx up --nodes N` starts per node); restarts a role that dies; SIGTERM stops them all")
  .requiredOption("--roles <specs>", "comma-separated process specs (shard, shard@urgent, ...)", list)
  .option("--name <name>", "node name in the output", "node")
  .action(async (o: { roles: string[]; name: string }) => {
    const { niceOf, spawnRoleProcess, stopProcesses } = await import("./role-process.js");
    const cfg = config();
    const configFile = (program.opts().config as string | undefined) ?? process.env.NFX_CONFIG;
    if (!configFile) throw new InvalidArgumentError("config: `nfx node` needs a config file (--config or NFX_CONFIG)");
    const specs = o.roles.map((r) => (parseProcessSpec(r), r as ProcessSpec));
    const procs = new Map<ProcessSpec, import("node:child_process").ChildProcess>();
    let stopping = false;
    const start = (spec: ProcessSpec): Promise<unknown> =>
      spawnRoleProcess(spec, {
        configFile, nice: niceOf(cfg, spec), readyTimeoutMs: cfg.up.readyTimeoutMs, onLine: (line) => process.stdout.write(`[${spec}] ${line}\n`),
        started: (p) => {
          procs.set(spec, p);
          // As a machine's service manager does: a role that dies is started again.
          p.once("exit", (code, sig) => {
            if (stopping) return;
            process.stdout.write(`[${o.name}] ${spec} exited (${code ?? sig}); restarting it in 1 s\n`);
            setTimeout(() => void start(spec).catch((err: Error) => process.stdout.write(`[${o.name}] ${spec}: ${err.message}\n`)), 1000);
          });
        },
      });
    const stop = async (): Promise<never> => {
      stopping = true;
      await stopProcesses([...procs.values()]);
      process.exit(0);
    };
    process.once("SIGTERM", () => void stop());
    process.once("SIGINT", () => void stop());
    // The launcher went away (even by SIGKILL): stop this node's roles rather than leave them running.
    process.once("disconnect", () => void stop());
    await Promise.all(specs.map(start)).catch(async (err) => {
      stopping = true;
      await stopProcesses([...procs.values()]);
      throw err;
    });
    process.send?.({ type: "ready", roles: specs });
  });

program
  .command("up")
  .description("run a local cluster: nats-server, redis-server, sandbox providers and every role; Ctrl-C stops all")
  .option("--no-sandbox", "use the providers from the config file instead of the sandboxes")
  .option("--nodes <n>", "simulate n machines (3 or more): an n-node nats-server cluster with R3 streams, a Redis Cluster of three masters with a replica each, and the roles spread over n process groups, each with its own config", (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1 || n > 9) throw new InvalidArgumentError("nodes: must be an integer 1-9");
    if (n === 2) throw new InvalidArgumentError("nodes: must be 1, or 3 or more (a JetStream R3 stream needs three servers)");
    return n;
  })
  .action(async (o: { sandbox: boolean; nodes?: number }) => {
    if (o.nodes && o.nodes > 1) return upNodes(o.nodes, o.sandbox);
    const { startLocalCluster } = await import("./local-cluster.js");
    const cfg = config();
    const file = program.opts().config as string | undefined;
    // Every role runs here, so every channel has its gateway unless the config file says otherwise.
    const ownChannels = file ? (JSON.parse(readFileSync(file, "utf8")) as { ingest?: { channels?: unknown } }).ingest?.channels !== undefined : false;
    const cluster = await startLocalCluster({
      dataDir: cfg.up.dataDir, natsPort: cfg.up.natsPort, redisPort: cfg.up.redisPort, httpPort: cfg.http.port, wsPort: cfg.ws.port, persist: true,
      sandbox: o.sandbox ? sandboxPorts(cfg) : null,
      roles: UP_PROCESSES, configFile: file,
      ...(ownChannels || process.env.NFX_INGEST__CHANNELS ? {} : { overrides: { ingest: { channels: [...CONTENT_CHANNELS] } } }),
      onLine: (role, line) => process.stdout.write(`[${role}] ${line}\n`),
    });
    console.log(`nfx is up: nats ${cluster.nats.url}, redis ${cluster.redis.url}` +
      (cluster.sandbox ? `, ${describeSandbox(cluster.sandbox.ports)}` : ""));
    console.log(`HTTP API ${cluster.httpUrl} (Authorization: Bearer ${cluster.apiKey})`);
    console.log(`NATS producers: user producer, password $(nfx nats-password producer), inbox prefix _INBOX_producer`);
    console.log(`In-app: ws://${cluster.wsUrl.slice("http://".length)}/v1/ws; demo page ${cluster.wsUrl}/demo?token=$(nfx token <user>)`);
    console.log(`Status page ${cluster.httpUrl}/status#key=${cluster.apiKey}; live terminal view: nfx top`);
    console.log(`roles: ${[...cluster.procs.keys()].join(", ")}. Config for other commands: NFX_CONFIG=${cluster.configFile}. Ctrl-C to stop.`);
    await waitForSignal();
    console.log("stopping...");
    await cluster.stop();
    console.log("stopped");
    process.exit(0);
  });

/** `nfx up --nodes n`: the servers and sandboxes here, the roles in n node process groups (cmd/local-nodes.ts); Ctrl-C stops all. */
async function upNodes(n: number, sandbox: boolean): Promise<void> {
  const [{ startLocalCluster }, { startNodes }] = await Promise.all([import("./local-cluster.js"), import("./local-nodes.js")]);
  const cfg = config();
  const file = program.opts().config as string | undefined;
  const cluster = await startLocalCluster({
    dataDir: cfg.up.dataDir, natsPort: cfg.up.natsPort, redisPort: cfg.up.redisPort, httpPort: cfg.http.port, wsPort: cfg.ws.port, persist: true,
    natsNodes: n, redis: "cluster", sandbox: sandbox ? sandboxPorts(cfg) : null, roles: [], configFile: file,
    // Leases outlast a nats-server Raft election (4 to 9 s): docs/operations.md.
    overrides: { shard: { leaseMs: 15_000, checkpointMs: 5000 }, campaign: { leaseMs: 15_000 }, ...(file ? {} : { ingest: { channels: [...CONTENT_CHANNELS] } }) },
  });
  let nodes: Awaited<ReturnType<typeof startNodes>> | null = null;
  const stopAll = async (): Promise<void> => {
    await nodes?.stop();
    await cluster.stop();
  };
  try {
    nodes = await startNodes({ n, dataDir: cluster.cfg.up.dataDir, configFile: cluster.configFile, natsUrls: cluster.natsCluster!.urls, env: cluster.roleEnv, onLine: (node, line) => process.stdout.write(`[${node}]${line.startsWith("[") ? "" : " "}${line}\n`) });
  } catch (err) {
    await stopAll();
    throw err;
  }
  console.log(`nfx is up on ${n} nodes: nats ${cluster.natsCluster!.urls.join(",")}, redis cluster ${cluster.redisCluster!.seeds.join(",")}` + (cluster.sandbox ? `, ${describeSandbox(cluster.sandbox.ports)}` : ""));
  for (const node of nodes.nodes) console.log(`${node.name} (process group ${node.proc.pid}, config ${node.configFile}): HTTP ${node.httpUrl}; ${node.roles.join(", ")}`);
  console.log(`API key ${cluster.apiKey}. Config for other commands: NFX_CONFIG=${cluster.configFile}. Ctrl-C to stop.`);
  await waitForSignal();
  console.log("stopping...");
  await stopAll();
  console.log("stopped");
  process.exit(0);
}

const kv = (v: string, prev: Record<string, string> = {}): Record<string, string> => {
  const i = v.indexOf("=");
  if (i < 1) throw new InvalidArgumentError("data: must be key=value");
  return { ...prev, [v.slice(0, i)]: v.slice(i + 1) };
};

program
  .command("send")
  .description("send a notification to explicit recipients; prints its id")
  .requiredOption("--to <users>", "comma-separated user ids", list)
  .requiredOption("--title <text>", "push title")
  .requiredOption("--body <text>", "push body")
  .addOption(new Option("--priority <p>", "priority lane (default: the category's)").choices([...PRIORITIES]))
  .option("--category <name>", "category (one of the configured categories)", "transactional")
  .option("--send-at <time>", "ISO 8601 time to send at")
  .option("--idempotency-key <key>", "idempotency key")
  .option("--data <key=value>", "custom data (repeatable)", kv)
  .option("--collapse-key <key>", "collapse key")
  .option("--ttl <seconds>", "time to live", (v) => Number(v))
  .option("--channels <list>", "content channels in order of preference, e.g. inapp or push,email (default: every channel with content)", list)
  .option("--payload <json>", "in-app payload (a JSON object); implies in-app content, with title and body added to it", (v) => {
    try {
      const p = JSON.parse(v) as unknown;
      if (!p || typeof p !== "object" || Array.isArray(p)) throw new Error();
      return p as Record<string, unknown>;
    } catch {
      throw new InvalidArgumentError("payload: must be a JSON object");
    }
  })
  .action(async (o: { to: string[]; title: string; body: string; priority?: string; category: string; data?: Record<string, string>; collapseKey?: string; ttl?: number; sendAt?: string; idempotencyKey?: string; channels?: string[]; payload?: Record<string, unknown> }) => {
    const cfg = config();
    const n = await connectNats(cfg, cliLog(cfg), "nfx-cli");
    const inapp = o.payload || o.channels?.includes("inapp") ? { inapp: { payload: { title: o.title, body: o.body, ...(o.payload ?? {}) } } } : {};
    const r = await notify(n.nc, {
      recipients: o.to, category: o.category, ...(o.priority ? { priority: o.priority } : {}),
      ...(o.channels ? { channels: o.channels } : {}),
      content: { push: { title: o.title, body: o.body, ...(o.data ? { data: o.data } : {}) }, ...inapp },
      ...(o.collapseKey ? { collapseKey: o.collapseKey } : {}), ...(o.ttl ? { ttlSec: o.ttl } : {}),
      ...(o.sendAt ? { sendAt: o.sendAt } : {}), ...(o.idempotencyKey ? { idempotencyKey: o.idempotencyKey } : {}),
    });
    console.log(r.id);
    await n.nc.close();
  });

program
  .command("status")
  .description("print a notification's per-recipient, per-device outcome")
  .argument("<id>", "notification id")
  .option("--json", "print JSON")
  .option("--wait <seconds>", "wait up to this long for every send to finish", (v) => Number(v), 0)
  .action(async (id: string, o: { json?: boolean; wait: number }) => {
    const cfg = config();
    const n = await connectNats(cfg, cliLog(cfg), "nfx-cli");
    const until = Date.now() + o.wait * 1000;
    let s = await status(n.nc, id);
    while (!s.complete && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 250));
      s = await status(n.nc, id);
    }
    console.log(o.json ? JSON.stringify(s, null, 2) : formatStatus(s));
    await n.nc.close();
  });

program
  .command("explain")
  .description("print the decision trail of one user for one notification: which rule decided what, with the values it saw")
  .argument("<notification-id>")
  .argument("<user-id>")
  .option("--json", "print JSON")
  .action(async (nid: string, userId: string, o: { json?: boolean }) => {
    const cfg = config();
    const { x, b } = await withConnections(cfg, { nats: true, redis: true }, async ({ nats, redis }) => {
      // A broadcast (fan-out on read) has no decision per user: the read-time policy is evaluated for the user now.
      const bs = broadcastsFor(cfg, redis);
      const bc = ID_PATTERN.test(nid) ? await bs.get(nid) : null;
      return bc ? { x: null, b: { broadcast: bc, ...(await bs.explain(bc, userId, Date.now())) } } : { x: await explain(nats, cfg.cluster.shards, nid, userId), b: null };
    });
    if (b) {
      const visible = b.steps.every((s) => s.verdict === "pass");
      const st = b.state;
      const state = !visible ? "not in the user's inbox" : st & 4 ? "archived" : st & 2 ? "read" : st & 1 ? "seen, unread" : "unread";
      if (o.json) return void console.log(JSON.stringify({ notification: nid, user: userId, shard: b.shard, path: "read", audience: b.broadcast.segment, steps: b.steps, inbox: state }, null, 2));
      console.log(`notification ${nid}, user ${userId} (shard ${b.shard})`);
      console.log(`path: fan-out on read: a broadcast to ${b.broadcast.segment}, stored once; checked when the inbox is read (now: ${new Date().toISOString()})`);
      for (const s of b.steps) console.log(`  ${s.rule.padEnd(14)} ${s.verdict.padEnd(34)} ${s.saw}`);
      console.log(`  ${"inbox".padEnd(14)} ${state}`);
      return;
    }
    if (!x) {
      console.error(`no decision for user ${userId} in notification ${nid} (not a recipient, not decided yet, or its trail expired after ${cfg.policy.trailRetentionHours} h)`);
      process.exitCode = 1;
      return;
    }
    if (o.json) return void console.log(JSON.stringify({ ...x, path: "write" }, null, 2));
    console.log(`notification ${x.notification}, user ${x.user} (shard ${x.shard})`);
    console.log("path: fan-out on write: decided for this user by the shard actor");
    for (const dcs of x.decisions) {
      console.log(`\ndecided ${new Date(dcs.at).toISOString()}${dcs.chunk.startsWith("rel:") ? " (released after quiet hours)" : ""}`);
      for (const s of dcs.steps) console.log(`  ${s.rule.padEnd(14)} ${s.verdict.padEnd(34)} ${s.saw}`);
    }
  });

/** The sandbox ports of the config. */
const sandboxPorts = (cfg: Config): SandboxPorts => ({
  apns: cfg.sandbox.apnsPort, fcm: cfg.sandbox.fcmPort, sendgrid: cfg.sandbox.sendgridPort, twilio: cfg.sandbox.twilioPort, control: cfg.sandbox.controlPort,
});
const describeSandbox = (p: SandboxPorts): string =>
  `sandbox: apns https://127.0.0.1:${p.apns} (HTTP/2), fcm https://127.0.0.1:${p.fcm}, sendgrid http://127.0.0.1:${p.sendgrid}, twilio http://127.0.0.1:${p.twilio}, control http://127.0.0.1:${p.control}`;

program
  .command("sandbox")
  .description("run the sandbox APNs, FCM, SendGrid and Twilio servers and their control API (faults settable at run time: POST /faults)")
  .option("--apns-port <n>", "APNs sandbox port", Number)
  .option("--fcm-port <n>", "FCM sandbox port", Number)
  .option("--sendgrid-port <n>", "SendGrid sandbox port", Number)
  .option("--twilio-port <n>", "Twilio sandbox port", Number)
  .option("--control-port <n>", "control API port", Number)
  .option("--faults <file>", "JSON array of fault rules in force from the start (see docs/providers.md: faults)")
  .action(async (o: { apnsPort?: number; fcmPort?: number; sendgridPort?: number; twilioPort?: number; controlPort?: number; faults?: string }) => {
    const cfg = config();
    const d = sandboxPorts(cfg);
    let faults: unknown[] = [];
    if (o.faults) {
      const v: unknown = JSON.parse(readFileSync(o.faults, "utf8"));
      if (!Array.isArray(v)) throw new InvalidArgumentError(`--faults: ${o.faults} must hold a JSON array of fault rules`);
      faults = v;
    }
    // Loaded here: the sandboxes are not part of a role process.
    const { startSandbox } = await import("../sandbox/index.js");
    const sb = await startSandbox({ apns: o.apnsPort ?? d.apns, fcm: o.fcmPort ?? d.fcm, sendgrid: o.sendgridPort ?? d.sendgrid, twilio: o.twilioPort ?? d.twilio, control: o.controlPort ?? d.control }, faults);
    console.log(`${describeSandbox(sb.ports)} (GET /stats, /devices?provider=, /deliveries, /faults; POST /faults, /reset; DELETE /faults)`);
    await waitForSignal();
    await sb.close();
    process.exit(0);
  });

program
  .command("sandbox-report")
  .description("print what a running sandbox received: totals, duplicates, and counts per device")
  .option("--url <url>", "control API URL")
  .action(async (o: { url?: string }) => {
    const cfg = config();
    const base = o.url ?? `http://127.0.0.1:${cfg.sandbox.controlPort}`;
    const stats = (await (await fetch(`${base}/stats`)).json()) as Record<string, unknown>;
    console.log(JSON.stringify(stats, null, 2));
    for (const p of SANDBOX_PROVIDERS) {
      const devices = (await (await fetch(`${base}/devices?provider=${p}`)).json()) as Record<string, number>;
      for (const [token, count] of Object.entries(devices)) console.log(`${p} ${token} ${count}${count > 1 ? " DUPLICATE" : ""}`);
    }
  });

const templates = program.command("templates").description("notification templates (stored in JetStream KV)");
const templateStore = async () => {
  const cfg = config();
  const n = await connectNats(cfg, cliLog(cfg), "nfx-cli");
  return { n, store: new TemplateStore(await n.kvm.open(BUCKET.templates)) };
};
templates
  .command("put")
  .description("create or replace a template from a JSON file (- for stdin); prints the variables it needs")
  .argument("<file>", "template JSON: {id, defaultLocale, channels: {push: {<locale>: {title, body}}, ...}}")
  .action(async (file: string) => {
    const { n, store } = await templateStore();
    const t = await store.put(JSON.parse(readFileSync(file === "-" ? 0 : file, "utf8")));
    console.log(`stored template ${t.id}: channels ${Object.keys(t.channels).join(", ")}; variables ${t.variables.join(", ") || "(none)"}`);
    await n.nc.close();
  });
templates
  .command("get")
  .argument("<id>")
  .description("print a template")
  .action(async (id: string) => {
    const { n, store } = await templateStore();
    const t = await store.get(id);
    await n.nc.close();
    if (!t) throw new NotFound(`template ${id} not found`, { field: "id" });
    console.log(JSON.stringify(t, null, 2));
  });
templates
  .command("list")
  .description("list template ids")
  .action(async () => {
    const { n, store } = await templateStore();
    for (const id of await store.list()) console.log(id);
    await n.nc.close();
  });
templates
  .command("delete")
  .argument("<id>")
  .description("delete a template")
  .action(async (id: string) => {
    const { n, store } = await templateStore();
    try {
      await store.delete(id);
      console.log(`deleted template ${id}`);
    } finally {
      await n.nc.close();
    }
  });

program
  .command("token")
  .description("mint a user token for the WebSocket gateway and inbox API (HS256, signed with ws.secret); prints it")
  .argument("<user>", "user id")
  .option("--ttl <seconds>", "validity", (v) => Number(v), 3600)
  .action(async (user: string, o: { ttl: number }) => {
    const cfg = config();
    const { UserTokens } = await import("../lib/inapp/ws-token.js");
    if (!Number.isInteger(o.ttl) || o.ttl < 1) throw new InvalidArgumentError("ttl: must be a whole number of seconds");
    console.log(await new UserTokens(cfg.ws.secret, cfg.ws.issuer).mint(user, o.ttl));
  });

registerDirectoryCommands(program);
registerCampaignCommands(program);
registerTopicCommands(program);
registerDlqCommands(program);
registerObserveCommands(program);

program
  .command("demo")
  .description("boot a throw-away local cluster, run a demo notification against the sandboxes and print the delivery report")
  .option("--users <n>", "demo users", Number, 5000)
  .action(async (o: { users: number }) => {
    const { runDemo } = await import("./demo.js");
    process.exitCode = await runDemo({ users: o.users });
  });

program.parseAsync().catch((err: unknown) => {
  const e = err as Error & { code?: string };
  if (err instanceof NfxError || err instanceof ApiError) console.error(`nfx: ${(err as NfxError).code}: ${err.message}`);
  else if (e?.name === "ConnectionError" || e?.code === "ECONNREFUSED") {
    console.error(`nfx: cannot connect (${e.message}): is the cluster running (\`nfx up\`) and are nats.servers / redis.url right?`);
  } else if (e?.name === "NoRespondersError" || (e?.name === "RequestError" && /no responders/i.test(e.message))) {
    console.error("nfx: no ingest process answers on NATS: start the ingest role (`nfx up` or `nfx run ingest`)");
  } else console.error(`nfx: ${e?.stack ?? String(err)}`);
  process.exit(1);
});
