// SMS consent keywords: STOP and its synonyms opt a number out of SMS, START opts it back in, HELP answers; the stopped numbers in Redis.
import type { NatsConnection } from "@nats-io/transport-node";

import { decode, encodeJson } from "../core/codec.js";
import { consentLogKey, phoneUsersKey, profileKey, SMS_STOPPED_KEY } from "../core/keys.js";
import { shardOf } from "../core/shard-hash.js";
import { dirChangedSubject } from "../core/subjects.js";
import type { ConsentLogEntry } from "../core/types.js";
import { pipelineOf, type Redis } from "../infra/redis.js";

/** Keywords that opt a number out of SMS (all categories), the carriers' and Twilio's list. */
export const STOP_KEYWORDS = ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"] as const;
/** Keywords that opt it back in. */
export const START_KEYWORDS = ["START", "UNSTOP"] as const;
/** Keywords answered with the help text. */
export const HELP_KEYWORDS = ["HELP", "INFO"] as const;

export type SmsKeyword = { kind: "stop" | "start" | "help"; keyword: string };

/** The keyword an inbound message is, or null: the whole body, trimmed, any case (`Stop`, ` stop.` is not one). */
export function keywordOf(body: string): SmsKeyword | null {
  const k = body.trim().toUpperCase();
  if ((STOP_KEYWORDS as readonly string[]).includes(k)) return { kind: "stop", keyword: k };
  if ((START_KEYWORDS as readonly string[]).includes(k)) return { kind: "start", keyword: k };
  if ((HELP_KEYWORDS as readonly string[]).includes(k)) return { kind: "help", keyword: k };
  return null;
}

/** Why a number gets no SMS: when and with which keyword it replied. */
export interface SmsStop {
  at: number;
  keyword: string;
}

/** Per number, its stop record or null (one HMGET). */
export async function smsStops(redis: Redis, numbers: readonly string[]): Promise<(SmsStop | null)[]> {
  if (numbers.length === 0) return [];
  return (await redis.hmget(SMS_STOPPED_KEY, ...numbers)).map((j) => (j ? (JSON.parse(j) as SmsStop) : null));
}

/**
 * Applies a STOP or START from `from` at `now`: records (or removes) the number's stop, then appends the change to the
 * consent log of each user whose profile holds that number, and announces it on their shard's change subject (so
 * gateways re-check queued sends). Resolves the users logged. Idempotent in effect (a repeated STOP keeps the first time).
 */
export async function applySmsKeyword(redis: Redis, nc: NatsConnection, shards: number, from: string, k: SmsKeyword, now: number): Promise<string[]> {
  if (k.kind === "help") return [];
  if (k.kind === "stop") await redis.hsetnx(SMS_STOPPED_KEY, from, JSON.stringify({ at: now, keyword: k.keyword } satisfies SmsStop));
  else await redis.hdel(SMS_STOPPED_KEY, from);
  const candidates = await redis.smembers(phoneUsersKey(from));
  const holders: string[] = [];
  for (const u of candidates) {
    const s = shardOf(u, shards);
    const prof = await redis.getBuffer(profileKey(s, u));
    // The index may name a user whose number changed since: only current holders are logged.
    if (prof && decode<{ phone?: string }>(prof).phone === from) holders.push(u);
  }
  const entry = (): ConsentLogEntry => ({ at: now, via: "sms_keyword", by: k.keyword, change: { sms: k.kind === "stop" ? "stopped" : "started", number: from } });
  const p = pipelineOf(redis);
  for (const u of holders) p.rpush(consentLogKey(shardOf(u, shards), u), JSON.stringify(entry()));
  if (holders.length) await p.exec();
  for (const u of holders) nc.publish(dirChangedSubject(shardOf(u, shards)), encodeJson({ user: u, fields: ["sms"] }));
  return holders;
}

/** A TwiML answer sending `text` back to the sender (escaped), or an empty response when `text` is null. */
export function twimlMessage(text: string | null): string {
  const esc = (s: string): string => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  return `<?xml version="1.0" encoding="UTF-8"?><Response>${text === null ? "" : `<Message>${esc(text)}</Message>`}</Response>`;
}
