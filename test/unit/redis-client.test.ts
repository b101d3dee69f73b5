// The Redis client on one server and on a cluster: which client the config opens, its options, hash tags and slot groups, pipelines that work on both, and no raw pipeline in the code.
import { readFileSync } from "node:fs";
import { join } from "node:path";

import t from "tap";

import { loadConfig } from "../../lib/core/config.js";
import { changedKey, engagedKey, inboxItemsKey, inboxKey, segmentBuildingKey, segmentKey, SEGMENTS_KEY, userKey, webhookSeenKey } from "../../lib/core/keys.js";
import { duplicateRedis, hashTagOf, isCluster, pipelineOf, redisClient, slotGroups } from "../../lib/infra/redis.js";
import { scriptFiles, variableKeyScripts } from "../../lib/infra/scripts.js";
import { REPO_ROOT, sourcesUnder } from "../helpers/sources.js";

const single = loadConfig({ env: {}, overrides: { redis: { url: "redis://127.0.0.1:1" } } });
const cluster = loadConfig({ env: {}, overrides: { redis: { cluster: ["redis://127.0.0.1:1", "redis://127.0.0.1:2"] } } });

t.test("redis.cluster picks the cluster client, with every script and the variable-key ones outside auto-pipelines", async (t) => {
  const s = redisClient(single);
  const c = redisClient(cluster);
  t.teardown(() => (s.disconnect(), c.disconnect()));
  t.notOk(isCluster(s), "redis.url alone: one server's client");
  t.ok(isCluster(c), "redis.cluster: a cluster client");
  if (!isCluster(c)) return;
  t.equal(c.options.enableAutoPipelining, true, "auto-pipelined, as the single client");
  t.same(c.options.autoPipeliningIgnoredCommands, variableKeyScripts(), "scripts whose first argument is a key count are sent on their own (routed by their first key)");
  t.same(variableKeyScripts().sort(), scriptFiles().filter((f) => f.file.endsWith("-n.lua")).map((f) => f.command).sort(), "exactly the -n scripts");
  const fns = c as unknown as Record<string, unknown>;
  for (const f of scriptFiles()) t.type(fns[f.command], "function", `${f.command} defined on the cluster client`);
  const d = duplicateRedis(c) as unknown as Record<string, unknown>;
  t.teardown(() => (d as unknown as { disconnect(): void }).disconnect());
  t.ok(isCluster(d as never), "a duplicate of a cluster client is one");
  for (const f of scriptFiles()) t.type(d[f.command], "function", `${f.command} defined on its duplicate`);
});

t.test("hash tags: every key of a user shard shares {s<shard>}; the global keys are one key each", async (t) => {
  const keys = [userKey(3, "a"), inboxKey(3, "b"), inboxItemsKey(3, "b"), changedKey(3), segmentKey(3, "vip"), segmentBuildingKey(3, "vip")];
  t.same(new Set(keys.map(hashTagOf)), new Set(["s3"]), "one tag for the shard's keys (a segment built aside renames within its slot)");
  t.equal(hashTagOf(SEGMENTS_KEY), SEGMENTS_KEY, "no tag: the key itself");
  t.not(hashTagOf(engagedKey("n_1", "opened")), hashTagOf(engagedKey("n_1", "clicked")), "engagement hashes have no common tag");
  t.equal(hashTagOf("a{}b{c}"), "a{}b{c}", "an empty first tag hashes the whole key, as Redis does");
  t.equal(hashTagOf("x{ab}{cd}"), "ab", "the first tag counts");
});

t.test("slotGroups: one group on one server, one per hash tag on a cluster", async (t) => {
  const s = redisClient(single);
  const c = redisClient(cluster);
  t.teardown(() => (s.disconnect(), c.disconnect()));
  const keys = [userKey(1, "a"), webhookSeenKey("sg", "e1"), userKey(2, "a"), userKey(1, "b"), webhookSeenKey("sg", "e2")];
  t.same(slotGroups(s, keys), [[0, 1, 2, 3, 4]], "unchanged on one server: everything in one call");
  t.same(slotGroups(c, keys), [[0, 3], [1], [2], [4]], "on a cluster: by tag, in order of first key");
  t.same(slotGroups(c, []), [], "no keys, no group");
});

t.test("pipelineOf: ioredis's pipeline on one server, a recorder on a cluster that sends nothing before exec", async (t) => {
  const s = redisClient(single);
  const c = redisClient(cluster);
  t.teardown(() => (s.disconnect(), c.disconnect()));
  t.equal(pipelineOf(s).constructor.name, "Pipeline", "one server: a real pipeline");
  const p = pipelineOf(c);
  t.equal(p.set("k1", "v").hset("k2", "f", 1).pexpire("k2", 10), p, "commands chain");
  t.equal(p.length, 3, "queued");
  t.equal((c as { status: string }).status, "wait", "nothing sent, not even a connection opened");
  t.equal((p as unknown as { then?: unknown }).then, undefined, "not mistaken for a promise");
});

t.test("no raw pipeline or transaction outside lib/infra/redis.ts (a cluster pipeline must keep to one node)", async (t) => {
  const files = ["lib", "actors", "cmd", "bench"].flatMap(sourcesUnder).filter((f) => f !== join("lib", "infra", "redis.ts"));
  const found = files.filter((f) => /\.(pipeline|multi)\(\)/.test(readFileSync(join(REPO_ROOT, f), "utf8")));
  t.same(found, [], "Redis pipelines go through pipelineOf");
});
