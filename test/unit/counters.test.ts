// Counters fold receipts once: an outcome repeated by another copy of a send (`echo`) shows in lines but is not counted again.
import t from "tap";

import { emptyCounters, fold } from "../../lib/campaign/counters.js";

t.test("echoed outcomes are not counted", async (t) => {
  const c = emptyCounters();
  const sent = { user: "u", outcome: "sent" as const, channel: "fcm" as const, device: "d", providerId: "p1", at: 1 };
  fold(c, { type: "receipts", nid: "n_1", stage: "gateway", entries: [sent] });
  fold(c, { type: "receipts", nid: "n_1", stage: "gateway", entries: [{ ...sent, echo: true }] });
  t.equal(c.sent, 1, "the recording batch's receipt counts, the echo does not");
  fold(c, { type: "receipts", nid: "n_1", stage: "gateway", entries: [{ ...sent, user: "v", outcome: "failed", reason: "Unregistered", echo: true }] });
  t.same(c.failed, {}, "an echoed failure is not counted either");
});
