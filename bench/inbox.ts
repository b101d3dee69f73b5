// bench:inbox — what an in-app notification to a large audience costs on each path: fan-out on write (an inbox entry per recipient) against a broadcast (stored once, merged into each inbox when read): Redis memory and time to deliver, then the cost of an inbox read.
import { performance } from "node:perf_hooks";

import type { UserRecord } from "../lib/core/types.js";
import { writeUsers } from "../lib/directory/directory.js";
import { changeUserSubscriptions, putTopic } from "../lib/directory/topics.js";
import { type Broadcast, Broadcasts } from "../lib/inapp/broadcasts.js";
import { Inbox, inboxItemOf } from "../lib/inapp/inbox.js";
import type { Redis } from "../lib/infra/redis.js";
import { arg, startBenchCluster } from "./harness.js";
import { cpuSecs } from "./proc-stats.js";
import { report } from "./report.js";

/** Recipients per path, notifications each recipient gets, inbox reads measured per path, reads in flight. */
const USERS = arg("users", 20_000);
const NOTES = arg("notifications", 20);
const READS = arg("reads", 20_000);
const CONCURRENCY = arg("concurrency", 64);
const SHARDS = 64;
const DAY = 86_400_000;

const usedMemory = async (redis: Redis): Promise<number> => Number(/used_memory:(\d+)/.exec(await redis.info("memory"))![1]);

/** Runs `n` calls of `one(i)` with `CONCURRENCY` in flight; resolves the wall time (s) and each call's latency (ms). */
async function drive(n: number, one: (i: number) => Promise<unknown>): Promise<{ secs: number; lat: number[] }> {
  const lat: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      for (let i = next++; i < n; i = next++) {
        const s = performance.now();
        await one(i);
        lat.push(performance.now() - s);
      }
    }),
  );
  return { secs: (performance.now() - t0) / 1000, lat: lat.sort((a, b) => a - b) };
}

const pct = (l: number[], p: number): number => Number(l[Math.min(l.length - 1, Math.floor(l.length * p))].toFixed(3));

async function main(): Promise<void> {
  const bc = await startBenchCluster("inbox", [], false);
  const redis = bc.redis;
  const redisPid = bc.cluster.redis.proc.pid;
  const now = Date.now();
  const users = (path: string): string[] => Array.from({ length: USERS }, (_, i) => `${path}${i}`);
  const recs = (ids: string[]): UserRecord[] => ids.map((id) => ({ id, devices: [] }));
  const writers = users("w");
  const readers = users("r");
  for (let i = 0; i < USERS; i += 5000) await writeUsers(redis, SHARDS, recs([...writers.slice(i, i + 5000), ...readers.slice(i, i + 5000)]));
  await putTopic(redis, "bench", undefined, now);
  for (let i = 0; i < USERS; i += 10_000) await changeUserSubscriptions(redis, SHARDS, "bench", readers.slice(i, i + 10_000));
  const brief = (k: number) => ({ id: `n${String(k).padStart(4, "0")}`, createdAt: now - (NOTES - k) * 1000, expiresAt: now + DAY, priority: "normal" as const, category: "social", channels: ["inapp" as const], content: { inapp: { payload: { headline: `news ${k}`, body: "x".repeat(120) } } } });

  // Deliver: fan-out on write stores an inbox entry per recipient (the in-app dispatcher's Inbox.add); a broadcast is stored once.
  const retentionMs = 30 * DAY;
  const inboxW = new Inbox(redis, { shards: SHARDS, cap: 200, retentionMs });
  let m0 = await usedMemory(redis);
  let c0 = cpuSecs(redisPid);
  const write = await drive(USERS * NOTES, (i) => inboxW.add(writers[i % USERS], inboxItemOf(brief(Math.floor(i / USERS)))));
  const writeMem = (await usedMemory(redis)) - m0;
  const writeRedisCpu = cpuSecs(redisPid) - c0;
  const store = new Broadcasts(redis, { shards: SHARDS, max: 100, refreshMs: 1000, retentionMs });
  m0 = await usedMemory(redis);
  c0 = cpuSecs(redisPid);
  const t0 = performance.now();
  for (let k = 0; k < NOTES; k++) {
    const n = brief(k);
    const b: Broadcast = { id: n.id, at: n.createdAt, expiresAt: n.expiresAt, category: n.category, segment: "topic:bench", item: inboxItemOf(n) };
    await store.store(b);
  }
  const readSecs = (performance.now() - t0) / 1000;
  const readMem = (await usedMemory(redis)) - m0;
  const readRedisCpu = cpuSecs(redisPid) - c0;

  // Read: the same inbox read (20 newest items and the unread count) on each path, as the gateway serves GET /v1/inbox.
  const inboxR = new Inbox(redis, { shards: SHARDS, cap: 200, retentionMs, broadcasts: store });
  const check = await inboxR.list(readers[0], NOTES);
  if (check.items.length !== NOTES || check.unread !== NOTES) throw new Error(`a broadcast reader's inbox holds ${check.items.length} items, ${check.unread} unread; expected ${NOTES}`);
  const checkW = await inboxW.list(writers[0], NOTES);
  if (checkW.items.length !== NOTES) throw new Error(`a fan-out-on-write inbox holds ${checkW.items.length} items; expected ${NOTES}`);
  const reads: Record<string, unknown> = {};
  for (const [path, inbox, ids] of [["write", inboxW, writers], ["read", inboxR, readers], ["write_again", inboxW, writers], ["read_again", inboxR, readers]] as const) {
    const cpu0 = process.cpuUsage();
    const r0 = cpuSecs(redisPid);
    const r = await drive(READS, (i) => inbox.list(ids[i % USERS], NOTES));
    const cpu = process.cpuUsage(cpu0);
    reads[path] = {
      reads_per_s: Math.round(READS / r.secs), p50_ms: pct(r.lat, 0.5), p99_ms: pct(r.lat, 0.99),
      client_cpu_us_per_read: Math.round((cpu.user + cpu.system) / READS), redis_cpu_us_per_read: Math.round(((cpuSecs(redisPid) - r0) * 1e6) / READS),
    };
  }
  await bc.close();
  report("inbox", {
    bench: "inbox", users: USERS, notifications: NOTES, reads: READS, concurrency: CONCURRENCY,
    deliver: {
      write: { redis_bytes: writeMem, bytes_per_recipient_item: Math.round(writeMem / (USERS * NOTES)), secs: Number(write.secs.toFixed(2)), redis_cpu_s: Number(writeRedisCpu.toFixed(2)) },
      read: { redis_bytes: readMem, bytes_per_recipient_item: Number((readMem / (USERS * NOTES)).toFixed(3)), secs: Number(readSecs.toFixed(3)), redis_cpu_s: Number(readRedisCpu.toFixed(3)) },
    },
    inbox_read: reads,
  });
}

await main();
