// The error registry, as fastify tests its own: every error class listed, codes unique, every code documented in docs/errors.md and every documented code real.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import t from "tap";

import * as errors from "../../lib/core/errors.js";
import { ERROR_CLASSES, INTERNAL_ERROR_CODE, NfxError, ProviderError } from "../../lib/core/errors.js";

const DOCS = fileURLToPath(new URL("../../../docs/errors.md", import.meta.url));

type AnyErrorClass = new (m: string, o: unknown) => NfxError;
/** An instance of an error class (ProviderError needs its provider fields). */
const sample = (C: unknown): NfxError => new (C as AnyErrorClass)("m", { reason: "r", retryable: false });

/** Every class lib/core/errors.ts exports that extends NfxError (the abstract base excluded). */
const exported = Object.entries(errors).filter(([, v]) => typeof v === "function" && v.prototype instanceof NfxError) as [string, unknown][];

/** docs/errors.md's table: code → {status, retryable}. */
function documented(): Map<string, { status: number; retryable: string; line: string }> {
  const rows = new Map<string, { status: number; retryable: string; line: string }>();
  for (const line of readFileSync(DOCS, "utf8").split("\n")) {
    const m = /^\|\s*`(NFX_ERR_[A-Z_]+)`\s*\|\s*(\d{3})\s*\|(.*)\|\s*([^|]+?)\s*\|\s*$/.exec(line);
    if (!m) continue;
    if (rows.has(m[1])) throw new Error(`docs/errors.md lists ${m[1]} twice`);
    rows.set(m[1], { status: Number(m[2]), retryable: m[4], line });
  }
  return rows;
}

t.test("every exported error class is in ERROR_CLASSES", async (t) => {
  t.ok(exported.length >= 20, `${exported.length} error classes exported`);
  const listed = new Set<unknown>(ERROR_CLASSES);
  for (const [name, C] of exported) t.ok(listed.has(C), `${name} is listed in ERROR_CLASSES (lib/core/errors.ts)`);
  t.equal(listed.size, ERROR_CLASSES.length, "no class is listed twice");
});

t.test("codes are unique and well formed", async (t) => {
  const seen = new Map<string, string>();
  for (const C of ERROR_CLASSES) {
    const e = sample(C);
    t.match(e.code, /^NFX_ERR_[A-Z_]+$/, `${C.name}: code ${e.code}`);
    t.notOk(seen.has(e.code), `${e.code} is used by ${C.name}${seen.has(e.code) ? ` and ${seen.get(e.code)}` : " only"}`);
    seen.set(e.code, C.name);
    t.ok(e.status >= 400 && e.status < 600, `${C.name}: HTTP status ${e.status}`);
  }
  t.notOk(seen.has(INTERNAL_ERROR_CODE), "the internal code belongs to no class");
});

t.test("every code is documented in docs/errors.md with its status and retryability", async (t) => {
  const docs = documented();
  for (const C of ERROR_CLASSES) {
    const e = sample(C);
    const row = docs.get(e.code);
    if (!row) {
      t.fail(`${e.code} (${C.name}) is not in docs/errors.md: add a row | code | HTTP status | meaning | retryable |`);
      continue;
    }
    t.equal(row.status, e.status, `${e.code}: docs/errors.md says HTTP ${row.status}, lib/core/errors.ts ${e.status}`);
    if (C === ProviderError) t.match(row.retryable, /^per provider answer/, `${e.code}: retryability depends on the answer`);
    else t.equal(row.retryable, e.retryable ? "yes" : "no", `${e.code}: retryable ${e.retryable}`);
  }
  const internal = docs.get(INTERNAL_ERROR_CODE);
  t.ok(internal, `${INTERNAL_ERROR_CODE} is documented`);
  t.equal(internal?.status, 500);
  t.same(errors.toErrorReply(new Error("detail")).code, INTERNAL_ERROR_CODE);
});

t.test("every documented code exists", async (t) => {
  const codes = new Set<string>([...ERROR_CLASSES.map((C) => sample(C).code), INTERNAL_ERROR_CODE]);
  const docs = documented();
  t.ok(docs.size > 0, "docs/errors.md has a code table");
  for (const [code, row] of docs) t.ok(codes.has(code), `${code}, documented in docs/errors.md, is defined in lib/core/errors.ts${codes.has(code) ? "" : ` (it is not: remove or fix the row ${row.line.slice(0, 60)}…)`}`);
  t.equal(docs.size, codes.size, "as many documented codes as codes");
});
