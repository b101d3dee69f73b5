// `nfx up` and its roles: a role that hangs at start-up fails it after `up.readyTimeoutMs`, named, with nothing left; server settings left in the shell do not reach its roles.
import "../helpers/child-env.js";

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import t, { type Test } from "tap";

import { freePorts } from "../../lib/infra/launch.js";
import { runWatched, withConfigFile } from "../helpers/watched-run.js";

const NFX = fileURLToPath(new URL("../../cmd/nfx.js", import.meta.url));

/** The environment of an `nfx up` in its own data dir, on free ports; `extra` ports are free ones left for the caller. */
async function upEnv(t: Test, extra = 0): Promise<{ env: Record<string, string>; dir: string; spare: number[] }> {
  const dir = mkdtempSync(join(tmpdir(), "nfx-up-ready-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const p = await freePorts(9 + extra);
  const env: Record<string, string> = {
    NFX_UP__DATA_DIR: dir, NFX_UP__NATS_PORT: String(p[0]), NFX_UP__REDIS_PORT: String(p[1]), NFX_HTTP__PORT: String(p[2]), NFX_WS__PORT: String(p[3]),
    NFX_SANDBOX__APNS_PORT: String(p[4]), NFX_SANDBOX__FCM_PORT: String(p[5]), NFX_SANDBOX__CONTROL_PORT: String(p[6]),
    NFX_SANDBOX__SENDGRID_PORT: String(p[7]), NFX_SANDBOX__TWILIO_PORT: String(p[8]),
  };
  return { env, dir, spare: p.slice(9) };
}

/** The `nfx run` arguments of the live role processes started for cluster config `configFile`, by pid. */
const roleArgs = (configFile: string): Map<number, string[]> =>
  new Map([...withConfigFile(configFile)].filter(([, argv]) => argv.includes("run")).map(([pid, argv]) => [pid, argv.slice(argv.indexOf("run") + 1)]));

t.test("nfx up with a role hung at start-up: exit 1 after up.readyTimeoutMs naming that role, nothing left", async (t) => {
  const { env, dir } = await upEnv(t);
  env.NFX_UP__READY_TIMEOUT_MS = "15000";
  const configFile = join(dir, "cluster-config.json");
  const hung: { pid: number; spec: string }[] = [];
  const r = await runWatched([NFX, "up"], env, {
    // The first role process seen is stopped (SIGSTOP) before it can report ready: hung, as a role stuck in its start-up would be.
    upWhen: () => {
      const [first] = roleArgs(configFile);
      if (!first) return false;
      const [pid, args] = first;
      process.kill(pid, "SIGSTOP");
      hung.push({ pid, spec: args.includes("--lanes") ? `${args[0]}@${args[args.indexOf("--lanes") + 1]}` : args[0] });
      return true;
    },
    interrupt: () => undefined,
    capMs: 120_000,
  });
  t.equal(hung.length, 1, "a role process was stopped at start-up");
  const spec = hung[0]?.spec ?? "(none)";
  t.equal(r.code, 1, `exit code 1 (stderr: ${r.stderr.slice(-600)})`);
  t.match(r.stderr, `nfx: NFX_ERR_ROLE_NOT_READY: role ${spec} was not ready within 15000 ms (up.readyTimeoutMs) and was killed`, `the coded error, naming the hung role (${spec}) and the deadline`);
  t.ok([...r.seen.values()].includes("nats-server") && [...r.seen.values()].includes("redis-server"), "it had started nats-server and redis-server");
  t.same(r.left, [], "none of its processes is left, the hung one included");
});

t.test("nfx up with NFX_REDIS__URL and NFX_NATS__SERVERS left in the shell: its roles use its own servers, and it says the variables were ignored", async (t) => {
  const { env, spare } = await upEnv(t, 2);
  // Where nothing listens: followed, every role would wait for them until the deadline.
  env.NFX_REDIS__URL = `redis://127.0.0.1:${spare[0]}`;
  env.NFX_NATS__SERVERS = JSON.stringify([`nats://127.0.0.1:${spare[1]}`]);
  env.NFX_UP__READY_TIMEOUT_MS = "60000";
  const r = await runWatched([NFX, "up"], env, {
    upWhen: (_names, out) => out.includes("nfx is up"),
    interrupt: (pid) => process.kill(pid, "SIGINT"),
    capMs: 120_000,
  });
  t.match(r.stdout, "nfx is up", `it came up (stderr: ${r.stderr.slice(-600)})`);
  t.match(r.stderr, "nfx: NFX_REDIS__URL ignored: this local cluster sets redis.url itself", "NFX_REDIS__URL named as ignored");
  t.match(r.stderr, "nfx: NFX_NATS__SERVERS ignored: this local cluster sets nats.servers itself", "NFX_NATS__SERVERS named as ignored");
  t.notMatch(r.stderr + r.stdout, /not reachable yet/, "no role waited for the shell's servers");
  t.equal(r.code, 0, "Ctrl-C: exit code 0");
  t.same(r.left, [], "none of its processes is left");
});
