// bench:fan — seeds N users, runs "active within 30 days" campaigns one after the other with the gateways disconnected: API call -> every send batch durable in its channel stream.
import { cpus } from "node:os";
import { parseArgs } from "node:util";

import { AckPolicy, DeliverPolicy } from "@nats-io/jetstream";
import { nanos } from "@nats-io/transport-node";

import { decode } from "../lib/core/codec.js";
import { CHANNELS, receiptAll, STREAM } from "../lib/core/subjects.js";
import type { SendBatch } from "../lib/core/types.js";
import { syntheticUser } from "../lib/directory/users.js";
import type { Nats } from "../lib/infra/nats.js";
import { listProcesses } from "../lib/infra/processes.js";
import { notify } from "../lib/intake/api-client.js";
import { scrapeProcesses } from "../lib/tracking/delivery-log.js";
import { campaignCreatedAt, countDecided, membersAsOf, perItem, type RedisCommandStats, redisCommandStats, seedSyntheticUsers, startBenchCluster, statsGrowth, waitUntil } from "./harness.js";
import { cpuSecs, hwm, hwmBytes, rssBytes } from "./proc-stats.js";
import { report } from "./report.js";

const { values } = parseArgs({ options: { users: { type: "string", default: "1000000" }, shards: { type: "string", default: "1" }, campaigns: { type: "string", default: "2" } } });
const N = Number(values.users);
const SHARD_PROCS = Number(values.shards);
/** Campaigns run one after the other to the same segment (the second meets the state the first left). */
const CAMPAIGNS = Number(values.campaigns);
if (!Number.isInteger(CAMPAIGNS) || CAMPAIGNS < 1 || CAMPAIGNS > 5) throw new Error(`--campaigns: must be an integer 1-5, got ${values.campaigns}`);

/** Reads every send batch of a channel stream once; returns delivery keys seen and duplicates. */
async function readSends(n: Nats, channel: (typeof CHANNELS)[number], seen: Set<string>): Promise<{ sends: number; dup: number }> {
  const stream = STREAM.send(channel);
  // A work-queue stream allows no overlapping consumers: the (idle) gateway consumers go first, whatever their names
  // (the webhook stream's are per endpoint partition); nothing is acked, so nothing is removed.
  for await (const ci of n.jsm.consumers.list(stream)) await n.jsm.consumers.delete(stream, ci.name);
  const ci = await n.jsm.consumers.add(stream, { ack_policy: AckPolicy.Explicit, ack_wait: nanos(600_000), max_ack_pending: 1_000_000, deliver_policy: DeliverPolicy.All, inactive_threshold: nanos(60_000), mem_storage: true });
  const c = await n.js.consumers.get(stream, ci.name);
  let pending = ci.num_pending;
  let sends = 0;
  let dup = 0;
  while (pending > 0) {
    const it = await c.fetch({ max_messages: 256, expires: 5000 });
    let got = 0;
    for await (const m of it) {
      got++;
      pending = m.info.pending;
      for (const s of decode<SendBatch>(m.data).sends) {
        const k = `${s.nid}|${s.user}|${s.device}`;
        sends++;
        if (seen.has(k)) dup++;
        else seen.add(k);
      }
    }
    if (got === 0) throw new Error(`${stream}: no messages while ${pending} pending`);
  }
  return { sends, dup };
}

const bench = await startBenchCluster("fan", ["ingest", "campaign", "shard"], false);
const { cluster, nats, redis } = bench;
const extra = [];
for (let i = 1; i < SHARD_PROCS; i++) extra.push(await cluster.startExtra("shard"));
let result: Record<string, unknown> = {};
try {
  const cfg = cluster.cfg;
  const now = Date.now();
  const t0 = performance.now();
  console.error(`seeding ${N} users`);
  const lastActive = await seedSyntheticUsers(redis, cfg.cluster.shards, N, now);
  const seedSecs = (performance.now() - t0) / 1000;
  console.error(`seeded ${N} users in ${seedSecs.toFixed(1)} s`);

  // Checkpoint bytes the shard processes have written (whole states and changes: docs/architecture.md, "Incremental checkpoints"), from their metrics.
  const checkpointBytes = async (): Promise<Record<string, number>> => {
    const out: Record<string, number> = { full: 0, changes: 0 };
    for (const { metrics } of await scrapeProcesses((await listProcesses(nats)).filter((x) => x.roles.includes("shard")))) {
      for (const v of metrics.find((m) => m.name === "nfx_checkpoint_bytes_total")?.values ?? []) out[String(v.labels.kind)] = (out[String(v.labels.kind)] ?? 0) + v.value;
    }
    return out;
  };
  const procs: Record<string, number | undefined> = { "nats-server": cluster.nats.proc.pid, "redis-server": cluster.redis.proc.pid };
  for (const [role, p] of cluster.procs) procs[role] = p.pid;
  extra.forEach((p, i) => (procs[`shard#${i + 2}`] = p.pid));

  // Each campaign: from the API call until every chunk is decided and its send batches are acked by JetStream. The second
  // one finds the first one's dedup window and buckets in the shard owners' state, as a running system does.
  const runs: { id: string; seconds: number; cpu: Record<string, number>; checkpointKb: Record<string, number>; members: number[]; redis: RedisCommandStats }[] = [];
  // The shard processes' memory before any campaign: what the campaigns add is held per recipient (dedup window, cap buckets) or passing.
  const shardPids = [cluster.procs.get("shard")?.pid, ...extra.map((p) => p.pid)];
  const shardRssBefore = shardPids.reduce((a: number, pid) => a + rssBytes(pid), 0);
  for (let c = 0; c < CAMPAIGNS; c++) {
    const cpu0 = Object.fromEntries(Object.entries(procs).map(([k, pid]) => [k, cpuSecs(pid)]));
    const ck0 = await checkpointBytes();
    const redis0 = await redisCommandStats(redis);
    const counted = countDecided(nats);
    const start = performance.now();
    const { id } = await notify(nats.nc, { segment: "active_30d", category: "marketing", content: { push: { title: `Sale ${c + 1} starts`, body: "Everything 20% off until midnight" } } });
    const members = membersAsOf(lastActive, await campaignCreatedAt(nats, id), 30);
    console.error(`campaign ${c + 1}: ${members.length} members`);
    await waitUntil(() => `campaign ${c + 1}: every member decided: ${counted.decided} of ${members.length} (receipts seen on ${receiptAll})`, () => counted.decided >= members.length, Math.max(60_000, (N / 5000) * 1000));
    const seconds = (performance.now() - start) / 1000;
    counted.stop();
    const cpu = Object.fromEntries(Object.entries(procs).map(([k, pid]) => [k, Number((cpuSecs(pid) - cpu0[k]).toFixed(2))]));
    const redisIn = statsGrowth(redis0, await redisCommandStats(redis));
    // Give the owners one more checkpoint interval: the state a campaign leaves is written by then.
    await new Promise((r) => setTimeout(r, cfg.shard.checkpointMs + 500));
    const ck1 = await checkpointBytes();
    const checkpointKb = Object.fromEntries(Object.keys(ck1).map((k) => [k, Math.round((ck1[k] - (ck0[k] ?? 0)) / 1024)]));
    runs.push({ id, seconds, cpu, checkpointKb, members, redis: redisIn });
  }

  // The devices that should have a send, per campaign: members' devices whose owner takes marketing push.
  const expectedOf = (members: number[]): Set<string> => {
    const out = new Set<string>();
    for (const i of members) {
      const u = syntheticUser(i, now);
      if (u.optedOut || u.preferences?.categories?.marketing?.push === false) continue;
      for (const d of u.devices) out.add(`${u.id}|${d.id}`);
    }
    return out;
  };

  // Count what is in the send streams: every expected delivery key once per campaign?
  const seen = new Set<string>();
  let dup = 0;
  for (const ch of CHANNELS) dup += (await readSends(nats, ch, seen)).dup;
  const perCampaign = runs.map((r) => {
    const expected = expectedOf(r.members);
    let sends = 0;
    const keys = new Set<string>();
    for (const k of seen) {
      if (!k.startsWith(`${r.id}|`)) continue;
      sends++;
      keys.add(k.slice(k.indexOf("|") + 1));
    }
    let lost = 0;
    for (const k of expected) if (!keys.has(k)) lost++;
    return { sends, expected: expected.size, lost, seconds: Number(r.seconds.toFixed(3)), sends_per_s: Math.round(sends / r.seconds), cpu_seconds: r.cpu, checkpoint_kb_written: r.checkpointKb, redis_calls_per_1000_sends: perItem(r.redis.calls, sends / 1000), redis_us_per_send_by_command: perItem(r.redis.usec, sends) };
  });
  const first = perCampaign[0];
  const sends = first.sends;
  const seconds = runs[0].seconds;
  const lost = perCampaign.reduce((a, c) => a + c.lost, 0);
  const perCore = sends / seconds / Math.min(2, cpus().length);
  const mem: Record<string, number> = { "nats-server": hwm(cluster.nats.proc.pid), "redis-server": hwm(cluster.redis.proc.pid), bench: Math.round(process.memoryUsage().rss / 1048576) };
  for (const [role, p] of cluster.procs) mem[role] = hwm(p.pid);
  extra.forEach((p, i) => (mem[`shard#${i + 2}`] = hwm(p.pid)));
  // Peak RSS over the RSS before the first campaign, per member of the campaign (each holds a dedup entry per campaign and a cap bucket).
  const shardGrowth = shardPids.reduce((a: number, pid) => a + hwmBytes(pid), 0) - shardRssBefore;
  result = {
    bench: "fan",
    users: N,
    sends,
    expected_sends: first.expected,
    seconds: Number(seconds.toFixed(3)),
    sends_per_s: Math.round(sends / seconds),
    lost,
    dup,
    shard_processes: SHARD_PROCS,
    peak_rss_mb: mem,
    shard_rss_before_mb: Math.round(shardRssBefore / 1048576),
    shard_bytes_per_recipient: Math.round(shardGrowth / runs[0].members.length),
    // What bench:fan-slope compares between two sizes: the first campaign's recipients and the shard's growth.
    recipients: runs[0].members.length,
    shard_growth_bytes: shardGrowth,
    cpu_seconds_during_campaign: runs[0].cpu,
    campaigns: perCampaign,
    seed_seconds: Number(seedSecs.toFixed(1)),
    projection_100m: {
      sends_per_s_per_core: Math.round(perCore),
      cores_for_100m_users_in_60s: Math.ceil(((first.expected / N) * 1e8) / 60 / perCore),
      seconds_for_100m_users_on_2_cores: Math.round(((first.expected / N) * 1e8) / (sends / seconds)),
      note: "the first campaign's sends per user x 100M users, at its measured rate per core (both cores of this machine ran every process)",
    },
  };
} finally {
  await bench.close();
}
report("fan", result);
