// The layout's import direction: core ← infra ← flow ← domain folders ← actors ← cmd, domain folders in one order, no actor importing another.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, normalize } from "node:path";

import t from "tap";

import { REPO_ROOT, sourcesUnder } from "../helpers/sources.js";

const ROOT = REPO_ROOT;

/** Layers, lowest first; a file may import its own layer and the ones below. */
const LAYERS: [string, number][] = [
  ["config", 0], ["lib/core", 0], ["lib/infra", 1], ["lib/flow", 2],
  // Domain folders, in the only order they may import one another (a folder imports only folders before it).
  ["lib/directory", 3], ["lib/campaign", 3], ["lib/inapp", 3], ["lib/tracking", 3], ["lib/consent", 3], ["lib/intake", 3], ["lib/shard", 3], ["lib/gateway", 3],
  ["actors", 4], ["cmd", 5],
];
const DOMAIN_ORDER = LAYERS.filter(([, l]) => l === 3).map(([f]) => f);

function place(file: string): { folder: string; layer: number } | null {
  for (const [folder, layer] of LAYERS) if (file.startsWith(`${folder}/`)) return { folder, layer };
  return null;
}


/** Every relative import of the sources under lib/, actors/, cmd/ and config/: [from, to] repository paths. */
function imports(): [string, string][] {
  const edges: [string, string][] = [];
  const spec = /(?:from|import)\s*\(?\s*["'](\.{1,2}\/[^"']+)\.js["']/g;
  for (const f of ["lib", "actors", "cmd", "config"].flatMap(sourcesUnder)) {
    for (const m of readFileSync(join(ROOT, f), "utf8").matchAll(spec)) edges.push([f, normalize(join(dirname(f), m[1])) + ".ts"]);
  }
  return edges;
}

t.test("lib/ has only concern folders", async (t) => {
  const loose = readdirSync(join(ROOT, "lib")).filter((n) => n.endsWith(".ts"));
  t.same(loose, [], "no module directly in lib/");
  for (const [folder] of LAYERS.filter(([f]) => f.startsWith("lib/"))) {
    t.ok(statSync(join(ROOT, folder, "README.md")).isFile(), `${folder} says what it owns in README.md`);
  }
});

t.test("imports run one way", async (t) => {
  const edges = imports();
  t.ok(edges.length > 300, `the graph was read (${edges.length} imports)`);
  const wrong: string[] = [];
  for (const [from, to] of edges) {
    const a = place(from);
    const b = place(to);
    if (!a) continue;
    // cmd may use the sandboxes (`nfx sandbox`, `nfx up`); nothing else reaches outside these folders.
    if (!b) {
      if (!(a.folder === "cmd" && to.startsWith("sandbox/"))) wrong.push(`${from} → ${to} (outside the layout)`);
      continue;
    }
    if (b.layer > a.layer) wrong.push(`${from} → ${to} (${a.folder} may not import ${b.folder})`);
    if (a.layer === 3 && b.layer === 3 && a.folder !== b.folder && DOMAIN_ORDER.indexOf(b.folder) > DOMAIN_ORDER.indexOf(a.folder)) {
      wrong.push(`${from} → ${to} (domain ${a.folder} may import only folders before it: ${DOMAIN_ORDER.join(", ")})`);
    }
    if (a.folder === "actors" && b.folder === "actors") wrong.push(`${from} → ${to} (an actor imports only lib/, never another actor)`);
  }
  t.same(wrong, [], "no import runs back");
});
