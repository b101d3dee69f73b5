// A WebSocket test client (the `ws` package) that records what the gateway sends and can acknowledge live items.
import WebSocket from "ws";

export interface WsMessage {
  t: string;
  [k: string]: unknown;
}

export interface TestSocket {
  ws: WebSocket;
  /** Every message received, in order. */
  got: WsMessage[];
  /** Live items received (`n` messages). */
  items(): { id: string; title?: string; body?: string; payload: Record<string, unknown> }[];
  /** Resolves with the first message (already received or coming) that matches, or rejects after `ms`. */
  next(pred: (m: WsMessage) => boolean, ms?: number): Promise<WsMessage>;
  send(m: unknown): void;
  /** Resolves with the close code. */
  closed: Promise<number>;
  close(): void;
}

/** The outcome of a refused handshake: the HTTP status and body the gateway answered. */
export interface Refused {
  status: number;
  body: string;
}

/**
 * Connects to `url` (ws://…/v1/ws?token=…). With `ack` (the default) every
 * live item is acknowledged as soon as it arrives. Rejects with a
 * {@link Refused} when the handshake is refused.
 */
export function connectWs(url: string, o: { ack?: boolean; origin?: string; headers?: Record<string, string> } = {}): Promise<TestSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { ...(o.origin ? { origin: o.origin } : {}), headers: o.headers ?? {} });
    const got: WsMessage[] = [];
    const waiters: { pred: (m: WsMessage) => boolean; res: (m: WsMessage) => void }[] = [];
    const closed = new Promise<number>((r) => ws.on("close", (code) => r(code)));
    ws.on("message", (data) => {
      const m = JSON.parse((data as Buffer).toString()) as WsMessage;
      got.push(m);
      if (m.t === "n" && o.ack !== false) ws.send(JSON.stringify({ t: "ack", id: m.id }));
      for (const w of [...waiters]) {
        if (!w.pred(m)) continue;
        waiters.splice(waiters.indexOf(w), 1);
        w.res(m);
      }
    });
    ws.on("unexpected-response", (_req, res) => {
      let body = "";
      res.on("data", (c: Buffer) => (body += c.toString()));
      res.on("end", () => reject(Object.assign(new Error(`refused ${res.statusCode}`), { status: res.statusCode ?? 0, body } satisfies Refused)));
    });
    ws.on("error", (err) => reject(err));
    ws.on("open", () =>
      resolve({
        ws, got, closed,
        items: () => got.filter((m) => m.t === "n").map((m) => m.item as ReturnType<TestSocket["items"]>[number]),
        next: (pred, ms = 10_000) =>
          new Promise((res, rej) => {
            const have = got.find(pred);
            if (have) return res(have);
            const w = { pred, res };
            waiters.push(w);
            setTimeout(() => {
              const i = waiters.indexOf(w);
              if (i < 0) return;
              waiters.splice(i, 1);
              rej(new Error("no matching message in time"));
            }, ms).unref();
          }),
        send: (m) => ws.send(JSON.stringify(m)),
        close: () => ws.close(),
      }),
    );
  });
}
