// A decided chunk's outputs (lib/shard/chunk-outputs.ts): subjects, deterministic message ids, batch cutting and bodies, without servers.
import t from "tap";

import type { FanChunk, NotificationBrief, ReceiptBatch, Send, SendBatch } from "../../lib/core/types.js";
import { type ChunkDecision, decideChunk } from "../../lib/shard/chunk-decision.js";
import { chunkOutputs, fanIdOf } from "../../lib/shard/chunk-outputs.js";
import { DedupWindow } from "../../lib/shard/dedup-window.js";
import type { PolicyConfig } from "../../lib/shard/policy.js";
import { RateBuckets } from "../../lib/shard/rate-buckets.js";
import { Trail, TrailBook } from "../../lib/shard/trails.js";

const brief: NotificationBrief = { id: "n_1", createdAt: 0, expiresAt: 10_000, priority: "high", category: "c", channels: ["push"], content: { push: { title: "T", body: "B" } } };
const chunk: FanChunk = { type: "fan_chunk", shard: 3, chunk: 7, notification: brief, users: ["a", "b", "c", "d"] };
const ctx = { decidedAt: 1234, stampedAt: 1200, owner: "host-1-abc", epoch: 42, sendBatchSize: 2 };
const send = (user: string, device: string): Send => ({ nid: "n_1", user, device, token: `t-${device}` });

function decision(over: Partial<ChunkDecision> = {}): ChunkDecision {
  return {
    sends: { apns: [], fcm: [], email: [], sms: [], inapp: [], webhook: [] },
    receipts: [], decided: 0, queued: 0, deferred: new Map(), deferredCount: 0, trails: null,
    ...over,
  };
}

t.test("trail book: each distinct trail once, found line by line; a reused trail keeps no old lines", async (t) => {
  const book = new TrailBook();
  const tr = new Trail();
  const write = (...lines: string[]): void => {
    tr.clear();
    // Each line a new string object, as lines built per recipient are.
    for (const l of lines) tr.add(`${l}|${String(1)}\n`);
    book.add(tr);
  };
  write("a", "b", "c");
  write("a", "b");
  write("a", "b", "c");
  write("x");
  write("a", "b");
  write();
  t.same(book.trails, ["a|1\nb|1\nc|1\n", "a|1\nb|1\n", "x|1\n", ""], "texts as written, each once");
  t.same(book.idx, [0, 1, 0, 2, 1, 3], "each user points at their trail");
});

t.test("fan id: the chunk's own, or the release's after quiet hours", async (t) => {
  t.equal(fanIdOf(chunk), "fan:n_1:3:7");
  t.equal(fanIdOf({ ...chunk, release: 5000 }), "rel:n_1:3:7:5000");
});

t.test("every output, in order, with its subject and message id", async (t) => {
  const trails = new TrailBook();
  const tr = new Trail();
  for (const u of chunk.users) {
    tr.clear();
    tr.add(u === "d" ? "quiet" : "sent");
    trails.add(tr);
  }
  const dec = decision({
    sends: { apns: [send("a", "i1"), send("a", "i2"), send("b", "i3")], fcm: [send("c", "f1")], email: [], sms: [], inapp: [], webhook: [] },
    receipts: [{ user: "a", outcome: "queued", channel: "apns", device: "i1", at: 1234 }],
    decided: 4,
    deferred: new Map([[9000, ["d"]]]),
    trails,
  });
  const out = chunkOutputs(chunk, dec, ctx);
  t.same(out.map((o) => [o.subject, o.msgId]), [
    ["nfx.send.apns.high", "snd:fan:n_1:3:7:apns:0"],
    ["nfx.send.apns.high", "snd:fan:n_1:3:7:apns:1"],
    ["nfx.send.fcm.high", "snd:fan:n_1:3:7:fcm:0"],
    ["nfx.defer.high.3", "dfr:fan:n_1:3:7:9000"],
    ["nfx.rcpt.n_1", "dec:fan:n_1:3:7"],
    ["nfx.trail.n_1.3", "trl:fan:n_1:3:7"],
  ]);
  const [b0, b1] = out.map((o) => o.body) as SendBatch[];
  t.same(b0, {
    type: "send_batch", channel: "apns", shard: 3, notifications: { n_1: brief }, sends: [send("a", "i1"), send("a", "i2")],
    decidedAt: 1200, owner: "host-1-abc", epoch: 42,
  }, "a send batch carries the decision's wall-clock time (what re-checks compare change stamps with), owner and epoch");
  t.same(b1.sends, [send("b", "i3")], "sends are cut into batches of sendBatchSize");
  t.same(out[3].body, { type: "deferred_chunk", until: 9000, chunk: { type: "fan_chunk", shard: 3, chunk: 7, notification: brief, users: ["d"] } });
  t.same(out[4].body, { type: "receipts", nid: "n_1", stage: "shard", entries: dec.receipts, decided: 4, waves: { 9000: 1 } }, "no zero counters on the wire; the deferred user counted in its wave");
  t.same(out[5].body, { type: "trails", nid: "n_1", shard: 3, fan: "fan:n_1:3:7", at: 1234, users: chunk.users, idx: [0, 0, 0, 1], trails: ["sent", "quiet"] });
  t.same(chunkOutputs(chunk, dec, ctx), out, "pure: the same inputs give the same outputs (a retried publish republishes the same ids)");
});

t.test("receipts: counted only when there is something to count; campaign counters and releases", async (t) => {
  t.same(chunkOutputs(chunk, decision(), ctx), [], "nothing decided, nothing published");
  const campaign = chunkOutputs(chunk, decision({ decided: 4, queued: 3, deferredCount: 1 }), ctx);
  t.same(campaign.map((o) => o.body), [{ type: "receipts", nid: "n_1", stage: "shard", entries: [], decided: 4, queued: 3, deferred: 1 }]);
  const released = chunkOutputs({ ...chunk, release: 5000 }, decision(), ctx);
  t.same(released.map((o) => [o.msgId, o.body]), [["dec:rel:n_1:3:7:5000", { type: "receipts", nid: "n_1", stage: "shard", entries: [], decided: 0, released: 4, releasedAt: 5000 }]], "a released chunk counts its users as released, in its wave");
});

t.test("from a real decision: one send per device, one receipt batch, trails", async (t) => {
  const users = [
    null,
    { id: "b", devices: [{ id: "i", platform: "ios" as const, token: "ti" }, { id: "x", platform: "android" as const, token: "ta" }] },
    { id: "c", devices: [] },
    { id: "d", devices: [{ id: "j", platform: "ios" as const, token: "tj" }] },
  ];
  const policy: PolicyConfig = { categories: {}, defaultQuietHours: null, fallback: { critical: [], high: [], normal: [], bulk: [] }, available: new Set(["push"]) };
  const dec = decideChunk(chunk, { users, online: null, now: 5000, cancelled: false, policy, state: { buckets: new RateBuckets(), dedup: new DedupWindow(60_000, () => 5000) }, trails: true });
  const out = chunkOutputs(chunk, dec, { ...ctx, sendBatchSize: 500 });
  t.same(out.map((o) => o.msgId), ["snd:fan:n_1:3:7:apns:0", "snd:fan:n_1:3:7:fcm:0", "dec:fan:n_1:3:7", "trl:fan:n_1:3:7"]);
  t.same((out[0].body as SendBatch).sends.map((s) => `${s.user}/${s.device}`), ["b/i", "d/j"]);
  t.equal((out[2].body as ReceiptBatch).decided, 4);
});
