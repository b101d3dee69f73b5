// `nfx campaign ...`: create a segment campaign, watch its progress per stage, pause, resume, cancel.
import cliProgress from "cli-progress";
import { Command, InvalidArgumentError, Option } from "commander";

import type { CampaignStatus } from "../lib/campaign/campaigns.js";
import { total } from "../lib/campaign/counters.js";
import { API, PRIORITIES } from "../lib/core/subjects.js";
import { callApi, notify } from "../lib/intake/api-client.js";
import { cliConfig, withConnections } from "./cli-context.js";
import { formatCampaign, reasons } from "./format.js";

const kv = (v: string, prev: Record<string, string> = {}) => {
  const i = v.indexOf("=");
  if (i < 1) throw new InvalidArgumentError("must be key=value");
  return { ...prev, [v.slice(0, i)]: v.slice(i + 1) };
};

/** Registers `campaign` on the root command. */
export function registerCampaignCommands(program: Command): void {
  const campaign = program.command("campaign").description("segment campaigns");
  const status = (id: string) => withConnections(cliConfig(program), { nats: true }, ({ nats }) => callApi<CampaignStatus>(nats.nc, API.campaign, { id, action: "status" }));

  campaign
    .command("create")
    .description("notify a segment (all, active_<N>d or a named one); prints the campaign id")
    .requiredOption("--segment <name>", "segment")
    .option("--title <text>", "push title (inline content)")
    .option("--body <text>", "push body (inline content)")
    .option("--template <id>", "template instead of inline content")
    .option("--var <key=value>", "template variable (repeatable)", kv)
    .option("--category <name>", "category", "marketing")
    .addOption(new Option("--priority <p>", "priority lane (default: the category's)").choices([...PRIORITIES]))
    .option("--rate <users-per-s>", "expansion limit", (v) => Number(v))
    .action(async (o: { segment: string; title?: string; body?: string; template?: string; var?: Record<string, string>; category: string; priority?: string; rate?: number }) => {
      if (!o.template && !(o.title && o.body)) throw new InvalidArgumentError("give --title and --body, or --template");
      const r = await withConnections(cliConfig(program), { nats: true }, ({ nats }) =>
        notify(nats.nc, {
          segment: o.segment, category: o.category, ...(o.priority ? { priority: o.priority } : {}),
          ...(o.template ? { template: { id: o.template, variables: o.var ?? {} } } : { content: { push: { title: o.title!, body: o.body! } } }),
          ...(o.rate !== undefined ? { campaign: { rate: o.rate } } : {}),
        }),
      );
      console.log(r.id);
    });

  campaign
    .command("status")
    .description("a campaign's progress; --watch shows live bars per stage with rates and ETA")
    .argument("<id>")
    .option("--watch", "refresh until complete")
    .option("--json", "print JSON")
    .action(async (id: string, o: { watch?: boolean; json?: boolean }) => {
      if (!o.watch) {
        const s = await status(id);
        console.log(o.json ? JSON.stringify(s, null, 2) : formatCampaign(s));
        return;
      }
      await withConnections(cliConfig(program), { nats: true }, async ({ nats }) => {
        const bars = new cliProgress.MultiBar(
          { format: "{stage} {bar} {value}/{total} | {rate}/s | ETA {eta}", hideCursor: true, noTTYOutput: true, notTTYSchedule: 1000, clearOnComplete: false },
          cliProgress.Presets.shades_grey,
        );
        const stage = (name: string) => bars.create(1, 0, { stage: name.padEnd(10), rate: 0, eta: "-" });
        const b = { listed: stage("listed"), decided: stage("decided"), queued: stage("queued"), finished: stage("finished") };
        const info = bars.create(0, 0, { stage: "", rate: "", eta: "" }, { format: "{stage}" });
        let prev: { t: number; v: Record<string, number> } | null = null;
        for (;;) {
          const s = await callApi<CampaignStatus>(nats.nc, API.campaign, { id, action: "status" });
          const c = s.counters;
          const v = { listed: s.scanned, decided: c.decided, queued: c.queued, finished: c.sent + total(c.failed) + c.cancelledSends };
          const totals = { listed: s.total, decided: s.members, queued: c.queued, finished: c.queued };
          const t = Date.now();
          for (const k of Object.keys(b) as (keyof typeof b)[]) {
            const rate = prev ? Math.max(0, Math.round(((v[k] - prev.v[k]) * 1000) / Math.max(1, t - prev.t))) : 0;
            const left = totals[k] - v[k];
            b[k].setTotal(Math.max(1, totals[k]));
            b[k].update(v[k], { rate, eta: rate > 0 ? `${Math.ceil(left / rate)}s` : left === 0 ? "0s" : "-" });
          }
          info.update(0, { stage: `state ${s.state} | chunks ${s.chunks}, shards done ${s.shardsDone}/${s.shards} | suppressed ${reasons(c.suppressed)} | failed ${reasons(c.failed)} | cancelled ${c.cancelled + c.cancelledSends}` });
          prev = { t, v };
          if (s.complete || s.state === "cancelled") break;
          await new Promise((r) => setTimeout(r, 500));
        }
        bars.stop();
      });
    });

  for (const action of ["pause", "resume", "cancel"] as const) {
    campaign
      .command(action)
      .description(`${action} a campaign${action === "cancel" ? " (also drops its sends still queued downstream)" : ""}`)
      .argument("<id>")
      .action(async (id: string) => {
        const r = await withConnections(cliConfig(program), { nats: true }, ({ nats }) => callApi<{ state: string }>(nats.nc, API.campaign, { id, action }));
        console.log(`campaign ${id}: ${r.state}`);
      });
  }
}
