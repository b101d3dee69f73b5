// `npm run docs:config`: writes docs/configuration.md from the configuration schema (config/docs.ts).
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { renderConfigDocs, undocumentedKeys } from "../config/docs.js";

/** docs/configuration.md of this repository (this file runs as dist/cmd/gen-config-docs.js). */
export const CONFIG_DOCS_PATH = fileURLToPath(new URL("../../docs/configuration.md", import.meta.url));

const missing = undocumentedKeys();
if (missing.length > 0) {
  console.error(`gen-config-docs: keys without a description in config/schema.ts (add .describe()):\n  ${missing.join("\n  ")}`);
  process.exit(1);
}
writeFileSync(CONFIG_DOCS_PATH, renderConfigDocs());
console.log(`gen-config-docs: wrote ${CONFIG_DOCS_PATH}`);
