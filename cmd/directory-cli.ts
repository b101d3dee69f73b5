// `nfx users ...` and `nfx segments ...`: the directory and its segments from the command line.
import { createReadStream, statSync } from "node:fs";
import { createInterface } from "node:readline";

import cliProgress from "cli-progress";
import { Command, InvalidArgumentError } from "commander";

import { NotFound } from "../lib/core/errors.js";
import { formatIssue } from "../lib/core/request-schema.js";
import { CONTENT_CHANNELS } from "../lib/core/subjects.js";
import type { UserRecord } from "../lib/core/types.js";
import { consentLog, getUser, writeUsers } from "../lib/directory/directory.js";
import { hhmm } from "../lib/directory/quiet-hours.js";
import { countSegment, defineSegment, listSegments, type SegmentRule } from "../lib/directory/segments.js";
import { syntheticUser, userRecordSchema } from "../lib/directory/users.js";
import { preferencesOp } from "../lib/intake/operations.js";
import { cliConfig, withConnections } from "./cli-context.js";

const BATCH = 2000;
const bar = (label: string) =>
  new cliProgress.SingleBar({ format: `${label} {bar} {percentage}% | {value}/{total} | {rate}/s | ETA {eta_formatted}`, hideCursor: true, noTTYOutput: true, notTTYSchedule: 2000 }, cliProgress.Presets.shades_classic);

/** Imports NDJSON user records: pipelined, with a progress bar; a bad line is reported with its number and skipped. Resolves with counts. */
export async function importUsers(w: (users: UserRecord[]) => Promise<void>, file: string, onBad: (msg: string) => void, progress?: (bytes: number) => void): Promise<{ imported: number; skipped: number }> {
  const rl = createInterface({ input: createReadStream(file), crlfDelay: Infinity });
  let line = 0;
  let imported = 0;
  let skipped = 0;
  let bytes = 0;
  let batch: UserRecord[] = [];
  for await (const text of rl) {
    line++;
    bytes += Buffer.byteLength(text) + 1;
    if (!text.trim()) continue;
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch {
      onBad(`line ${line}: not valid JSON`);
      skipped++;
      continue;
    }
    const r = userRecordSchema.safeParse(v);
    if (!r.success) {
      onBad(`line ${line}: ${formatIssue(r.error.issues[0]).message}`);
      skipped++;
      continue;
    }
    batch.push(r.data);
    if (batch.length >= BATCH) {
      await w(batch);
      imported += batch.length;
      batch = [];
      progress?.(bytes);
    }
  }
  if (batch.length) await w(batch);
  imported += batch.length;
  progress?.(bytes);
  return { imported, skipped };
}

const kv = (v: string, prev: Record<string, string | number | boolean> = {}) => {
  const i = v.indexOf("=");
  if (i < 1) throw new InvalidArgumentError("must be key=value");
  const raw = v.slice(i + 1);
  const val = raw === "true" ? true : raw === "false" ? false : /^-?\d+(\.\d+)?$/.test(raw) ? Number(raw) : raw;
  return { ...prev, [v.slice(0, i)]: val };
};
const many = (v: string, prev: string[] = []) => [...prev, v];

/** Registers `users` and `segments` on the root command. */
export function registerDirectoryCommands(program: Command): void {
  const users = program.command("users").description("the user directory");
  users
    .command("import")
    .description("import users from NDJSON (one record per line); bad lines are reported and skipped")
    .argument("<file>", "NDJSON file")
    .action(async (file: string) => {
      const cfg = cliConfig(program);
      await withConnections(cfg, { redis: true }, async ({ redis }) => {
        const b = bar("import");
        b.start(statSync(file).size, 0, { rate: 0 });
        const t0 = Date.now();
        const bad: string[] = [];
        const r = await importUsers((u) => writeUsers(redis, cfg.cluster.shards, u), file, (m) => bad.push(m), (bytes) => b.update(bytes, { rate: Math.round(bytes / Math.max(0.001, (Date.now() - t0) / 1000)) }));
        b.stop();
        for (const m of bad.slice(0, 50)) console.error(m);
        if (bad.length > 50) console.error(`... ${bad.length - 50} more bad lines`);
        console.log(`imported ${r.imported} users, skipped ${r.skipped} bad lines`);
      });
    });
  users
    .command("seed")
    .description("write N synthetic users (mixed platforms, 1-3 devices, world time zones, some opted out, spread of last activity)")
    .requiredOption("--count <n>", "how many", (v) => Number(v))
    .option("--start <i>", "first index (ids u000000000...)", (v) => Number(v), 0)
    .action(async (o: { count: number; start: number }) => {
      const cfg = cliConfig(program);
      await withConnections(cfg, { redis: true }, async ({ redis }) => {
        const b = bar("seed");
        b.start(o.count, 0, { rate: 0 });
        const now = Date.now();
        const t0 = now;
        const inflight: Promise<void>[] = [];
        for (let i = 0; i < o.count; i += BATCH) {
          const us = Array.from({ length: Math.min(BATCH, o.count - i) }, (_, k) => syntheticUser(o.start + i + k, now));
          inflight.push(writeUsers(redis, cfg.cluster.shards, us));
          if (inflight.length >= 8) await inflight.shift();
          b.update(i + us.length, { rate: Math.round((i + us.length) / Math.max(0.001, (Date.now() - t0) / 1000)) });
        }
        await Promise.all(inflight);
        b.stop();
        console.log(`seeded ${o.count} users`);
      });
    });
  users
    .command("get")
    .description("print one user's record")
    .argument("<id>")
    .action(async (id: string) => {
      const cfg = cliConfig(program);
      const u = await withConnections(cfg, { redis: true }, ({ redis }) => getUser(redis, cfg.cluster.shards, id));
      if (!u) throw new NotFound(`user ${id} not found`, { field: "id" });
      console.log(JSON.stringify(u, null, 2));
    });
  users
    .command("consent")
    .description("print one user's consent log: every preference change, when, through what (API key, user token, unsubscribe link, preference page, SMS keyword, CLI) and by whom")
    .argument("<id>")
    .option("--json", "print JSON")
    .action(async (id: string, o: { json?: boolean }) => {
      const cfg = cliConfig(program);
      const entries = await withConnections(cfg, { redis: true }, ({ redis }) => consentLog(redis, cfg.cluster.shards, id));
      if (o.json) return void console.log(JSON.stringify({ user: id, entries }, null, 2));
      if (entries.length === 0) return void console.log(`no consent changes recorded for ${id}`);
      for (const e of entries) console.log(`${new Date(e.at).toISOString()}  ${e.via.padEnd(16)} ${(e.by ?? "-").padEnd(14)} ${JSON.stringify(e.change)}`);
    });
  users
    .command("put")
    .description("create or replace users from JSON records (one inline, or @file.ndjson)")
    .argument("<json-or-file>")
    .action(async (arg: string) => {
      const cfg = cliConfig(program);
      await withConnections(cfg, { redis: true }, async ({ redis }) => {
        if (arg.startsWith("@")) {
          const r = await importUsers((u) => writeUsers(redis, cfg.cluster.shards, u), arg.slice(1), (m) => console.error(m));
          console.log(`wrote ${r.imported} user(s), skipped ${r.skipped}`);
          return;
        }
        const r = userRecordSchema.safeParse(JSON.parse(arg));
        if (!r.success) throw new InvalidArgumentError(formatIssue(r.error.issues[0]).message);
        await writeUsers(redis, cfg.cluster.shards, [r.data]);
        console.log("wrote 1 user(s)");
      });
    });
  users
    .command("prefs")
    .description("change a user's preferences (announced on nfx.dir.changed.<shard>)")
    .argument("<id>")
    .option("--opt-out", "turn every notification off")
    .option("--opt-in", "turn the global opt-out off")
    .option("--marketing <on|off>", "stop (off) or resume (on) all marketing: commercial categories")
    .option("--set <category.channel=on|off>", "per category and channel (repeatable), e.g. marketing.push=off", many)
    .option("--quiet <HH:MM-HH:MM|off>", "quiet hours in the user's time zone, e.g. 22:00-07:00; off clears them")
    .action(async (id: string, o: { optOut?: boolean; optIn?: boolean; marketing?: string; set?: string[]; quiet?: string }) => {
      const cfg = cliConfig(program);
      if (o.marketing !== undefined && o.marketing !== "on" && o.marketing !== "off") throw new InvalidArgumentError(`--marketing ${o.marketing}: must be on or off`);
      const categories: Record<string, Record<string, boolean>> = {};
      for (const s of o.set ?? []) {
        const m = new RegExp(`^([a-z][a-z0-9_-]*)\\.(${CONTENT_CHANNELS.join("|")})=(on|off)$`).exec(s);
        if (!m) throw new InvalidArgumentError(`--set ${s}: must be category.channel=on|off`);
        (categories[m[1]] ??= {})[m[2]] = m[3] === "on";
      }
      let quietHours: { start: string; end: string } | null | undefined;
      if (o.quiet === "off") quietHours = null;
      else if (o.quiet !== undefined) {
        const m = /^([0-9]{2}:[0-9]{2})-([0-9]{2}:[0-9]{2})$/.exec(o.quiet);
        if (!m) throw new InvalidArgumentError(`--quiet ${o.quiet}: must be HH:MM-HH:MM or off`);
        quietHours = { start: m[1], end: m[2] };
      }
      const body = {
        ...(o.optOut ? { optedOut: true } : o.optIn ? { optedOut: false } : {}),
        ...(o.marketing ? { marketingOptOut: o.marketing === "off" } : {}),
        ...(Object.keys(categories).length ? { categories } : {}),
        ...(quietHours !== undefined ? { quietHours } : {}),
      };
      const u = await withConnections(cfg, { redis: true, nats: true }, ({ redis, nats }) => preferencesOp(cfg, redis, nats.nc, id, body, { via: "cli", name: process.env.USER ?? "nfx" }));
      const q = u.quietHours ? { quietHours: { start: hhmm(u.quietHours.start), end: hhmm(u.quietHours.end) } } : {};
      console.log(JSON.stringify({ id: u.id, optedOut: u.optedOut ?? false, marketingOptOut: u.marketingOptOut ?? false, ...q, preferences: u.preferences ?? {} }, null, 2));
    });

  const segments = program.command("segments").description("segments: built in (all, active_<N>d) and named");
  segments
    .command("define")
    .description("define (or redefine) a named segment and materialize its members per shard")
    .argument("<name>")
    .option("--active-days <n>", "active within the last n days", (v) => Number(v))
    .option("--locale <tag>", "locale (repeatable)", many)
    .option("--platform <p>", "has a device of this platform: ios or android (repeatable)", many)
    .option("--attr <key=value>", "attribute equals value (repeatable)", kv)
    .option("--opted-out <bool>", "true or false", (v) => v === "true")
    .action(async (name: string, o: { activeDays?: number; locale?: string[]; platform?: string[]; attr?: Record<string, string | number | boolean>; optedOut?: boolean }) => {
      const cfg = cliConfig(program);
      const rule = {
        ...(o.activeDays !== undefined ? { activeDays: o.activeDays } : {}),
        ...(o.locale ? { locales: o.locale } : {}),
        ...(o.platform ? { platforms: o.platform } : {}),
        ...(o.attr ? { attributes: o.attr } : {}),
        ...(o.optedOut !== undefined ? { optedOut: o.optedOut } : {}),
      } as SegmentRule;
      await withConnections(cfg, { redis: true }, async ({ redis }) => {
        const b = bar("shards");
        b.start(cfg.cluster.shards, 0, { rate: 0 });
        const def = await defineSegment(redis, cfg.cluster.shards, name, rule, Date.now(), (n) => b.update(n));
        b.stop();
        console.log(`segment ${def.name}: ${def.members} members`);
      });
    });
  segments
    .command("count")
    .description("count a segment's members now")
    .argument("<name>")
    .action(async (name: string) => {
      const cfg = cliConfig(program);
      console.log(await withConnections(cfg, { redis: true }, ({ redis }) => countSegment(redis, cfg.cluster.shards, name, Date.now())));
    });
  segments
    .command("list")
    .description("list named segments")
    .action(async () => {
      const cfg = cliConfig(program);
      for (const d of await withConnections(cfg, { redis: true }, ({ redis }) => listSegments(redis))) {
        console.log(`${d.name.padEnd(24)} ${String(d.members).padStart(10)} members  ${JSON.stringify(d.rule)}  defined ${new Date(d.definedAt).toISOString()}`);
      }
      console.log("built in: all, active_<N>d (e.g. active_30d)");
    });
}
