// `nfx up` as a user runs it: one command brings the cluster up, the CLI works against it, Ctrl-C (SIGINT) stops every process.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

import t from "tap";

import { UP_PROCESSES } from "../../cmd/roles.js";
import { freePort } from "../../lib/infra/launch.js";
import { NFX, nfxRunner } from "../helpers/cli.js";
import { withConfigFile } from "../helpers/watched-run.js";

const listening = (port: number): Promise<boolean> =>
  new Promise((r) => {
    const s = net.connect(port, "127.0.0.1");
    s.once("connect", () => (s.destroy(), r(true)));
    s.once("error", () => r(false));
  });
/** Pids of processes started with NFX_CONFIG=<file> (the role processes of one `nfx up`). */
const rolePids = (configFile: string): number[] => [...withConfigFile(configFile).keys()];

t.test("nfx up: up, usable, and stopped cleanly by Ctrl-C", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "nfx-up-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const ports = { nats: await freePort(), redis: await freePort(), http: await freePort(), apns: await freePort(), fcm: await freePort(), sendgrid: await freePort(), twilio: await freePort(), control: await freePort() };
  const env = {
    ...process.env,
    NFX_UP__DATA_DIR: dir, NFX_UP__NATS_PORT: String(ports.nats), NFX_UP__REDIS_PORT: String(ports.redis), NFX_HTTP__PORT: String(ports.http),
    NFX_SANDBOX__APNS_PORT: String(ports.apns), NFX_SANDBOX__FCM_PORT: String(ports.fcm), NFX_SANDBOX__CONTROL_PORT: String(ports.control),
    NFX_SANDBOX__SENDGRID_PORT: String(ports.sendgrid), NFX_SANDBOX__TWILIO_PORT: String(ports.twilio), NFX_LOG__LEVEL: "warn",
  };
  const up = spawn(process.execPath, [NFX, "up"], { env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  up.stdout.on("data", (b: Buffer) => (out += b.toString()));
  up.stderr.on("data", (b: Buffer) => (out += b.toString()));
  const exited = new Promise<number | null>((r) => up.once("exit", (code) => r(code)));
  t.teardown(() => void up.kill("SIGKILL"));
  // A deadline, not a speed target: on a loaded 2-core machine a cold start of every role can take a while.
  const until = Date.now() + 120_000;
  while (!out.includes("nfx is up") && Date.now() < until && up.exitCode === null) await new Promise((r) => setTimeout(r, 100));
  t.match(out, "nfx is up", "it says so");
  for (const [name, port] of Object.entries(ports)) t.ok(await listening(port), `${name} listens on ${port}`);
  const configFile = join(dir, "cluster-config.json");
  t.equal(rolePids(configFile).length, UP_PROCESSES.length, `one process per role, lane roles one per lane class (${UP_PROCESSES.length})`);

  const nfx = nfxRunner({ ...(env as Record<string, string>), NFX_CONFIG: join(dir, "cluster-config.json") });
  await nfx("users", "put", '{"id":"zoe","devices":[{"id":"zoe-phone","platform":"ios","token":"a0e0a0e0a0e0"}]}');
  const id = (await nfx("send", "--to", "zoe", "--title", "Hello", "--body", "World")).stdout.trim();
  const st = await nfx("status", id, "--wait", "15");
  t.match(st.stdout, /sent=1 .* complete/, "a notification sent with the CLI is delivered");
  const report = await nfx("sandbox-report", "--url", `http://127.0.0.1:${ports.control}`);
  t.match(report.stdout, /apns a0e0a0e0a0e0 1\n/, "the sandbox counted one delivery to zoe's phone");

  up.kill("SIGINT");
  t.equal(await exited, 0, "Ctrl-C: exit code 0");
  t.match(out, "stopped");
  for (const [name, port] of Object.entries(ports)) t.notOk(await listening(port), `${name} no longer listens`);
  t.same(rolePids(configFile), [], "every role process is gone");
});
