// `nfx up` whose roles never get ready: it waits `up.readyTimeoutMs`, then fails naming a role and what it waited for, and leaves nothing running.
import "../helpers/child-env.js";

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import t from "tap";

import { freePorts } from "../../lib/infra/launch.js";
import { runWatched } from "../helpers/watched-run.js";

const NFX = fileURLToPath(new URL("../../cmd/nfx.js", import.meta.url));

t.test("nfx up with every role pointed at a Redis that is not there: exit 1 after up.readyTimeoutMs, the role and its wait named, nothing left", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "nfx-up-stuck-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const ports = await freePorts(10);
  const env: Record<string, string> = {
    NFX_UP__DATA_DIR: dir, NFX_UP__NATS_PORT: String(ports[0]), NFX_UP__REDIS_PORT: String(ports[1]), NFX_HTTP__PORT: String(ports[2]), NFX_WS__PORT: String(ports[3]),
    NFX_SANDBOX__APNS_PORT: String(ports[4]), NFX_SANDBOX__FCM_PORT: String(ports[5]), NFX_SANDBOX__CONTROL_PORT: String(ports[6]),
    NFX_SANDBOX__SENDGRID_PORT: String(ports[7]), NFX_SANDBOX__TWILIO_PORT: String(ports[8]),
    // The roles read the environment over the cluster's config file: a Redis URL left in the shell sends them where nothing listens.
    NFX_REDIS__URL: `redis://127.0.0.1:${ports[9]}`,
    // Long enough for every role of a cold start on two cores to be up and waiting for Redis (and to say so).
    NFX_UP__READY_TIMEOUT_MS: "20000",
  };
  const started = Date.now();
  const r = await runWatched([NFX, "up"], env, { capMs: 120_000 });
  const secs = (Date.now() - started) / 1000;
  t.equal(r.code, 1, `exit code 1 (stderr: ${r.stderr.slice(-800)})`);
  t.ok(secs >= 20, `not before the deadline (${secs.toFixed(1)} s)`);
  t.match(r.stderr, /nfx: NFX_ERR_ROLE_NOT_READY: role \S+ was not ready within 20000 ms \(up\.readyTimeoutMs\) and was killed/, "the coded error, naming a role and the deadline");
  t.match(r.stderr, /its last lines:[^]*redis not reachable yet/, "with what the role was waiting for");
  t.ok([...r.seen.values()].includes("nats-server") && [...r.seen.values()].includes("redis-server"), "it had started nats-server and redis-server");
  t.ok([...r.seen.values()].filter((n) => n === "node").length >= 10, "and its role processes");
  t.same(r.left, [], "none of its processes is left");
});
