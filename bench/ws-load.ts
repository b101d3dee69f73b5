// bench:ws load generator (a child process): holds many idle WebSocket connections to the gateway, spread over several 127.0.0.x source addresses.
import WebSocket from "ws";

import { UserTokens } from "../lib/inapp/ws-token.js";

/** Arguments by IPC: connect `count` users from `first`, at most `window` handshakes at once. */
interface Job {
  url: string;
  secret: string;
  first: number;
  count: number;
  sources: string[];
  window: number;
}

// The benchmark process gone (killed, or ended without stopping this one): nothing is left holding sockets.
process.once("disconnect", () => process.exit(0));
const job = await new Promise<Job>((r) => process.once("message", (m) => r(m as Job)));
const tokens = new UserTokens(job.secret);
const socks: WebSocket[] = [];
let open = 0;
let failed = 0;
let closed = 0;
let next = 0;
const report = (): void => void process.send!({ type: "progress", open, failed, closed });
const timer = setInterval(report, 500);

await new Promise<void>((done) => {
  const start = async (): Promise<void> => {
    if (next >= job.count) return;
    const i = next++;
    const token = await tokens.mint(`load${String(job.first + i).padStart(7, "0")}`, 7200);
    const ws = new WebSocket(`${job.url}?token=${token}`, { localAddress: job.sources[i % job.sources.length], perMessageDeflate: false });
    let settled = false;
    const settle = (ok: boolean): void => {
      if (settled) return;
      settled = true;
      if (ok) open++;
      else failed++;
      if (open + failed === job.count) done();
      else void start();
    };
    ws.on("open", () => settle(true));
    ws.on("error", () => settle(false));
    ws.on("close", () => {
      if (settled) closed++;
      settle(false);
    });
    socks.push(ws);
  };
  for (let k = 0; k < Math.min(job.window, job.count); k++) void start();
});
report();
process.send!({ type: "ready", open, failed });
// Held until the parent kills this process.
process.on("disconnect", () => {
  clearInterval(timer);
  process.exit(0);
});
