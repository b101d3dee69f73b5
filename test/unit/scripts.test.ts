// The Redis script registry: every script a headed file in lib/infra/scripts/, every one defined on a client, no Lua anywhere else.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

import { Redis } from "ioredis";
import t from "tap";

import { INBOX_STATE_BITS } from "../../lib/inapp/inbox.js";
import { type ScriptCommands, scriptFiles, scriptOptions, withScripts } from "../../lib/infra/scripts.js";
import { REPO_ROOT, sourcesUnder } from "../helpers/sources.js";

const ROOT = REPO_ROOT;
const DIR = join(ROOT, "lib/infra/scripts");

/** The commands the registry's type promises; the files must give exactly these (the Buffer variant stands for its command). */
const TYPED: Record<keyof ScriptCommands, true> = {
  nfxClaimDeliveryFields: true, nfxSetDeliveryFields: true, nfxClaimCollapseKeys: true, nfxReleaseCollapseKeys: true,
  nfxInboxAdd: true, nfxInboxSettle: true, nfxInboxMark: true, nfxInboxList: true, nfxInboxBroadcasts: true, nfxInboxMarkBroadcasts: true, nfxBroadcastStore: true,
  nfxExistsAll: true, nfxPresenceSet: true, nfxUserLogAppend: true, nfxMarkFirst: true,
  nfxScanActive: true, nfxUpdatePreferencesBuffer: true, nfxRemoveDevice: true,
  nfxEndpointEnqueue: true, nfxEndpointNext: true, nfxEndpointFail: true, nfxEndpointLease: true, nfxEndpointIdle: true, nfxEndpointDirect: true, nfxEndpointDirectDone: true,
  nfxReceiptOutboxAdd: true, nfxReceiptOutboxTake: true,
};

t.test("every script file is <name>-<keys>.lua with a header naming KEYS, ARGV and what it returns", async (t) => {
  const files = readdirSync(DIR).filter((f) => f.endsWith(".lua"));
  t.ok(files.length >= 12, `the scripts were found (${files.length})`);
  for (const f of files) {
    const m = /^[a-z][A-Za-z0-9]*-([0-9]+|n)\.lua$/.exec(f);
    t.ok(m, `${f}: named <name>-<numberOfKeys>.lua`);
    const src = readFileSync(join(DIR, f), "utf8");
    t.ok(src.startsWith("--[["), `${f}: opens with a --[[ ]] header`);
    const end = src.indexOf("]]");
    const header = src.slice(0, end);
    const body = src.slice(end + 2);
    t.ok(end > 0, `${f}: the header is closed`);
    t.match(header, /KEYS\[1(\.\.n)?\]/, `${f}: names its KEYS`);
    t.match(header, /ARGV/, `${f}: names its ARGV`);
    t.match(header, /Returns:\n\s+\S/, `${f}: says what it returns`);
    if (m && m[1] !== "n") {
      const n = Number(m[1]);
      t.match(header, new RegExp(`KEYS\\[${n}\\]`), `${f}: its header names KEYS[${n}]`);
      const used = [...body.matchAll(/KEYS\[(\d+)\]/g)].map((x) => Number(x[1]));
      t.ok(used.length > 0 && Math.max(...used) === n, `${f}: the script uses KEYS[1..${n}] and no more`);
    } else if (m) {
      t.match(header, /KEYS\[1\.\.n\]/, `${f}: a variable key count is named KEYS[1..n]`);
    }
  }
});

t.test("the loader defines every script on a client, once", async (t) => {
  const r = new Redis({ lazyConnect: true });
  t.teardown(() => r.disconnect());
  const typed = withScripts(r);
  const files = scriptFiles();
  t.equal(files.length, readdirSync(DIR).filter((f) => f.endsWith(".lua")).length, "every file is loaded");
  const defined = (r as unknown as { scriptsSet: Record<string, unknown> }).scriptsSet;
  for (const s of files) {
    t.type((typed as unknown as Record<string, unknown>)[s.command], "function", `${s.file} is the command ${s.command}`);
    t.type((typed as unknown as Record<string, unknown>)[`${s.command}Buffer`], "function", `${s.command}Buffer too`);
    t.ok(s.lua.includes("return"), `${s.file}: its source was read`);
  }
  t.same(Object.keys(defined).sort(), files.map((s) => s.command).sort(), "nothing else is defined");
  t.same(Object.keys(TYPED).map((c) => c.replace(/Buffer$/, "")).sort(), files.map((s) => s.command).sort(), "the files are exactly the typed commands");
  const before = { ...defined };
  t.equal(withScripts(r), typed, "a second call returns the same client");
  for (const k of Object.keys(before)) t.equal(defined[k], before[k], `${k} is not redefined`);
  t.equal(scriptFiles(), files, "the files are read once");
  const pipe = r.pipeline() as unknown as Record<string, unknown>;
  t.type(pipe.nfxUserLogAppend, "function", "pipelines get the commands too");
});

t.test("a client made with scriptOptions has every script, and so do its duplicates", async (t) => {
  const r = new Redis({ lazyConnect: true, scripts: scriptOptions() });
  const d = r.duplicate();
  t.teardown(() => {
    r.disconnect();
    d.disconnect();
  });
  const names = scriptFiles().map((s) => s.command).sort();
  for (const c of [r, d]) {
    const set = (c as unknown as { scriptsSet: Record<string, unknown> }).scriptsSet;
    t.same(Object.keys(set).sort(), names, "every script is defined at construction");
    const before = { ...set };
    withScripts(c);
    for (const k of names) t.equal(set[k], before[k], `withScripts leaves ${k} as it was`);
  }
  const two = scriptFiles().find((s) => s.numberOfKeys === 2)!;
  t.equal(scriptOptions()[two.command].numberOfKeys, 2, "a fixed key count comes from the file name");
  const n = scriptFiles().find((s) => s.numberOfKeys === null)!;
  t.equal(scriptOptions()[n.command].numberOfKeys, undefined, "-n: the caller gives the key count");
});

t.test("the inbox scripts spell the inbox's state bits as lib/inapp/inbox.ts defines them", async (t) => {
  const inbox = scriptFiles().filter((s) => s.file.startsWith("inbox"));
  t.equal(inbox.length, 6);
  for (const s of inbox) {
    const named = [...s.lua.slice(0, s.lua.indexOf("]]")).matchAll(/\b(SEEN|READ|ARCHIVED|ACKED|FALLBACK) (\d+)/g)];
    t.ok(named.length > 0, `${s.file} names the bits it uses`);
    for (const [, name, value] of named) t.equal(Number(value), INBOX_STATE_BITS[name as keyof typeof INBOX_STATE_BITS], `${s.file}: ${name}`);
  }
});


t.test("no inline Lua and no eval in lib/ or actors/", async (t) => {
  const files = ["lib", "actors"].flatMap(sourcesUnder);
  t.ok(files.length > 50, `the sources were read (${files.length})`);
  const found: string[] = [];
  for (const f of files) {
    const src = readFileSync(join(ROOT, f), "utf8");
    for (const [what, re] of [
      ["inline Lua", /redis\.call\(|redis\.pcall\(/],
      ["eval", /\.eval(sha|Buffer|shaBuffer|_ro)?\(/i],
      ["a script defined outside lib/infra/scripts.ts", /\.defineCommand\(/],
    ] as const) {
      if (re.test(src) && !(what.startsWith("a script") && f === "lib/infra/scripts.ts")) found.push(`${f}: ${what}`);
    }
  }
  t.same(found, [], "every script is a file in lib/infra/scripts/, run through its command");
});
