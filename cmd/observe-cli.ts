// Observability commands: `nfx log` (delivery log of a notification or user), `nfx top` (live cluster view), `nfx bounces` (hard-bounced addresses).
import type { Command } from "commander";

import { BOUNCED_KEY } from "../lib/core/keys.js";
import { API } from "../lib/core/subjects.js";
import { callApi } from "../lib/intake/api-client.js";
import { clearBounce } from "../lib/tracking/bounces.js";
import type { LogPage } from "../lib/tracking/delivery-log.js";
import { cliConfig, withConnections } from "./cli-context.js";
import { formatLogLine } from "./format.js";
import { renderTop, sampleCluster, topView } from "./top.js";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Adds the observability commands to `program`. */
export function registerObserveCommands(program: Command): void {
  program
    .command("log")
    .description("print the delivery log of a notification (in receipt order) or of a user (newest first)")
    .option("--notification <id>", "notification id")
    .option("--user <id>", "user id")
    .option("--outcome <outcome>", "only this outcome (sent, delivered, failed, suppressed, shed, opened, clicked, ...)")
    .option("--limit <n>", "at most this many lines", (v) => Number(v), 100)
    .option("--after <seq>", "notification log: continue after this receipt sequence (the `next` printed last)", (v) => Number(v))
    .option("--before <ms>", "user log: entries older than this time (the `next` printed last)", (v) => Number(v))
    .option("--json", "print JSON")
    .action(async (o: { notification?: string; user?: string; outcome?: string; limit: number; after?: number; before?: number; json?: boolean }) => {
      const page = await withConnections(cliConfig(program), { nats: true }, ({ nats }) =>
        callApi<LogPage>(nats.nc, API.log, {
          ...(o.notification !== undefined ? { notification: o.notification } : {}), ...(o.user !== undefined ? { user: o.user } : {}),
          ...(o.outcome ? { outcome: o.outcome } : {}), limit: o.limit, ...(o.after !== undefined ? { after: o.after } : {}), ...(o.before !== undefined ? { before: o.before } : {}),
        }),
      );
      if (o.json) return void console.log(JSON.stringify(page, null, 2));
      for (const l of page.lines) console.log(formatLogLine(l));
      if (page.lines.length === 0) console.log("(no entries)");
      if (page.next !== undefined) console.log(`... more: add ${o.notification ? `--after ${page.next}` : `--before ${page.next}`}`);
    });

  program
    .command("top")
    .description("live view of the cluster: items per second per stage, provider sends and latency, consumer lag, breakers, processes")
    .option("--interval <seconds>", "refresh every this many seconds", (v) => Number(v), 1)
    .option("--once", "print one view (two samples an interval apart) and exit")
    .option("--json", "with --once: print the view as JSON")
    .action(async (o: { interval: number; once?: boolean; json?: boolean }) => {
      const ms = Math.max(200, o.interval * 1000);
      await withConnections(cliConfig(program), { nats: true }, async ({ nats }) => {
        let prev = await sampleCluster(nats);
        if (o.once) {
          await sleep(ms);
          const v = topView(prev, await sampleCluster(nats));
          return void console.log(o.json ? JSON.stringify(v, null, 2) : renderTop(v));
        }
        let stop = false;
        process.once("SIGINT", () => (stop = true));
        while (!stop) {
          await sleep(ms);
          const cur = await sampleCluster(nats);
          // Home, clear, draw: one write per frame.
          process.stdout.write(`\x1b[H\x1b[2J${renderTop(topView(prev, cur))}\n`);
          prev = cur;
        }
      });
    });

  const bounces = program.command("bounces").description("email addresses that hard-bounced (the email gateway sends them nothing)");
  bounces
    .command("list")
    .description("print every hard-bounced address")
    .action(async () => {
      const list = await withConnections(cliConfig(program), { redis: true }, ({ redis }) => redis.smembers(BOUNCED_KEY));
      for (const a of list.sort()) console.log(a);
      if (list.length === 0) console.log("(none)");
    });
  bounces
    .command("clear")
    .description("let an address receive email again")
    .argument("<address>")
    .action(async (address: string) => {
      const was = await withConnections(cliConfig(program), { redis: true }, ({ redis }) => clearBounce(redis, address));
      console.log(was ? `${address}: cleared` : `${address}: was not listed`);
      if (!was) process.exitCode = 1;
    });
}
