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
    let closeCode: number | null = null;
    const closed = new Promise<number>((r) => ws.on("close", (code) => r((closeCode = code))));
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
              const state = closeCode === null ? ["connecting", "open", "closing", "closed"][ws.readyState] : `closed with ${closeCode}`;
              rej(new Error(`no message matching ${pred.toString()} within ${ms} ms (socket ${state}; got ${JSON.stringify(got.map((m) => m.t))})`));
            }, ms).unref();
          }),
        send: (m) => ws.send(JSON.stringify(m)),
        close: () => ws.close(),
      }),
    );
  });
}

/**
 * Connects as a client does: waits for `hello`, and when the connection closes before it (any code but 4401 and 1008,
 * which a client does not retry) connects again, up to `retries` times. Resolves the socket with its `hello` and how
 * many connections were closed before one said hello; rejects when none did, or when `ms` pass without `hello`.
 */
export async function connectReady(url: string, o: { ms?: number; retries?: number } = {}): Promise<{ socket: TestSocket; reconnects: number }> {
  const retries = o.retries ?? 2;
  for (let attempt = 0; ; attempt++) {
    const socket = await connectWs(url);
    const hello = socket.next((m) => m.t === "hello", o.ms ?? 30_000).then(() => "hello" as const);
    hello.catch(() => {}); // when the close wins the race, the wait's own timeout must not surface as an unhandled rejection
    const outcome = await Promise.race([hello, socket.closed]);
    if (outcome === "hello") return { socket, reconnects: attempt };
    if (outcome === 4401 || outcome === 1008 || attempt >= retries) throw new Error(`closed with ${outcome} before hello (${attempt + 1} connections)`);
  }
}
