// The user directory in Redis: per user a compact routing record (read on the hot path) and a profile (read when needed), plus per-shard indexes; all under the shard's hash tag.
import type { NatsConnection } from "@nats-io/transport-node";

import { decode, encodeJson, encodePlain } from "../core/codec.js";
import { changedKey, consentLogKey, lastActiveKey, phoneUsersKey, profileKey, userIndexKey, userKey } from "../core/keys.js";
import { shardOf } from "../core/shard-hash.js";
import { dirChangedSubject } from "../core/subjects.js";
import type { ConsentActor, ConsentLogEntry, DeviceRecord, Preferences, UserRecord } from "../core/types.js";
import { pipelineOf, type Redis } from "../infra/redis.js";
import { withScripts } from "../infra/scripts.js";
import { parseHhmm } from "./quiet-hours.js";

/**
 * The routing record: what the shard actor needs for every recipient, with
 * short keys (it is decoded once per recipient per notification; a full
 * record decodes three times slower, measured in bench:fan's notes).
 * Devices are [id, platform (1 ios, 2 android), token, app?].
 */
interface Routing {
  la?: number;
  l?: string;
  tz?: string;
  o?: 1;
  /** Stopped all marketing. */
  m?: 1;
  /** Quiet hours [start, end], local minutes. */
  q?: [number, number];
  p?: Preferences["categories"];
  d: [string, 1 | 2, string, string?][];
}
/** The profile: read only when a template uses user attributes (or a channel needs an address). */
type Profile = Pick<UserRecord, "email" | "phone" | "attributes">;

function toRouting(u: UserRecord): Routing {
  return {
    ...(u.lastActive !== undefined ? { la: u.lastActive } : {}),
    ...(u.locale ? { l: u.locale } : {}),
    ...(u.timezone ? { tz: u.timezone } : {}),
    ...(u.optedOut ? { o: 1 as const } : {}),
    ...(u.marketingOptOut ? { m: 1 as const } : {}),
    ...(u.quietHours ? { q: [u.quietHours.start, u.quietHours.end] as [number, number] } : {}),
    ...(u.preferences?.categories ? { p: u.preferences.categories } : {}),
    d: u.devices.map((d) => (d.app ? [d.id, d.platform === "ios" ? 1 : 2, d.token, d.app] : [d.id, d.platform === "ios" ? 1 : 2, d.token])),
  };
}

/** Rebuilds the API shape. Redis's Lua cmsgpack writes an empty table as an empty array: maps are normalized back. */
function fromStored(id: string, raw: Buffer, profile: Buffer | null): UserRecord {
  const r = decode<Routing>(raw);
  const devices: DeviceRecord[] = [];
  if (Array.isArray(r.d)) {
    for (const x of r.d) {
      const d: DeviceRecord = { id: x[0], platform: x[1] === 1 ? "ios" : "android", token: x[2] };
      if (x[3]) d.app = x[3];
      devices.push(d);
    }
  }
  const cats = r.p && !Array.isArray(r.p) ? r.p : undefined;
  // Built field by field (no spreads): decoded once per recipient per notification.
  const u: UserRecord = { id, devices };
  if (r.la !== undefined) u.lastActive = r.la;
  if (r.l) u.locale = r.l;
  if (r.tz) u.timezone = r.tz;
  if (r.o) u.optedOut = true;
  if (r.m) u.marketingOptOut = true;
  if (Array.isArray(r.q) && r.q.length === 2) u.quietHours = { start: r.q[0], end: r.q[1] };
  if (cats) u.preferences = { categories: cats };
  if (profile) {
    const p = decode<Profile>(profile);
    if (p.email) u.email = p.email;
    if (p.phone) u.phone = p.phone;
    if (p.attributes && !Array.isArray(p.attributes)) u.attributes = p.attributes;
  }
  return u;
}

/** Directory records by position: an array of them, or {@link StoredUsers} (decoded when asked for). */
export interface UserSource {
  /** The record at position `i`; null (or undefined) for a user with no record. */
  at(i: number): UserRecord | null | undefined;
}

/**
 * The records of a list of users as Redis returned them, each decoded only when
 * asked for ({@link at}: decoded again on every call, nothing kept). The shard
 * actor decides a chunk's users one by one, so each decoded record lives for
 * one user's decision and dies young; decoded all at once on arrival, the
 * chunk's records outlived the reads and waits before its decision and were
 * promoted to V8's old generation, most of what the shard actor promoted
 * (docs/benchmarks.md, "The RSS slope per recipient, and what the shard promotes").
 */
export class StoredUsers implements UserSource {
  constructor(
    /** The users, in the order of the records. */
    readonly ids: readonly string[],
    private readonly raw: readonly (Buffer | null)[],
    private readonly profiles: readonly (Buffer | null)[] | null,
  ) {}

  get length(): number {
    return this.ids.length;
  }

  /** User `i`'s record, decoded now; null when the user has none. Throws if the record is not valid msgpack. */
  at(i: number): UserRecord | null {
    const r = this.raw[i];
    return r === null || r === undefined ? null : fromStored(this.ids[i], r, this.profiles?.[i] ?? null);
  }

  /** User `i`'s phone number from the profile alone (read with `profile`), without decoding the routing record. */
  phoneAt(i: number): string | undefined {
    const p = this.raw[i] ? this.profiles?.[i] : null;
    return p ? decode<Profile>(p).phone || undefined : undefined;
  }

  /** Every user's phone number ({@link phoneAt}), in order. */
  phones(): (string | undefined)[] {
    return this.ids.map((_, i) => this.phoneAt(i));
  }

  /** Every record, decoded. */
  all(): (UserRecord | null)[] {
    return this.ids.map((_, i) => this.at(i));
  }
}

/**
 * Reads the users `userIds`, all of one shard, undecoded ({@link StoredUsers}):
 * one MGET of routing records (one round trip; one hash slot on Redis
 * Cluster), and a second for profiles when `profile` is set. Throws if Redis fails.
 */
export async function readStoredUsers(redis: Redis, shard: number, userIds: readonly string[], o: { profile?: boolean } = {}): Promise<StoredUsers> {
  if (userIds.length === 0) return new StoredUsers([], [], null);
  const [raw, profiles] = await Promise.all([
    redis.mgetBuffer(userIds.map((u) => userKey(shard, u))),
    o.profile ? redis.mgetBuffer(userIds.map((u) => profileKey(shard, u))) : null,
  ]);
  return new StoredUsers(userIds, raw, profiles);
}

/**
 * Reads the users `userIds`, all of one shard ({@link readStoredUsers}), decoded.
 * Returns them in input order; a missing user is `null`. Throws if Redis
 * fails or a record is not valid msgpack.
 */
export async function readUsers(redis: Redis, shard: number, userIds: readonly string[], o: { profile?: boolean } = {}): Promise<(UserRecord | null)[]> {
  return (await readStoredUsers(redis, shard, userIds, o)).all();
}

/**
 * Writes (replaces) users: routing record, profile, shard index and
 * last-activity hash, in one pipeline (on a cluster, one round trip per
 * node: {@link pipelineOf}). The shard of each is derived from its id with
 * `shards`. Throws on the first Redis error.
 */
export async function writeUsers(redis: Redis, shards: number, users: readonly UserRecord[]): Promise<void> {
  const p = pipelineOf(redis);
  for (const u of users) {
    const s = shardOf(u.id, shards);
    p.set(userKey(s, u.id), encodePlain(toRouting(u)));
    p.set(profileKey(s, u.id), encodePlain({ ...(u.email ? { email: u.email } : {}), ...(u.phone ? { phone: u.phone } : {}), ...(u.attributes ? { attributes: u.attributes } : {}) }));
    p.zadd(userIndexKey(s), 0, u.id);
    p.hset(lastActiveKey(s), u.id, u.lastActive ?? 0);
    // Who holds a number: an inbound SMS keyword from it is logged in each holder's consent log.
    if (u.phone) p.sadd(phoneUsersKey(u.phone), u.id);
  }
  const res = await p.exec();
  const failed = res?.find(([err]) => err);
  if (failed?.[0]) throw failed[0];
}

/** Reads one user by id (with profile), or null. */
export async function getUser(redis: Redis, shards: number, userId: string): Promise<UserRecord | null> {
  const [u] = await readUsers(redis, shardOf(userId, shards), [userId], { profile: true });
  return u ?? null;
}

/** A change to a user's choices: global opt-out, marketing opt-out, time zone, quiet hours and/or per category, per channel switches. */
export interface PreferencePatch {
  optedOut?: boolean;
  marketingOptOut?: boolean;
  /** IANA time zone of the user's quiet hours. */
  timezone?: string;
  /** The user's quiet hours ("HH:MM" local), or null to clear them. */
  quietHours?: { start: string; end: string } | null;
  categories?: NonNullable<Preferences["categories"]>;
}

/**
 * Applies `patch` to a user's record atomically and appends it, with who made it (`by`), to the user's consent log in
 * the same script (lib/infra/scripts/updatePreferences-3.lua); then announces the change on `nfx.dir.changed.<shard>`
 * so caches drop the user. Returns the updated record, or null when the user does not exist (nothing changes then).
 */
export async function updatePreferences(redis: Redis, nc: NatsConnection, shards: number, userId: string, patch: PreferencePatch, by: ConsentActor = { via: "system" }): Promise<UserRecord | null> {
  const shard = shardOf(userId, shards);
  // The Buffer variant: the script replies with the record, binary msgpack.
  const q = patch.quietHours;
  const change = { ...patch, ...(q !== undefined ? { quietHours: q === null ? null : [parseHhmm(q.start), parseHhmm(q.end)] } : {}) };
  const now = Date.now();
  const entry: ConsentLogEntry = { at: now, via: by.via, ...(by.name ? { by: by.name } : {}), change: { ...patch } };
  const out = await withScripts(redis).nfxUpdatePreferencesBuffer(userKey(shard, userId), changedKey(shard), consentLogKey(shard, userId), JSON.stringify(change), String(now), userId, JSON.stringify(entry));
  if (out === null) return null;
  nc.publish(dirChangedSubject(shard), encodeJson({ user: userId, fields: Object.keys(patch) }));
  return fromStored(userId, out, null);
}

/** A user's consent log, oldest first (every preference change, with when, through what and by whom). */
export async function consentLog(redis: Redis, shards: number, userId: string): Promise<ConsentLogEntry[]> {
  return (await redis.lrange(consentLogKey(shardOf(userId, shards), userId), 0, -1)).map((j) => JSON.parse(j) as ConsentLogEntry);
}

/**
 * Removes a device whose token the provider reported gone (APNs 410, FCM
 * UNREGISTERED), atomically and only if the device still holds that token
 * (lib/infra/scripts/removeDevice-1.lua),
 * then announces it on `nfx.dir.changed.<shard>`. Resolves true if a device
 * was removed.
 */
export async function removeDeadToken(redis: Redis, nc: NatsConnection, shards: number, userId: string, deviceId: string, token: string): Promise<boolean> {
  const shard = shardOf(userId, shards);
  const n = Number(await withScripts(redis).nfxRemoveDevice(userKey(shard, userId), deviceId, token));
  if (n > 0) nc.publish(dirChangedSubject(shard), encodeJson({ user: userId, fields: ["devices"] }));
  return n > 0;
}
