// The wire form of a send batch: its sends' fields as columns (one joined string per field), which msgpack packs and reads in a few native calls instead of one record per send.
import type { Send, SendBatch } from "./types.js";

/** Joins a string column's values; a value holding it makes the batch go as records (docs/architecture.md, "Send batches on the wire"). */
const SEP = "\u001f";

/** The string fields every send has, each a column (as is `app`, which a send may lack). */
type Core = "nid" | "user" | "device" | "token";
/** Every other field a send may carry: sent once for the batch when all its sends share a number or string, else per send. */
export const REST = ["push", "email", "sms", "inapp", "fallback", "attempt", "waits", "shedAfter"] as const;
// A field added to Send must be listed here, or it would be dropped on the wire: this fails to compile until it is.
type Unlisted = Exclude<keyof Send, Core | "app" | (typeof REST)[number]>;
const listed: [Unlisted] extends [never] ? true : never = true;
void listed;

/** A column: the values joined by SEP, or `[v]` when every send has `v`. */
type Col = string | [string];

/** A send batch as stored on NFX_SEND_* (see {@link columnsOf}). */
export interface SendColumns extends Omit<SendBatch, "sends"> {
  /** How many sends. */
  n: number;
  /** The string columns; `app` absent when no send has one, "" for a send without one. */
  c: Record<Core, Col> & { app?: Col };
  /** Fields every send has with the same number or string value (a campaign's shed deadline). */
  u?: Partial<Send>;
  /** Per send, its other fields (0: none); absent when no send has any. */
  x?: (Partial<Send> | 0)[];
}

/** `vals` as a column, or null when one is not a string or holds the separator (the batch then goes as records). */
function column(vals: readonly unknown[]): Col | null {
  const first = vals[0];
  let same = true;
  for (let i = 0; i < vals.length; i++) {
    const v = vals[i];
    if (typeof v !== "string") return null;
    if (same && v !== first) same = false;
  }
  if (same && (first as string).indexOf(SEP) === -1) return [first as string];
  const joined = vals.join(SEP);
  // Exactly one separator between neighbours: none came from a value.
  let seen = 0;
  for (let k = joined.indexOf(SEP); k !== -1; k = joined.indexOf(SEP, k + 1)) if (++seen >= vals.length) return null;
  return seen === vals.length - 1 ? joined : null;
}

/** The values of column `c` for `n` sends. */
const valuesOf = (c: Col, n: number): string[] => (typeof c === "string" ? c.split(SEP) : new Array<string>(n).fill(c[0]));

/** Whether `x` has a field of {@link REST} (written out: a loop over the names costs a keyed look-up per field and send). */
const hasRest = (x: Send): boolean =>
  x.push !== undefined || x.email !== undefined || x.sms !== undefined || x.inapp !== undefined || x.fallback !== undefined || x.attempt !== undefined || x.waits !== undefined || x.shedAfter !== undefined;

/** The fields of {@link REST} that `s` carry: once in `u` where every send has the same number or string, else per send in `x`. */
function restOf(s: readonly Send[]): { u?: Partial<Send>; x?: (Partial<Send> | 0)[] } {
  const n = s.length;
  let u: Partial<Send> | undefined;
  let x: (Partial<Send> | 0)[] | undefined;
  for (const f of REST) {
    const v0 = s[0][f];
    let present = false;
    let same = typeof v0 === "number" || typeof v0 === "string";
    for (let i = 0; i < n; i++) {
      const v = s[i][f];
      if (v !== undefined) present = true;
      if (v !== v0) same = false;
    }
    if (!present) continue;
    if (same) (u ??= {})[f] = v0 as never;
    else {
      x ??= new Array<Partial<Send> | 0>(n).fill(0);
      for (let i = 0; i < n; i++) {
        const v = s[i][f];
        if (v === undefined) continue;
        const e = x[i] === 0 ? (x[i] = {}) : (x[i] as Partial<Send>);
        e[f] = v as never;
      }
    }
  }
  return { u, x };
}

/**
 * The columnar wire form of `b` (what {@link encode} stores for a send
 * batch), or `b` itself when a column cannot be joined (an empty batch, a
 * value that is not a string, a separator inside one, an empty app). Pure;
 * never throws. {@link sendsOf} gives back the same batch.
 */
export function columnsOf(b: SendBatch): SendColumns | SendBatch {
  const s = b.sends;
  const n = s.length;
  if (n === 0) return b;
  const nid = new Array<string>(n), user = new Array<string>(n), device = new Array<string>(n), token = new Array<string>(n);
  const app = new Array<string | undefined>(n);
  let withApp = false;
  let rest = false;
  for (let i = 0; i < n; i++) {
    const x = s[i];
    nid[i] = x.nid;
    user[i] = x.user;
    device[i] = x.device;
    token[i] = x.token;
    const a = x.app;
    app[i] = a;
    if (a !== undefined) {
      if (a === "") return b;
      withApp = true;
    }
    if (!rest && hasRest(x)) rest = true;
  }
  const cn = column(nid), cu = column(user), cd = column(device), ct = column(token);
  if (cn === null || cu === null || cd === null || ct === null) return b;
  const c: SendColumns["c"] = { nid: cn, user: cu, device: cd, token: ct };
  if (withApp) {
    for (let i = 0; i < n; i++) if (app[i] === undefined) app[i] = "";
    const ca = column(app);
    if (ca === null) return b;
    c.app = ca;
  }
  const { sends: _, ...head } = b;
  const out: SendColumns = { ...head, n, c };
  if (rest) {
    const { u, x } = restOf(s);
    if (u) out.u = u;
    if (x) out.x = x;
  }
  return out;
}

/** True for a send batch's columnar wire form. */
export const isSendColumns = (v: unknown): v is SendColumns => (v as { type?: unknown } | null)?.type === "send_batch" && (v as { c?: unknown }).c !== undefined;

/**
 * The send batch of wire form `w` ({@link columnsOf}): its sends rebuilt,
 * fields in the order the shard writes them. Throws a TypeError when a
 * column does not hold `w.n` values (a damaged message).
 */
export function sendsOf(w: SendColumns): SendBatch {
  const { n, c, u, x, ...head } = w;
  const nid = valuesOf(c.nid, n), user = valuesOf(c.user, n), device = valuesOf(c.device, n), token = valuesOf(c.token, n);
  const app = c.app === undefined ? null : valuesOf(c.app, n);
  for (const col of [nid, user, device, token, ...(app ? [app] : [])]) {
    if (col.length !== n) throw new TypeError(`send batch column holds ${col.length} values for ${n} sends`);
  }
  const sends = new Array<Send>(n);
  for (let i = 0; i < n; i++) {
    const s: Send = { nid: nid[i], user: user[i], device: device[i], token: token[i] };
    if (app !== null && app[i] !== "") s.app = app[i];
    if (u !== undefined) Object.assign(s, u);
    if (x !== undefined && x[i] !== 0) Object.assign(s, x[i]);
    sends[i] = s;
  }
  return { ...head, sends };
}
