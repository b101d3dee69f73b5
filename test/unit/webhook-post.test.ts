// One webhook request against a real HTTP server: status and Retry-After; no answer within the deadline is a timeout; an answer whose body is too large or too slow keeps its status; a refused connection names its code.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

import t from "tap";
import { Agent } from "undici";

import { WebhookPoster } from "../../lib/gateway/webhook-post.js";

const listen = (s: Server): Promise<string> => new Promise((res) => s.listen(0, "127.0.0.1", () => res(`http://127.0.0.1:${(s.address() as AddressInfo).port}`)));

t.test("answers, timeouts and failures", async (t) => {
  const seen: { path: string; body: string; sig?: string }[] = [];
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString()));
    req.on("end", () => {
      seen.push({ path: req.url!, body, sig: req.headers["webhook-signature"] as string | undefined });
      if (req.url === "/ok") res.end("thanks");
      else if (req.url === "/busy") res.writeHead(503, { "retry-after": "7" }).end();
      else if (req.url === "/silent") return; // never answers
      else if (req.url === "/trickle") {
        res.writeHead(200);
        res.write("a"); // then nothing more
      } else if (req.url === "/drip") {
        // A byte every 100 ms for 5 s: never idle for undici's body timeout, so only the whole attempt's deadline ends it.
        res.writeHead(200);
        const drip = setInterval(() => res.write("b"), 100);
        const end = setTimeout(() => (clearInterval(drip), res.end()), 5000);
        res.on("close", () => (clearInterval(drip), clearTimeout(end)));
      } else if (req.url === "/large") res.writeHead(202).end("x".repeat(200 * 1024));
    });
  });
  const origin = await listen(server);
  const agent = new Agent({ connections: 4 });
  const poster = new WebhookPoster(agent, 400, 20);
  // Answers that should arrive get a deadline no busy machine reaches (the first request, on a fresh connection at nice
  // 10 beside the integration files, once took over 700 ms); the 400 ms one is for the deadline's own checks.
  const patient = new WebhookPoster(agent, 10_000, 20);
  t.teardown(async () => {
    poster.close();
    patient.close();
    await agent.destroy();
    server.closeAllConnections();
    server.close();
  });

  t.same(await patient.post(origin, "/ok", { "content-type": "application/json", "webhook-signature": "v1,abc" }, '{"a":1}'), { status: 200 }, "200");
  t.same(seen[0], { path: "/ok", body: '{"a":1}', sig: "v1,abc" }, "the body and headers arrived as given");
  t.same(await patient.post(origin, "/busy", {}, "{}"), { status: 503, retryAfter: 7000 }, "503 with Retry-After in ms");

  const t0 = Date.now();
  const silent = await poster.post(origin, "/silent", {}, "{}");
  t.equal(silent.status, 0, "no answer: status 0");
  t.match(silent.error, /^timeout after \d+ ms$/, "named a timeout");
  t.ok(Date.now() - t0 >= 400, "not before the deadline");

  t.same(await poster.post(origin, "/trickle", {}, "{}"), { status: 200 }, "an answer whose body outlives the deadline keeps its status");
  const t1 = Date.now();
  t.same(await poster.post(origin, "/drip", {}, "{}"), { status: 200 }, "a body still coming at the deadline: the attempt ends, its status kept");
  t.ok(Date.now() - t1 < 3000, "ended by the deadline, not by the answer's end 5 s later");
  t.same(await patient.post(origin, "/large", {}, "{}"), { status: 202 }, "an answer over the body limit keeps its status");
  t.same(await patient.post(origin, "/ok", {}, "{}"), { status: 200 }, "the agent still delivers afterwards");

  const closed = createServer();
  const gone = await listen(closed);
  await new Promise((r) => closed.close(r));
  const refused = await poster.post(gone, "/ok", {}, "{}");
  t.equal(refused.status, 0, "nothing listening: status 0");
  t.match(refused.error, /^ECONNREFUSED: /, "named by its code");
});
