// Shard hash, error registry, codec (send batches as columns), ids, subjects, log redaction, and the harness's free ports and signal handling.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";

import { Packr } from "msgpackr";
import t from "tap";

import { decode, encode } from "../../lib/core/codec.js";
import { ERROR_CLASSES, NfxError, ProviderError, RequestInvalid, toErrorReply } from "../../lib/core/errors.js";
import { deliveryKey, newNotificationId } from "../../lib/core/ids.js";
import { createLogger } from "../../lib/core/log.js";
import { REST } from "../../lib/core/send-columns.js";
import { shardOf } from "../../lib/core/shard-hash.js";
import { API, API_OPS, CHANNELS, extApiAll, extApiSubject, fanLane, fanSubject, ID_PATTERN, intakeLane, intakeSubject, PRIORITIES, sendAll, sendSubject, sendSubjectOf, webhookSendSubject } from "../../lib/core/subjects.js";
import type { Send, SendBatch } from "../../lib/core/types.js";
import { freePorts } from "../../lib/infra/launch.js";
import { eventually } from "../helpers/cluster.js";
import { subjectMatches } from "../helpers/subjects.js";

/** Reference FNV-1a over the UTF-8 bytes, written the obvious way. */
const fnv = (s: string): number => {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(s, "utf8")) h = Math.imul(h ^ b, 0x01000193);
  return h >>> 0;
};

t.test("shard hash: FNV-1a of the UTF-8 bytes mod P, stable and even", async (t) => {
  t.equal(fnv("a"), 0xe40c292c, "reference implementation matches the published FNV-1a vector");
  for (const id of ["a", "user-1", "ünïcødé", "日本語ユーザー", "emoji-😀-x", ""]) t.equal(shardOf(id, 1 << 30), fnv(id) % (1 << 30), `matches reference for ${JSON.stringify(id)}`);
  const counts = new Array<number>(64).fill(0);
  for (let i = 0; i < 64_000; i++) counts[shardOf(`user-${i}`, 64)]++;
  t.ok(Math.min(...counts) > 800 && Math.max(...counts) < 1200, `64 shards within ±20% of 1000 (min ${Math.min(...counts)}, max ${Math.max(...counts)})`);
});

t.test("error registry: unique stable codes, replies never leak internals", async (t) => {
  const codes = ERROR_CLASSES.map((C) => new (C as unknown as new (m: string, o: unknown) => NfxError)("m", { reason: "r", retryable: false }).code);
  t.equal(new Set(codes).size, codes.length, "no code is used twice");
  for (const c of codes) t.match(c, /^NFX_ERR_[A-Z_]+$/);
  t.same(toErrorReply(new RequestInvalid("push.title: must not be empty", { field: "push.title" })), { code: "NFX_ERR_REQUEST_INVALID", message: "push.title: must not be empty", field: "push.title" });
  t.same(toErrorReply(new Error("secret detail")), { code: "NFX_ERR_INTERNAL", message: "internal error" });
  const p = new ProviderError("x", { reason: "Unregistered", retryable: false, tokenInvalid: true });
  t.equal(p.tokenInvalid, true);
  t.equal(p.retryable, false);
});

t.test("codec round-trips batches", async (t) => {
  const v = { type: "send_batch", sends: [{ nid: "n_1", user: "ü", token: "abc", n: 2 ** 40 }], data: { k: "v" } };
  t.same(decode(encode(v)), v);
});

t.test("codec: a send batch goes as columns and comes back the same", async (t) => {
  const head = { type: "send_batch" as const, channel: "apns" as const, shard: 7, notifications: {}, decidedAt: 1_700_000_000_000, owner: "o", epoch: 3 };
  const tok = (i: number): string => i.toString(16).padStart(64, "0");
  const campaign: SendBatch = { ...head, sends: Array.from({ length: 500 }, (_, i) => ({ nid: "n_a", user: `u${i}`, device: `d${i % 3}`, token: tok(i), app: "com.example", shedAfter: 1_700_000_060_000 })) };
  const wire = (b: SendBatch): Record<string, unknown> => new Packr({ useRecords: true, mapsAsObjects: true }).unpack(encode(b)) as Record<string, unknown>;
  const w = wire(campaign);
  t.equal(w.sends, undefined, "no per-send records on the wire");
  t.same(w.c, { nid: ["n_a"], user: campaign.sends.map((s) => s.user).join("\u001f"), device: campaign.sends.map((s) => s.device).join("\u001f"), token: campaign.sends.map((s) => s.token).join("\u001f"), app: ["com.example"] }, "one column per field, a shared value once");
  t.same(w.u, { shedAfter: 1_700_000_060_000 }, "a deadline every send shares goes once");
  t.ok(encode(campaign).length < encode({ ...campaign, type: "other" }).length * 0.8, "smaller than the records");
  t.same(decode(encode(campaign)), campaign, "the campaign batch round-trips");

  // Mixed notifications, apps on some sends, per-send content, retries and fallbacks.
  const mixed: SendBatch = {
    ...head, channel: "inapp", replayOf: "timeout",
    sends: [
      { nid: "n_a", user: "u1", device: "d1", token: "t1", app: "a1", attempt: 2, waits: 1 },
      { nid: "n_b", user: "ü-ß", device: "d2", token: "t2", push: { title: "Hi 😀", body: "b" } },
      { nid: "n_a", user: "u3", device: "web", token: "", fallback: [{ channel: "apns", device: "d9", token: "tk", app: "a2" }], inapp: { title: "x" } as never, attempt: 1 },
    ],
  };
  t.ok(wire(mixed).x, "fields that differ go per send");
  t.same(decode(encode(mixed)), mixed, "the mixed batch round-trips");

  // Each of the other fields, alone on one send of two, is kept.
  const sample: Required<Pick<Send, (typeof REST)[number]>> = {
    push: { title: "p", body: "b" }, email: { subject: "s", text: "t" }, sms: { text: "s" }, inapp: { title: "i" } as never,
    fallback: [{ channel: "sms", device: "d", token: "+1" }], attempt: 1, waits: 2, shedAfter: 5,
  };
  for (const f of REST) {
    const b: SendBatch = { ...head, sends: [{ nid: "n", user: "a", device: "d", token: "t" }, { nid: "n", user: "b", device: "d", token: "t", [f]: sample[f] }] };
    t.same(decode(encode(b)), b, `${f} on one send round-trips`);
  }

  // What cannot be a column goes as it is, and still round-trips.
  for (const [why, sends] of [
    ["a separator inside a value", [{ nid: "n", user: "a\u001fb", device: "d", token: "t" }, { nid: "n", user: "c", device: "d", token: "t" }]],
    ["a token that is not a string", [{ nid: "n", user: "a", device: "d", token: undefined as unknown as string }]],
    ["an empty app", [{ nid: "n", user: "a", device: "d", token: "t", app: "" }, { nid: "n", user: "b", device: "d", token: "t", app: "x" }]],
    ["no sends", []],
  ] as [string, Send[]][]) {
    const b: SendBatch = { ...head, sends };
    t.ok(Array.isArray(wire(b).sends), `${why}: sent as records`);
    t.same(decode(encode(b)), b, `${why}: round-trips`);
  }

  // A damaged message is refused, not half read.
  const bad = new Packr({ useRecords: true, mapsAsObjects: true }).pack({ ...w, n: 501 });
  t.throws(() => decode<SendBatch>(bad), /column holds 500 values for 501 sends/);
});

t.test("ids: time-ordered, subject-safe; delivery key is deterministic", async (t) => {
  const a = newNotificationId(1_000_000);
  const b = newNotificationId(2_000_000);
  t.ok(a < b, "later ids sort after earlier ones");
  t.match(a, ID_PATTERN);
  t.equal(deliveryKey("n", "u", "apns", "d"), deliveryKey("n", "u", "apns", "d"));
  t.not(deliveryKey("n", "u", "apns", "d1"), deliveryKey("n", "u", "apns", "d2"));
});

t.test("every subject a builder makes is matched by its family's wildcard", async (t) => {
  const matches = subjectMatches;
  for (const p of PRIORITIES) {
    t.ok(matches(intakeLane(p), intakeSubject(p, "n_abc")));
    t.ok(matches(fanLane(p), fanSubject(p, 63)));
    for (const other of PRIORITIES) if (other !== p) t.notOk(matches(fanLane(p), fanSubject(other, 1)), `lane ${p} never takes ${other}`);
    for (const c of CHANNELS) t.ok(matches(sendAll(c), sendSubjectOf(c, p, "ep_1", 4)), `${c} at ${p}: its family's wildcard takes a send's subject`);
    for (const c of CHANNELS.filter((c) => c !== "webhook")) t.equal(sendSubjectOf(c, p, "u1", 4), sendSubject(c, p), `${c}: one lane a priority`);
    t.equal(sendSubjectOf("webhook", p, "ep_1", 4), webhookSendSubject(p, shardOf("ep_1", 4)), "a webhook delivery: its endpoint's partition lane");
  }
  for (const op of API_OPS) {
    t.ok(matches(extApiAll, extApiSubject(op)), `${op}: the external family's wildcard takes it`);
    t.notOk(matches(API.all, extApiSubject(op)), `${op}: an external request never reaches the trusted nfx.api.> family`);
    t.notOk(matches(extApiAll, API[op]), `${op}: a trusted request is not taken for an external one`);
  }
});

t.test("logs redact tokens, emails, phones and bodies by default", async (t) => {
  let out = "";
  const sink = new Writable({ write: (c: Buffer, _e, cb) => ((out += c.toString()), cb()) });
  const log = createLogger({ level: "info", redact: true }, sink);
  log.info({ token: "tok-secret", user: { email: "a@b.c", phone: "+15551234" }, req: { push: { title: "T", body: "secret body" } }, sends: [{ token: "tok2" }] }, "x");
  for (const secret of ["tok-secret", "a@b.c", "+15551234", "secret body", "tok2"]) t.notMatch(out, secret, `${secret} is not in the log`);
  t.match(out, "[redacted]");
  let plain = "";
  createLogger({ level: "info", redact: false }, new Writable({ write: (c: Buffer, _e, cb) => ((plain += c.toString()), cb()) })).info({ token: "visible" }, "x");
  t.match(plain, "visible", "redaction can be turned off");
});

t.test("uWebSockets.js loads its native binary here (start-up refuses the JavaScript fallback)", async (t) => {
  const { requireNativeUws } = await import("../../lib/infra/uws.js");
  t.ok(String(requireNativeUws().App).includes("[native code]"));
});

t.test("free ports: distinct, bindable, and below the range the OS gives outgoing connections", async (t) => {
  const low = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]);
  const ports = await freePorts(40);
  t.equal(new Set(ports).size, 40, "40 distinct ports");
  t.ok(ports.every((p) => p >= 10_000 && p < Math.min(low, 30_000)), `all below the ephemeral floor ${low}`);
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(ports[0], "127.0.0.1", r));
  t.equal((srv.address() as { port: number }).port, ports[0], "a chosen port can be bound at once");
  await new Promise<void>((r) => srv.close(() => r()));
});

t.test("a signal with another handler that leaves the exit to others: the process still ends, its servers with it", async (t) => {
  // A child that starts a long-lived process through the harness, shortens the grace, and adds a SIGTERM handler that
  // does nothing (as signal-exit does when it is not alone, in a test runner's child); a timer keeps it alive.
  const dir = mkdtempSync(join(tmpdir(), "nfx-signal-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const script = join(dir, "child.mjs");
  writeFileSync(script, [
    `import { spawn } from "node:child_process";`,
    `import { setSignalGraceMs, track } from ${JSON.stringify(new URL("../../lib/infra/launch.js", import.meta.url).href)};`,
    `setSignalGraceMs(300);`,
    `const p = spawn("sleep", ["600"], { stdio: "ignore" });`,
    `track(p);`,
    `process.on("SIGTERM", () => {});`,
    `setInterval(() => {}, 1000);`,
    `console.log(p.pid);`,
  ].join("\n"));
  const child = spawn(process.execPath, [script], { stdio: ["ignore", "pipe", "inherit"] });
  t.teardown(() => child.kill("SIGKILL"));
  const grandchild = Number(await new Promise<string>((r) => child.stdout.once("data", (b: Buffer) => r(b.toString().trim()))));
  const alive = (pid: number): boolean => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  t.teardown(() => {
    if (alive(grandchild)) process.kill(grandchild, "SIGKILL");
  });
  t.ok(alive(grandchild), "the started process runs");
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  child.kill("SIGTERM");
  // A deadline for the wait only, far above the 300 ms grace: without the fallback the child never exits.
  const code = await Promise.race([exited, new Promise<"still running">((r) => setTimeout(() => r("still running"), 20_000).unref())]);
  t.equal(code, 143, "the child ended after the grace, as SIGTERM's 128 + 15");
  t.ok(await eventually(() => !alive(grandchild), 5000), "and the process it started is gone");
});
