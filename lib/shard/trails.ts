// Decision trails: written by the shard actor per chunk (identical trails stored once), read back by `nfx explain`.
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

/** Collects per-user trails of one chunk, storing each distinct trail once. */
export class TrailBook {
  private readonly ids = new Map<string, number>();
  readonly trails: string[] = [];
  readonly idx: number[] = [];

  /** Appends the trail of the next user of the chunk. */
  add(trail: string): void {
    let i = this.ids.get(trail);
    if (i === undefined) {
      i = this.trails.length;
      this.trails.push(trail);
      this.ids.set(trail, i);
    }
    this.idx.push(i);
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
