// `nfx topics ...` and `nfx endpoints ...`: topics, their user and endpoint subscribers, and webhook endpoints (state, deliveries, pause, resume, secret rotation), over the NATS API.
import { readFileSync } from "node:fs";

import { Command, InvalidArgumentError } from "commander";

import { API } from "../lib/core/subjects.js";
import { callApi, notify } from "../lib/intake/api-client.js";
import { cliConfig, withConnections } from "./cli-context.js";

/** Ids from `--users a,b,c` and/or `--users-file` (one per line); at most 10,000 per call (the API refuses more). */
function idsOf(list?: string, file?: string): string[] | undefined {
  const ids = [...(list ? list.split(",") : []), ...(file ? readFileSync(file, "utf8").split(/\r?\n/) : [])].map((s) => s.trim()).filter(Boolean);
  return ids.length ? ids : undefined;
}

const positive = (v: string): number => {
  const n = Number(v);
  if (!(n > 0)) throw new InvalidArgumentError("must be a number > 0");
  return n;
};

/** Registers `topics` and `endpoints` on the root command. */
export function registerTopicCommands(program: Command): void {
  const call = (subject: string, body: Record<string, unknown>) => withConnections(cliConfig(program), { nats: true }, ({ nats }) => callApi<unknown>(nats.nc, subject, body, 30_000));
  const print = (v: unknown): void => console.log(JSON.stringify(v, null, 2));

  const topics = program.command("topics").description("topics: audiences of users and webhook endpoints a notification can target (`topic`)");
  topics.command("create").description("create a topic (or change its description)").argument("<name>").option("--description <text>")
    .action(async (name: string, o: { description?: string }) => print(await call(API.topics, { action: "put", name, ...(o.description ? { description: o.description } : {}) })));
  topics.command("list").description("topics with their subscriber counts").action(async () => print(await call(API.topics, { action: "list" })));
  topics.command("show").description("one topic").argument("<name>").action(async (name: string) => print(await call(API.topics, { action: "get", name })));
  topics.command("delete").description("delete a topic and its subscriptions").argument("<name>").action(async (name: string) => print(await call(API.topics, { action: "delete", name })));
  for (const action of ["subscribe", "unsubscribe"] as const) {
    topics.command(action).description(`${action} users and/or endpoints (up to 10,000 of each per call)`).argument("<name>")
      .option("--users <ids>", "user ids, comma-separated").option("--users-file <file>", "user ids, one per line").option("--endpoints <ids>", "endpoint ids, comma-separated")
      .action(async (name: string, o: { users?: string; usersFile?: string; endpoints?: string }) => {
        const users = idsOf(o.users, o.usersFile);
        const endpoints = idsOf(o.endpoints);
        if (!users && !endpoints) throw new InvalidArgumentError("give --users, --users-file or --endpoints");
        print(await call(API.topics, { action, name, ...(users ? { users } : {}), ...(endpoints ? { endpoints } : {}) }));
      });
  }

  topics.command("publish").description("publish a notification to a topic: push to its users (--title, --body), an event to its endpoints (--type, --data); prints its id").argument("<name>")
    .option("--title <text>", "push title").option("--body <text>", "push body").option("--type <type>", "event type for the endpoints").option("--data <json>", "event data for the endpoints (a JSON object)")
    .option("--category <name>", "category", "transactional")
    .action(async (name: string, o: { title?: string; body?: string; type?: string; data?: string; category: string }) => {
      if (!(o.title && o.body) && !o.type) throw new InvalidArgumentError("give --title and --body, and/or --type");
      let data: Record<string, unknown> = {};
      try {
        data = o.data ? (JSON.parse(o.data) as Record<string, unknown>) : {};
      } catch {
        throw new InvalidArgumentError("--data: must be a JSON object");
      }
      const content = { ...(o.title && o.body ? { push: { title: o.title, body: o.body } } : {}), ...(o.type ? { webhook: { type: o.type, data } } : {}) };
      const r = await withConnections(cliConfig(program), { nats: true }, ({ nats }) => notify(nats.nc, { topic: name, category: o.category, content }));
      console.log(r.id);
    });

  const endpoints = program.command("endpoints").description("webhook endpoints: systems subscribed to topics");
  const fields = (c: Command): Command => c.option("--description <text>").option("--types <list>", "event types it wants, comma-separated (default: all)").option("--rate-limit <per-s>", "deliveries per second at most", positive).option("--events <list>", "nfx lifecycle events it subscribes to, comma-separated: accepted, sent, delivered, failed, opened, clicked, shed");
  const input = (o: { description?: string; types?: string; rateLimit?: number; events?: string }) => ({
    ...(o.description !== undefined ? { description: o.description } : {}), ...(o.types ? { types: o.types.split(",") } : {}), ...(o.rateLimit !== undefined ? { rateLimit: o.rateLimit } : {}),
    ...(o.events ? { events: o.events.split(",") } : {}),
  });
  fields(endpoints.command("create").description("add an endpoint; prints it with its signing secret").argument("<url>").option("--topics <list>", "topics to subscribe it to, comma-separated"))
    .action(async (url: string, o: { topics?: string; description?: string; types?: string; rateLimit?: number; events?: string }) => print(await call(API.endpoints, { action: "create", url, ...input(o), ...(o.topics ? { topics: o.topics.split(",") } : {}) })));
  fields(endpoints.command("update").description("change an endpoint").argument("<id>").option("--url <url>"))
    .action(async (id: string, o: { url?: string; description?: string; types?: string; rateLimit?: number; events?: string }) => print(await call(API.endpoints, { action: "update", id, ...(o.url ? { url: o.url } : {}), ...input(o) })));
  endpoints.command("list").description("every endpoint (without secrets)").action(async () => print(await call(API.endpoints, { action: "list" })));
  endpoints.command("show").description("one endpoint, with its secrets and topics").argument("<id>").action(async (id: string) => print(await call(API.endpoints, { action: "get", id })));
  endpoints.command("delete").description("delete an endpoint, its subscriptions and its queue").argument("<id>").action(async (id: string) => print(await call(API.endpoints, { action: "delete", id })));
  endpoints.command("rotate-secret").description("a new signing secret; the old one keeps signing for endpoints.secretOverlapSec").argument("<id>").action(async (id: string) => print(await call(API.endpoints, { action: "rotate", id })));
  endpoints.command("state").description("delivery state: pending, in flight, delivered, failed, attempts, next attempt, last status, paused").argument("<id>").action(async (id: string) => print(await call(API.endpoints, { action: "state", id })));
  endpoints.command("deliveries").description("recent deliveries and their outcomes, newest first").argument("<id>").option("--limit <n>", "how many", (v) => Number(v), 50)
    .action(async (id: string, o: { limit: number }) => print(await call(API.endpoints, { action: "deliveries", id, limit: o.limit })));
  endpoints.command("pause").description("stop delivering to an endpoint (deliveries queue up)").argument("<id>").action(async (id: string) => print(await call(API.endpoints, { action: "pause", id })));
  endpoints.command("resume").description("deliver what accumulated, in order").argument("<id>").action(async (id: string) => print(await call(API.endpoints, { action: "resume", id })));
}
