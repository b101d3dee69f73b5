// The sandbox webhook receiver's control routes as bench:webhooks uses them: progress counts, a summary, and a reset that empties a prefix's records but still counts a later copy as a duplicate.
import t from "tap";

import { signatureHeaders } from "../../lib/gateway/webhook-sign.js";
import { startWebhookReceiver } from "../../sandbox/webhook-receiver.js";

t.test("progress, summary and reset", async (t) => {
  const rx = await startWebhookReceiver(0);
  t.teardown(() => rx.close());
  const base = `http://127.0.0.1:${rx.port}`;
  const secret = Buffer.from("0123456789abcdef0123456789abcdef").toString("base64");
  for (const n of ["a1", "a2", "b1"]) rx.setSecrets(n, [`whsec_${secret}`]);
  const post = async (name: string, id: string): Promise<number> => {
    const body = JSON.stringify({ type: "t", data: { id } });
    const res = await fetch(`${base}/hooks/${name}`, { method: "POST", body, headers: signatureHeaders(id, Math.floor(Date.now() / 1000), body, [Buffer.from(secret, "base64")]) });
    return res.status;
  };
  const get = async (path: string, method = "GET"): Promise<unknown> => (await fetch(`${base}${path}`, { method })).json();

  t.equal(await post("a1", "x1"), 204, "a signed delivery is accepted");
  await post("a1", "x2");
  await post("a2", "y1");
  await post("b1", "z1");
  t.same(await get("/_progress/a"), { a1: 2, a2: 1 }, "progress counts per endpoint of the prefix");
  const s = (await get("/_summary/a")) as { accepted: Record<string, number>; dup: number };
  t.same(s.accepted, { a1: 2, a2: 1 }, "summary: accepted per endpoint");
  t.equal(s.dup, 0);

  t.same(await get("/_reset/a", "POST"), { endpoints: 2 }, "reset names how many endpoints it emptied");
  t.same(await get("/_progress/a"), { a1: 0, a2: 0 }, "their counts start again");
  t.same(await get("/_progress/b"), { b1: 1 }, "another prefix is untouched");
  t.equal(await post("a1", "x3"), 204);
  await post("a1", "x1"); // a copy of a delivery accepted before the reset
  const after = (await get("/_summary/a")) as { accepted: Record<string, number>; dup: number };
  t.same(after.accepted, { a1: 2, a2: 0 }, "only what arrived since the reset");
  t.equal(after.dup, 1, "a copy of a delivery accepted before the reset is still a duplicate");
});
