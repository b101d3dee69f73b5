// Counters and status lines fold receipts once (an outcome repeated by another copy of a send, `echo`, is not counted again; a receipt batch by its fences and its original id), and a provider's report folds the same whether it reaches the stream before or after the gateway's "sent".
import t from "tap";

import { advance, emptyCounters, emptyTotals, fold, FoldedIds, foldTotal, notFolded } from "../../lib/campaign/counters.js";
import type { ReceiptBatch, ReceiptEntry } from "../../lib/core/types.js";
import { foldLines } from "../../lib/tracking/status.js";

t.test("echoed outcomes are not counted", async (t) => {
  const c = emptyCounters();
  const sent = { user: "u", outcome: "sent" as const, channel: "fcm" as const, device: "d", providerId: "p1", at: 1 };
  fold(c, { type: "receipts", nid: "n_1", stage: "gateway", entries: [sent] });
  fold(c, { type: "receipts", nid: "n_1", stage: "gateway", entries: [{ ...sent, echo: true }] });
  t.equal(c.sent, 1, "the recording batch's receipt counts, the echo does not");
  fold(c, { type: "receipts", nid: "n_1", stage: "gateway", entries: [{ ...sent, user: "v", outcome: "failed", reason: "Unregistered", echo: true }] });
  t.same(c.failed, {}, "an echoed failure is not counted either");
});

t.test("a provider's report that reaches the stream before the gateway's sent: same lines and counters as in order", async (t) => {
  const sent = (user: string): ReceiptEntry => ({ user, outcome: "sent", channel: "sms", device: "sms", providerId: `SM${user}`, at: 1 });
  const delivered: ReceiptEntry = { user: "cy", outcome: "delivered", channel: "sms", device: "sms", providerId: "SMcy", at: 2 };
  const undelivered: ReceiptEntry = { user: "dee", outcome: "failed", late: true, reason: "undelivered:30003", channel: "sms", device: "sms", providerId: "SMdee", at: 2 };
  const inOrder = [sent("cy"), sent("dee"), delivered, undelivered];
  const overtaken = [delivered, undelivered, sent("cy"), sent("dee")];
  for (const [name, entries] of [["in order", inOrder], ["reports first", overtaken]] as const) {
    const { byKey } = foldLines(entries);
    t.same([...byKey.values()].map((l) => [l.user, l.outcome, l.reason]), [["cy", "delivered", undefined], ["dee", "failed", "undelivered:30003"]], `${name}: cy's line delivered, dee's failed`);
    const c = emptyCounters();
    for (const e of entries) fold(c, { type: "receipts", nid: "n_1", stage: e.outcome === "sent" ? "gateway" : "provider", entries: [e] });
    t.match(c, { sent: 1, delivered: 1, failed: { "undelivered:30003": 1 } }, `${name}: counters sent 1, delivered 1, failed 1`);
    const totals = emptyTotals();
    for (const e of entries) foldTotal(totals, e);
    t.match(totals.channels.sms, { sent: 1, delivered: 1, failed: 1 }, `${name}: the channel totals too`);
  }
  // A provider's reports keep their order among themselves: a failure report is not undone by a later delivery report.
  t.equal(foldLines([sent("dee"), undelivered, { ...undelivered, outcome: "delivered", late: undefined }]).byKey.get("dee|sms|sms")?.outcome, "failed", "a late failure stays");
});

t.test("waves: deferred recipients by release time, held and released", async (t) => {
  const c = emptyCounters();
  const rb = (extra: Partial<ReceiptBatch>): ReceiptBatch => ({ type: "receipts", nid: "n_1", stage: "shard", entries: [], ...extra });
  fold(c, rb({ decided: 5, deferred: 5, waves: { "1000": 3, "2000": 2 } }));
  fold(c, rb({ decided: 4, deferred: 4, waves: { "1000": 4 } }));
  t.same(c.waves, { "1000": { held: 7, released: 0 }, "2000": { held: 2, released: 0 } }, "held per release time, summed over chunks");
  fold(c, rb({ released: 3, releasedAt: 1000 }));
  fold(c, rb({ released: 4, releasedAt: 1000 }));
  t.same(c.waves["1000"], { held: 7, released: 7 }, "released as its chunks come back");
  t.equal(c.deferred, 2, "and the deferred count follows");
});

t.test("fences: a redelivered receipt is folded already; one stored after the stream's sequence went back is not", async (t) => {
  const f = { seq: 100, seqAt: 5_000 };
  t.ok(notFolded(f, 101, 5_001), "the next receipt");
  t.notOk(notFolded(f, 100, 5_000), "the last folded, redelivered");
  t.notOk(notFolded(f, 90, 4_000), "an earlier one, redelivered after a rewind");
  t.ok(notFolded(f, 91, 6_000), "sequence 91 again, stored later: the stream's sequence went back");
  t.notOk(notFolded({ seq: 100, seqAt: 0 }, 91, 6_000), "a record without a time (older versions) goes by the sequence");
});

t.test("folded ids: a copy published again under ~rN is known by its original id, for one to two spans", async (t) => {
  const ids = new FoldedIds(1000, 3, 0);
  ids.add("dlv:b1:n1", 0);
  t.ok(ids.has("dlv:b1:n1~r1", 10), "the first copy");
  t.ok(ids.has("dlv:b1:n1~r2", 10), "a later copy");
  t.notOk(ids.has("dlv:b2:n1", 10), "another batch");
  t.ok(ids.has("dlv:b1:n1", 1500), "still known in the next span");
  t.notOk(ids.has("dlv:b1:n1", 2600), "forgotten after two");
  for (const id of ["a", "b", "c", "d"]) ids.add(id, 2700);
  t.ok(ids.has("a", 2700) && ids.has("d", 2700), "a full generation moves on early, and is still asked");
});

t.test("the fence is the receipt stored last; the memory of ids answers for what was stored since it began, within a span", async (t) => {
  const f = { seq: 10, seqAt: 1000 };
  advance(f, 8, 900);
  t.same(f, { seq: 10, seqAt: 1000 }, "one folded out of order leaves the fence");
  advance(f, 3, 2000);
  t.same(f, { seq: 3, seqAt: 2000 }, "one stored later moves it, sequence gone back or not");
  const ids = new FoldedIds(1000, 10, 5000);
  t.notOk(ids.covers(4999, 5100), "stored before the memory began");
  t.ok(ids.covers(5050, 5100), "stored since, lately");
  t.notOk(ids.covers(5050, 6100), "stored more than a span ago");
});
