// Renders docs/configuration.md from the configuration schema's descriptions, so the page cannot drift from the code.
import { z } from "zod";

import { configSchema } from "./schema.js";

/** A node of the JSON Schema zod produces for the configuration (only the parts this page reads). */
interface Node {
  type?: string;
  description?: string;
  default?: unknown;
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  minLength?: number;
  minItems?: number;
  pattern?: string;
  format?: string;
  not?: unknown;
  properties?: Record<string, Node>;
  required?: string[];
  items?: Node;
  additionalProperties?: Node | boolean;
  propertyNames?: Node;
}

/** One documented key: its dotted path (`[]` for array items, `<name>` for map entries) and its table cells. */
export interface ConfigKeyRow {
  path: string;
  type: string;
  default: string;
  description: string | undefined;
}

/** The configuration schema as JSON Schema of its input (what a config file may hold), descriptions and defaults included. */
function jsonSchema(schema: z.ZodType = configSchema): Node {
  return z.toJSONSchema(schema, { io: "input", unrepresentable: "any" }) as Node;
}

const code = (s: string): string => "`" + s + "`";

function typeOf(n: Node): string {
  if (n.not !== undefined) return "refused (moved key)";
  if (n.enum) return "one of " + n.enum.map((v) => code(String(v))).join(", ");
  switch (n.type) {
    case "integer":
    case "number": {
      const t = n.type;
      if (n.minimum !== undefined && n.maximum !== undefined) return `${t} ${n.minimum}–${n.maximum}`;
      if (n.minimum !== undefined) return `${t} ≥ ${n.minimum}`;
      if (n.maximum !== undefined) return `${t} ≤ ${n.maximum}`;
      return t;
    }
    case "string": {
      const parts = ["string"];
      if (n.format === "email") parts.push("(email address)");
      else if (n.format === "uri") parts.push("(URL)");
      else if (n.pattern) parts.push("matching " + code(n.pattern));
      if (n.minLength !== undefined && n.minLength > 1) parts.push(`(≥ ${n.minLength} characters)`);
      else if (n.minLength === 1 && !n.pattern && !n.format) parts.push("(non-empty)");
      return parts.join(" ");
    }
    case "boolean":
      return "boolean";
    case "array": {
      const item = n.items ?? {};
      const of = item.properties ? "objects" : typeOf(item);
      return `array of ${of}` + (n.minItems ? ` (at least ${n.minItems})` : "");
    }
    case "object":
      if (n.properties) return "object";
      if (n.additionalProperties && typeof n.additionalProperties === "object") return "map: name → object";
      return "object";
    default:
      return "any";
  }
}

function defaultOf(n: Node, required: boolean): string {
  if (n.default === undefined) return required ? "required" : "none";
  const d = n.default;
  if (n.type === "object" && n.properties && typeof d === "object" && d !== null && Object.keys(d).length === 0) return "the defaults below";
  if (Array.isArray(d) && d.length > 0 && d.every((x) => typeof x === "object" && x !== null && !Array.isArray(x))) {
    return d.length === 1 ? "one entry with the defaults below" : `${d.length} entries with the defaults below`;
  }
  return code(JSON.stringify(d));
}

function walk(n: Node, path: string, required: boolean, rows: ConfigKeyRow[], top: boolean): void {
  if (!top) rows.push({ path, type: typeOf(n), default: defaultOf(n, required), description: n.description });
  if (n.properties) {
    const req = new Set(n.required ?? []);
    for (const [k, v] of Object.entries(n.properties)) walk(v, path === "" ? k : `${path}.${k}`, req.has(k), rows, false);
  } else if (n.type === "array" && n.items?.properties) {
    walk(n.items, `${path}[]`, true, rows, true);
  } else if (n.type === "object" && n.additionalProperties && typeof n.additionalProperties === "object") {
    walk(n.additionalProperties, `${path}.<name>`, true, rows, true);
  }
}

/** Every configuration key, top-level sections included, in schema order (of `schema`, the configuration's by default). */
export function configKeyRows(schema: z.ZodType = configSchema): ConfigKeyRow[] {
  const rows: ConfigKeyRow[] = [];
  walk(jsonSchema(schema), "", true, rows, true);
  return rows;
}

/** Paths of keys that carry no description in config/schema.ts (each needs a `.describe()`). */
export function undocumentedKeys(schema: z.ZodType = configSchema): string[] {
  return configKeyRows(schema)
    .filter((r) => !r.description || r.description.trim() === "")
    .map((r) => r.path);
}

const cell = (s: string): string => s.replace(/\|/g, "\\|");

const PREAMBLE = `# Configuration

<!-- Generated from config/schema.ts by \`npm run docs:config\`; do not edit by hand: change the schema's \`.describe()\` texts and run it again. test/unit/config-docs.test.ts fails when this page differs. -->

Configuration is loaded once at start (\`lib/core/config.ts\`): the schema's
defaults (\`config/schema.ts\`), then a JSON file (\`--config\` or
\`$NFX_CONFIG\`), then \`NFX_*\` environment variables. It is validated
before anything connects, then frozen. Unknown keys are refused and every
problem is reported with its path, e.g.

\`\`\`
nfx: NFX_ERR_CONFIG_INVALID: invalid configuration:
  gateways.apns.keyFile: file not found
  colour: unknown key
\`\`\`

Environment variables use \`__\` between levels and match keys
case-insensitively ignoring \`_\`: \`NFX_ROUTER__CHUNK_SIZE=500\` sets
\`router.chunkSize\`; values are parsed as JSON when they parse
(\`NFX_NATS__SERVERS='["nats://10.0.0.1:4222"]'\`). \`NFX_TEST_*\` variables
belong to the test harness (e.g. \`NFX_TEST_REDIS=cluster\`,
[testing.md](testing.md)) and are not configuration.

\`nats.secret\`, \`ws.secret\`, \`engagement.secret\` and \`ws.origins\` must be
set outside \`nfx up\` and the tests: every role refuses their published
defaults (see [operations.md](operations.md#secrets)).

In the tables, \`[]\` stands for each entry of an array and \`<name>\` for each
entry of a map; "required" means the entry must give the key; "none" means
the key is absent unless set.
`;

/** The whole text of docs/configuration.md. */
export function renderConfigDocs(): string {
  const root = jsonSchema();
  const out: string[] = [PREAMBLE];
  for (const [section, node] of Object.entries(root.properties ?? {})) {
    out.push(`## \`${section}\``, "");
    if (node.description && node.properties) out.push(node.description, "");
    const rows: ConfigKeyRow[] = [];
    // A section that is an object lists its keys; a section that is an array or a map (apiKeys, categories) gets a row of its own first.
    walk(node, section, (root.required ?? []).includes(section), rows, node.properties !== undefined);
    out.push("| key | type | default | description |", "| --- | --- | --- | --- |");
    for (const r of rows) out.push(`| ${code(r.path)} | ${cell(r.type)} | ${cell(r.default)} | ${cell(r.description ?? "")} |`);
    out.push("");
  }
  return out.join("\n");
}
