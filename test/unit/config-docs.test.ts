// docs/configuration.md is generated from config/schema.ts: it must match the generator, and every key must carry a description.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import t from "tap";
import { z } from "zod";

import { configKeyRows, renderConfigDocs, undocumentedKeys } from "../../config/docs.js";

const DOCS = fileURLToPath(new URL("../../../docs/configuration.md", import.meta.url));

t.test("docs/configuration.md is what the generator writes from the schema today", async (t) => {
  const onDisk = readFileSync(DOCS, "utf8");
  const wanted = renderConfigDocs();
  if (onDisk !== wanted) {
    const a = onDisk.split("\n");
    const b = wanted.split("\n");
    const i = a.findIndex((line, k) => line !== b[k]);
    const at = i === -1 ? Math.min(a.length, b.length) : i;
    t.fail(`docs/configuration.md is out of date with config/schema.ts: run \`npm run docs:config\` and commit the result (first difference at line ${at + 1}: file has ${JSON.stringify(a[at] ?? "(end)")}, generator gives ${JSON.stringify(b[at] ?? "(end)")})`);
  } else {
    t.pass("docs/configuration.md matches the generator");
  }
});

t.test("every configuration key has a description in the schema", async (t) => {
  const missing = undocumentedKeys();
  t.same(missing, [], `keys without a description: add .describe("...") to each in config/schema.ts, then run \`npm run docs:config\`: ${missing.join(", ")}`);
});

t.test("the page lists the keys a reader looks for, with their defaults", async (t) => {
  const rows = new Map(configKeyRows().map((r) => [r.path, r]));
  t.ok(rows.size > 100, `${rows.size} keys documented`);
  t.equal(rows.get("cluster.shards")?.default, "`64`");
  t.equal(rows.get("apiKeys[].key")?.default, "required");
  t.equal(rows.get("ws.issuer")?.default, "none");
  t.ok(rows.has("gateways.apns.apps[].breaker.failures"), "array items and nested objects are walked");
  t.ok(rows.has("categories.<name>.cap.count"), "map entries are walked");
  const page = renderConfigDocs();
  for (const section of ["cluster", "nats", "gateways", "ws", "up"]) t.match(page, `## \`${section}\``);
});

t.test("a key without a description is reported by path", async (t) => {
  const schema = z.strictObject({
    a: z.strictObject({ documented: z.number().default(1).describe("yes"), bare: z.number().default(2) }).prefault({}).describe("section"),
    list: z.array(z.strictObject({ inner: z.string() })).default([]).describe("a list"),
    undescribedSection: z.strictObject({ k: z.boolean().default(true).describe("k") }).prefault({}),
  });
  t.same(undocumentedKeys(schema), ["a.bare", "list[].inner", "undescribedSection"]);
});
