// Config loading: defaults, file, NFX_* environment, unknown keys and bad values named by path, frozen result.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import t from "tap";

import { envWithout, loadConfig } from "../../lib/core/config.js";
import { ConfigInvalid } from "../../lib/core/errors.js";

const dir = mkdtempSync(join(tmpdir(), "nfx-cfg-"));
const file = (name: string, body: unknown): string => {
  const p = join(dir, name);
  writeFileSync(p, typeof body === "string" ? body : JSON.stringify(body));
  return p;
};
const problems = (fn: () => unknown): string => {
  try {
    fn();
  } catch (err) {
    t.type(err, ConfigInvalid);
    t.equal((err as ConfigInvalid).code, "NFX_ERR_CONFIG_INVALID");
    return (err as Error).message;
  }
  t.fail("expected ConfigInvalid");
  return "";
};

t.test("defaults alone are valid", async (t) => {
  const c = loadConfig({ env: {} });
  t.equal(c.cluster.shards, 64);
  t.same(c.nats.servers, ["nats://127.0.0.1:4222"]);
  t.equal(c.log.redact, true, "redaction is on by default");
});

t.test("file, then overrides, then environment", async (t) => {
  const f = file("a.json", { cluster: { shards: 16 }, router: { chunkSize: 100 }, gateways: { apns: { apps: [{ topic: "com.file" }] }, retry: { maxAttempts: 7 } } });
  const c = loadConfig({
    file: f,
    overrides: { router: { chunkSize: 200 } },
    env: { NFX_ROUTER__CHUNK_SIZE: "300", NFX_GATEWAYS__RETRY__BASE_MS: "250", NFX_GATEWAYS__APNS__APPS: '[{"topic":"com.env","clientCount":4}]', NFX_NATS__SERVERS: '["nats://h:1"]', NFX_LOG__LEVEL: "debug", HOME: "/x" },
  });
  t.equal(c.cluster.shards, 16, "from the file");
  t.equal(c.router.chunkSize, 300, "environment wins over overrides and file");
  t.equal(c.gateways.retry.baseMs, 250, "nested, snake-case env name maps to the camelCase key");
  t.equal(c.gateways.retry.maxAttempts, 7, "sibling keys of an env override stay");
  t.same([c.gateways.apns.apps[0].topic, c.gateways.apns.apps[0].clientCount], ["com.env", 4], "a JSON array from the environment replaces the list");
  t.same(c.nats.servers, ["nats://h:1"], "JSON values parse");
  t.equal(c.log.level, "debug", "plain strings stay strings");
  t.equal(loadConfig({ env: { NFX_CONFIG: f } }).cluster.shards, 16, "NFX_CONFIG names the file");
});

t.test("unknown keys are rejected with their full path", async (t) => {
  const msg = problems(() => loadConfig({ file: file("b.json", { gateways: { apns: { apps: [{ keyfile: "x" }] } }, colour: 1 }), env: {} }));
  t.match(msg, "gateways.apns.apps.0.keyfile: unknown key");
  t.match(msg, "colour: unknown key");
  t.match(problems(() => loadConfig({ env: { NFX_ROUTER__CHUNKS: "1" } })), "NFX_ROUTER__CHUNKS: unknown key router.chunks");
  t.doesNotThrow(() => loadConfig({ env: { NFX_TEST_REDIS: "cluster" } }), "NFX_TEST_* variables are the test harness's, not configuration");
});

t.test("redis.cluster: seed node URLs, each problem named by its entry and rule", async (t) => {
  t.same(loadConfig({ env: {} }).redis.cluster, [], "off by default: one redis-server at redis.url");
  t.same(loadConfig({ env: { NFX_REDIS__CLUSTER: '["redis://127.0.0.1:7001","redis://127.0.0.1:7002/0"]' } }).redis.cluster, ["redis://127.0.0.1:7001", "redis://127.0.0.1:7002/0"], "from the environment as a JSON list");
  const msg = problems(() => loadConfig({ env: {}, overrides: { redis: { cluster: ["http://h:1", "redis://h:2/3", "redis://u:p@h:4", "redis://h:5"] } } }));
  t.match(msg, "redis.cluster.0: must be a redis:// or rediss:// URL of a node");
  t.match(msg, "redis.cluster.1: must be a redis:// or rediss:// URL of a node (host:port, no database but /0)", "Redis Cluster has database 0 only");
  t.match(problems(() => loadConfig({ env: {}, overrides: { redis: { cluster: ["redis://h:1", "rediss://h:2"] } } })), "redis.cluster.1: every seed node must use the scheme (redis:// or rediss://) and credentials of the first");
  t.match(problems(() => loadConfig({ env: {}, overrides: { redis: { cluster: "redis://h:1" } } })), "redis.cluster: must be an array");
});

t.test("every bad value is reported with its path and rule", async (t) => {
  const msg = problems(() =>
    loadConfig({ env: {}, overrides: { cluster: { shards: 0 }, nats: { servers: ["http://x"] }, gateways: { apns: { apps: [{ keyFile: "/no/such/key.p8" }] }, email: { apps: [{ name: "a", failover: "b" }] }, sms: { apps: [{ name: "x" }, { name: "x" }] } } } }),
  );
  t.match(msg, /cluster\.shards: .*>=1/);
  t.match(msg, "nats.servers.0: must be a nats:// or tls:// URL");
  t.match(msg, "gateways.apns.apps.0.keyFile: file not found");
  t.match(msg, "gateways.email.apps.0.failover: must name another app of this channel (got b)");
  t.match(msg, "gateways.sms.apps.1.name: must be unique (x is used twice)");
  t.match(problems(() => loadConfig({ file: file("c.json", "{nope"), env: {} })), "c.json");
  t.match(problems(() => loadConfig({ file: file("d.json", [1]), env: {} })), "must hold a JSON object");
});

t.test("the result is frozen", async (t) => {
  const c = loadConfig({ env: {} });
  t.throws(() => {
    (c.cluster).shards = 2;
  }, TypeError);
  t.throws(() => {
    (c.nats.servers).push("nats://x:1");
  }, TypeError);
});

t.test("API keys: top-level with scopes; the old http.apiKeys and admin flag are refused with the way to migrate", async (t) => {
  const k = { name: "billing", key: "billing-key-0123456789" };
  const c = loadConfig({ env: {}, overrides: { apiKeys: [{ ...k, scopes: ["send", "read"], categories: ["transactional"] }] } });
  t.same(c.apiKeys, [{ ...k, scopes: ["send", "read"], categories: ["transactional"], priorities: ["critical", "high", "normal", "bulk"] }], "scopes kept; priorities default to all");
  t.match(problems(() => loadConfig({ env: {}, overrides: { http: { apiKeys: [{ ...k, admin: true }] } } })), /http\.apiKeys: moved to the top-level apiKeys/, "http.apiKeys names where keys went");
  t.match(problems(() => loadConfig({ env: {}, overrides: { apiKeys: [{ ...k, scopes: ["admin"], admin: true }] } })), /apiKeys\.0\.admin: replaced by scopes: admin: true is scopes: \["admin"\]/, "admin: true names its replacement");
  t.match(problems(() => loadConfig({ env: {}, overrides: { apiKeys: [k] } })), /apiKeys\.0\.scopes/, "a key must list its scopes");
  t.match(problems(() => loadConfig({ env: {}, overrides: { apiKeys: [{ ...k, scopes: ["sendall"] }] } })), /apiKeys\.0\.scopes\.0/, "an unknown scope is named");
  t.match(problems(() => loadConfig({ env: {}, overrides: { apiKeys: [{ ...k, scopes: ["read"] }, { ...k, key: "other-key-0123456789", scopes: ["send"] }] } })), /apiKeys\.1\.name: duplicate key name billing/, "names are unique (idempotency keys are per name)");
});

t.test("prototype names cannot be categories, refused with the path", async (t) => {
  t.match(problems(() => loadConfig({ file: file("p1.json", { categories: { constructor: { defaultPriority: "high" } } }), env: {} })), "categories.constructor: must not be a reserved name");
  // JSON text, so `__proto__` is a real own key as in a user's file (zod alone would drop it without a word).
  t.match(problems(() => loadConfig({ file: file("p2.json", '{"categories":{"__proto__":{"defaultPriority":"high"},"ok":{}}}'), env: {} })), "categories.__proto__: must not be a reserved name");
  t.match(problems(() => loadConfig({ env: { NFX_CATEGORIES: '{"constructor":{}}' } })), "categories.constructor: must not be a reserved name", "from the environment too");
  t.same(Object.keys(loadConfig({ file: file("p3.json", { categories: { orders: {} } }), env: {} }).categories), ["orders"], "an ordinary name is fine");
});

t.test("envWithout: the variables that would override what a local cluster set are dropped, the rest kept", async (t) => {
  const set = { redis: { url: "redis://127.0.0.1:7001", cluster: [] }, http: { port: 8080 }, nats: { servers: ["nats://127.0.0.1:4001"] } };
  const env = {
    NFX_REDIS__URL: "redis://prod:6379", NFX_HTTP__PORT: "8080", NFX_NATS: '{"servers":["nats://prod:4222"]}',
    NFX_LOG__LEVEL: "debug", NFX_TEST_REDIS: "cluster", NFX_CONFIG: "/x.json", PATH: "/bin", NFX_NO_SUCH__KEY: "1",
  };
  const { env: kept, dropped } = envWithout(env, set);
  t.same(Object.keys(kept).sort(), ["NFX_CONFIG", "NFX_LOG__LEVEL", "NFX_NO_SUCH__KEY", "NFX_TEST_REDIS", "PATH"], "log level, harness, config file, unknown keys (reported by the role) and the rest stay");
  t.same(dropped.sort((a, b) => a.name.localeCompare(b.name)), [
    { name: "NFX_HTTP__PORT", key: "http.port", differs: false },
    { name: "NFX_NATS", key: "nats", differs: true },
    { name: "NFX_REDIS__URL", key: "redis.url", differs: true },
  ], "a key set, one holding a key set; whether each value differs from the cluster's");
  t.same(envWithout(env, {}).env, env, "nothing set: nothing dropped");
});
