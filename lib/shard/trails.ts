// Decision trails: written line by line by the policy, stored by the shard actor per chunk (identical trails once), read back by `nfx explain`.
import { decode } from "../core/codec.js";
import { RequestInvalid } from "../core/errors.js";
import { shardOf } from "../core/shard-hash.js";
import { ID_PATTERN, STREAM, trailSubject } from "../core/subjects.js";
import { hhmm } from "../directory/quiet-hours.js";
import { readStored } from "../flow/stream-read.js";
import type { Nats } from "../infra/nats.js";

/** The trails of one fan chunk, on `nfx.trail.<nid>.<shard>`: `trails[idx[i]]` is `users[i]`'s trail. */
export interface ChunkTrails {
  type: "trails";
  nid: string;
  shard: number;
  /** The fan chunk's message id (a released chunk has its own). */
  fan: string;
  at: number;
  users: string[];
  idx: number[];
  trails: string[];
}

/**
 * A decision trail being written: one line per rule, `rule|verdict|values it
 * saw...` (each ending in a newline), kept as its list of lines. A campaign
 * writes one per recipient, and most lines are the same string objects from
 * one recipient to the next (built once per chunk: lib/shard/policy.ts), so
 * {@link TrailBook} finds a chunk's identical trails line by line, without
 * building and hashing each trail's text. One object can be reused for every
 * recipient of a chunk ({@link clear}).
 */
export class Trail {
  private readonly parts: string[] = [];
  private n = 0;

  /** Appends a line. */
  add(line: string): void {
    this.parts[this.n++] = line;
  }

  /** Empties it, for the next recipient. */
  clear(): void {
    this.n = 0;
  }

  /** How many lines. */
  get count(): number {
    return this.n;
  }

  /** Line `i` (0 ≤ i < count). */
  line(i: number): string {
    return this.parts[i];
  }

  /** The trail's text: its lines in order. */
  get s(): string {
    let s = "";
    for (let i = 0; i < this.n; i++) s += this.parts[i];
    return s;
  }
}

/** A node of {@link TrailBook}'s tree: the trail whose lines lead here (-1: none yet), and the next lines. */
type Node = { id: number; next: Map<string, Node> | null };

/** Collects per-user trails of one chunk, storing each distinct trail once (found line by line in a tree of lines). */
export class TrailBook {
  private readonly root: Node = { id: -1, next: null };
  readonly trails: string[] = [];
  readonly idx: number[] = [];

  /** Appends the trail of the next user of the chunk (read now; `t` may be reused after). */
  add(t: Trail): void {
    let node = this.root;
    for (let i = 0; i < t.count; i++) {
      const line = t.line(i);
      const next = (node.next ??= new Map<string, Node>());
      let child = next.get(line);
      if (child === undefined) next.set(line, (child = { id: -1, next: null }));
      node = child;
    }
    if (node.id < 0) {
      node.id = this.trails.length;
      this.trails.push(t.s);
    }
    this.idx.push(node.id);
  }
}

/** One decision of one user, as `nfx explain` shows it. */
export interface Explanation {
  notification: string;
  user: string;
  shard: number;
  /** Each time the user was decided (a deferred user is decided again on release). */
  decisions: { at: number; chunk: string; steps: { rule: string; verdict: string; saw: string }[] }[];
}

const iso = (ms: number | string): string => new Date(Number(ms)).toISOString();

/** Renders the values a rule saw, by rule. */
function describe(rule: string, verdict: string, v: string[]): string {
  switch (rule) {
    case "expiry":
      return `expires ${iso(v[0])}`;
    case "overload":
      // `overload|pass|<deadline>` or `overload|shed|<reason>|<deadline>`.
      return verdict === "shed" ? `shed (${v[0]}): not sent by its deadline ${iso(v[1])}` : `must go by ${iso(v[0])} or be shed`;
    case "quiet_hours":
      if (v.length >= 4) {
        const base = `zone ${v[0]}, local time ${hhmm(Number(v[1]))}, quiet ${hhmm(Number(v[2]))}-${hhmm(Number(v[3]))}`;
        return v[4] !== undefined ? `${base}, quiet until ${iso(v[4])}` : base;
      }
      return v.join(" ");
    case "frequency_cap":
      if (verdict === "pass") return `cap ${v[0]} per ${v[1]} s, ${v[2]} left after this send`;
      if (verdict.startsWith("suppress")) return `cap ${v[0]} per ${v[1]} s reached, next token in ${Math.ceil(Number(v[2]) / 1000)} s`;
      return v.join(" ");
    case "dedup":
      return verdict === "pass" ? `not seen in the window (${v[0]} key(s) checked)` : `already delivered: ${v.join(" ")}`;
    case "route":
      return verdict === "send" ? `tried ${v[0]}: ${v[1]} destination(s)` : `tried ${v[0]}: nobody reachable`;
    case "local_time":
      // `local_time|defer|<zone>|<local minute>|<target>|<until>`, `…|pass|<zone>|<local>|<target>|<window>`, `…|skip|<why>`.
      if (verdict === "skip") return v.join(" ");
      if (verdict === "pass") return `zone ${v[0]}, local time ${hhmm(Number(v[1]))}: within ${v[3]} min of ${hhmm(Number(v[2]))}, sent now`;
      return `zone ${v[0]}, local time ${hhmm(Number(v[1]))}: ${verdict === "defer" ? "held" : "would be held"} until ${hhmm(Number(v[2]))} local, ${iso(v[3])}`;
    case "digest":
      // `digest|hold|<key>|<until>|<digest id>|<items so far>`.
      return `held for digest ${v[0]} until ${iso(v[1])}, to be sent as ${v[2]} (${v[3]} item${v[3] === "1" ? "" : "s"} so far)`;
    case "sms_stop":
      return `the number replied ${v[0]} on ${iso(v[1])}: no SMS${verdict === "off" ? ", other channels stay" : ""}`;
    case "segment":
      return `last active ${v[0] === "0" ? "never" : iso(v[0])}, segment needs ${iso(v[1])} or later`;
    default:
      return v.join(" ");
  }
}

/** Splits a stored trail into steps with readable values. */
export function parseTrail(trail: string): Explanation["decisions"][number]["steps"] {
  return trail
    .split("\n")
    .filter(Boolean)
    .map((line) => {
      const [rule, verdict, ...v] = line.split("|");
      return { rule: rule, verdict: verdict, saw: describe(rule, verdict, v) };
    });
}

/**
 * The decision trail of `userId` for notification `nid`: reads the trails of
 * the user's shard only. Resolves null when the user was never decided for it
 * (not a recipient, not decided yet, or trails expired). Throws
 * {@link RequestInvalid} for malformed ids.
 */
export async function explain(n: Nats, shards: number, nid: string, userId: string): Promise<Explanation | null> {
  if (!ID_PATTERN.test(nid)) throw new RequestInvalid("notification: must be a notification id", { field: "notification" });
  if (!ID_PATTERN.test(userId)) throw new RequestInvalid("user: must be a user id", { field: "user" });
  const shard = shardOf(userId, shards);
  const decisions: Explanation["decisions"] = [];
  await readStored(
    n,
    STREAM.trails,
    (m) => {
      const t = decode<ChunkTrails>(m.data);
      const i = t.users.indexOf(userId);
      if (i >= 0) decisions.push({ at: t.at, chunk: t.fan, steps: parseTrail(t.trails[t.idx[i]]) });
    },
    trailSubject(nid, shard),
  );
  return decisions.length ? { notification: nid, user: userId, shard, decisions } : null;
}
