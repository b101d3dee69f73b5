// Fuzz: generated malformed or hostile requests (3,000 in npm test, FUZZ_REQUESTS more) over both surfaces; every one refused with a 4xx and a code, the ingest process stays up, only valid requests are stored.
/* eslint-disable @typescript-eslint/no-explicit-any, @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-assignment -- builds deliberately malformed bodies: any is the point */
import t from "tap";

import { STREAM } from "../../lib/core/subjects.js";
import { prng } from "../../lib/directory/users.js";
import { clientsFor, startTestCluster } from "../helpers/cluster.js";

const HOSTILE_IDS = ["", " ", "a b", "a.b", "*", ">", "nfx.>", "$JS.API.STREAM.DELETE.NFX_INTAKE", "a\u0000b", "ü", "x".repeat(129), "../../etc", "{s1}", "a\nb", "'; DROP", "%2e"];
const WRONG = [null, 0, -1, 1.5, true, "", "x", [], {}, [1], { a: 1 }, "9".repeat(400)];

/** A request that is always invalid, and whether it is sent as raw bytes. */
export function malformed(r: () => number): { body: string; raw?: boolean } {
  const pick = <T,>(a: readonly T[]): T => a[Math.floor(r() * a.length)];
  const base = (): Record<string, any> => ({ recipients: ["u1", "u2"], category: "transactional", content: { push: { title: "T", body: "B" } } });
  const b = base();
  switch (Math.floor(r() * 12)) {
    case 0: // an unknown field somewhere strict
      // defineProperty, so "__proto__" becomes an own key that JSON.stringify writes.
      Object.defineProperty(pick([b, b.content, b.content.push]), pick(["extra", "__proto__", "constructor", "Recipients", "admin", "$where"]), { value: pick(WRONG), enumerable: true });
      break;
    case 1: // a required field removed
      if (r() < 0.5) delete b[pick(["recipients", "category", "content"])];
      else delete b.content.push[pick(["title", "body"])];
      break;
    case 2: // a field of the wrong type
      b[pick(["recipients", "category", "priority", "ttlSec", "collapseKey", "channels", "idempotencyKey", "sendAt"])] = pick([null, true, { a: 1 }, [[1]], -5.5]);
      break;
    case 3: // push fields of the wrong type
      b.content.push[pick(["title", "body", "badge", "sound", "data"])] = pick([null, [], { x: [] }, -3.2, true]);
      break;
    case 4: // hostile recipient ids
      b.recipients = [...b.recipients, pick(HOSTILE_IDS)];
      break;
    case 5: // not JSON at all
      return { body: pick(["", "{", "nul", "[1,2", "\u0000\u0001\u0002", "{\"recipients\":", String.fromCharCode(...Array.from({ length: 40 }, () => Math.floor(r() * 256)))]), raw: true };
    case 6: // JSON, but not an object
      return { body: JSON.stringify(pick([[], [b], 42, "str", null, true])) };
    case 7: // semantic: unknown category, unknown template, past expiry, far send-at
      switch (Math.floor(r() * 4)) {
        case 0: b.category = `cat${Math.floor(r() * 1e6)}`; break;
        case 1: delete b.content; b.template = { id: `tpl${Math.floor(r() * 1e6)}`, variables: {} }; break;
        case 2: b.expiresAt = Math.floor(r() * 1e12); break;
        default: b.sendAt = Date.now() + (40 + r() * 300) * 86_400_000;
      }
      break;
    case 8: // limits
      if (r() < 0.5) b.recipients = Array.from({ length: 10_001 }, (_, i) => `u${i}`);
      else b.content.push.data = { [pick(["from", "notification", "google.a", "gcm.b", "nfx_id"])]: "v" };
      break;
    case 9: // oversized strings
      b.content.push[pick(["title", "body"])] = "z".repeat(5000);
      break;
    case 10: // both or neither target / content
      if (r() < 0.5) b.segment = "all";
      else b.template = { id: "t" };
      break;
    default: // deep nesting in a place that takes no objects
      b.category = JSON.parse("[".repeat(200) + "]".repeat(200));
  }
  return { body: JSON.stringify(b) };
}

/** Malformed requests sent: 3,000 in `npm test`, more with FUZZ_REQUESTS (e.g. 10000, 100000). Every 101st request is a valid one besides. */
const MALFORMED = Number(process.env.FUZZ_REQUESTS ?? 3000);

t.test(`${MALFORMED.toLocaleString("en")} malformed and hostile requests over NATS and HTTP`, async (t) => {
  const key = "fuzz-key-0123456789";
  const cluster = await startTestCluster(t, { own: ["ingest"], overrides: { apiKeys: [{ name: "fuzz", key, scopes: ["send", "campaigns.create"] }] } });
  const { nats } = await clientsFor(t, cluster.cfg);
  const before = (await nats.jsm.streams.info(STREAM.intake)).state.messages;
  const r = prng(20261121);
  const te = new TextEncoder();
  const refused = { nats: 0, http: 0 };
  const problems: string[] = [];
  let valid = 0;

  const one = async (i: number): Promise<void> => {
    const sendValid = i % 101 === 100;
    const req = sendValid ? { body: JSON.stringify({ recipients: [`v${i}`], category: "social", content: { push: { title: "ok", body: "ok" } } }) } : malformed(r);
    if (sendValid) valid++;
    if (i % 2 === 0) {
      const m = await nats.nc.request("nfx.api.notify", te.encode(req.body), { timeout: 10_000 });
      const code = m.headers?.get("Nfx-Error");
      if (sendValid) {
        if (code) problems.push(`valid NATS request ${i} refused: ${m.string()}`);
      } else if (!code?.startsWith("NFX_ERR_") || code === "NFX_ERR_INTERNAL") problems.push(`NATS ${i}: ${code ?? "accepted"} for ${req.body.slice(0, 200)}`);
      else refused.nats++;
    } else {
      const res = await fetch(`${cluster.httpUrl}/v1/notifications`, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: req.body });
      const json = (await res.json().catch(() => null)) as { error?: { code: string } } | null;
      if (sendValid) {
        if (res.status !== 202) problems.push(`valid HTTP request ${i} refused: ${res.status} ${JSON.stringify(json)}`);
      } else if (res.status < 400 || res.status >= 500 || !json?.error?.code.startsWith("NFX_ERR_")) problems.push(`HTTP ${i}: ${res.status} ${JSON.stringify(json)} for ${req.body.slice(0, 200)}`);
      else refused.http++;
    }
  };
  const total = MALFORMED + Math.floor(MALFORMED / 100); // one valid per 100 malformed (every 101st)
  let next = 0;
  await Promise.all(Array.from({ length: 32 }, async () => {
    while (next < total) await one(next++);
  }));

  t.same(problems.slice(0, 10), [], "every malformed request got a 4xx / NATS error with a code, every valid one was accepted");
  t.equal(refused.nats + refused.http, total - valid, `${(total - valid).toLocaleString("en")} refused (${refused.nats} over NATS, ${refused.http} over HTTP)`);
  t.equal(cluster.procs.get("ingest")!.exitCode, null, "the ingest process is still up");
  t.equal((await fetch(`${cluster.httpUrl}/healthz`)).status, 200, "and still answers");
  t.equal((await nats.jsm.streams.info(STREAM.intake)).state.messages - before, valid, `the intake stream holds exactly the ${valid} valid requests`);
});
