// Campaign records and cursors in JetStream KV, their state machine (pause, resume, cancel) and the status view.
import type { KV } from "@nats-io/kv";

import { decodeJson, encodeJson } from "../core/codec.js";
import { CampaignStateConflict, NotFound } from "../core/errors.js";
import { CAMPAIGN_KEY } from "../core/subjects.js";
import type { NotificationBrief } from "../core/types.js";
import { type Counters, outstanding, readCounters } from "./counters.js";

export type CampaignState = "running" | "paused" | "cancelled" | "expanded";
export type CampaignAction = "pause" | "resume" | "cancel";

/** A campaign: a segment notification being expanded shard by shard. Key: the notification id. */
export interface CampaignRecord {
  id: string;
  segment: string;
  state: CampaignState;
  createdAt: number;
  /** Membership rule's reference time: "active within N days" of this instant. */
  asOf: number;
  /** Expansion limit, users per second (0 = none). */
  rate: number;
  shards: number;
  /** Users listed by the segment's per-shard sets when the campaign started (before any rule filter). */
  total: number;
  brief: NotificationBrief;
  filter?: { activeSince: number };
  /** Set when the notification is a broadcast: stored once and merged into inboxes when read (lib/inapp/broadcasts.ts); nothing is expanded. */
  path?: DeliveryPath;
  updatedAt: number;
}

/** How a notification reaches its recipients: a send per recipient decided by the shard actors (`write`), or one broadcast merged into inboxes when read (`read`). */
export type DeliveryPath = "write" | "read";

/**
 * Where a shard's expansion is: chunk `chunk` covers ids in (after, to];
 * `to` set means that chunk is planned and may or may not be published (a
 * resume republishes exactly that range, under the same message id); null
 * means the next chunk starts after `after`.
 */
export interface Cursor {
  chunk: number;
  after: string | null;
  to: string | null;
  done: boolean;
  /** Ids listed so far in this shard. */
  scanned: number;
  /** Of those, ids that passed the segment's rule and went out in chunks. */
  members?: number;
  /** Admission control on this shard's expansion: ms held back in total, the least factor applied, and when last (lib/flow/admission.ts). */
  throttle?: Throttled;
}

/** How much a campaign's expansion was held back by admission control. */
export interface Throttled {
  /** Expansion time held back, ms (summed over the shards expanded in parallel). */
  ms: number;
  /** The least admission factor applied (1 = never throttled). */
  min: number;
  /** When it was last held back (epoch ms). */
  at: number;
}

/** `t` with one more wait of `ms` at factor `factor` at time `at`. */
export const addThrottle = (t: Throttled | undefined, ms: number, factor: number, at: number): Throttled => ({ ms: (t?.ms ?? 0) + ms, min: Math.min(t?.min ?? 1, factor), at });

export const NEW_CURSOR: Cursor = { chunk: 0, after: null, to: null, done: false, scanned: 0 };

const NEXT: Record<CampaignAction, Partial<Record<CampaignState, CampaignState>>> = {
  pause: { running: "paused" },
  resume: { paused: "running" },
  cancel: { running: "cancelled", paused: "cancelled", expanded: "cancelled" },
};

export interface CampaignStatus {
  id: string;
  segment: string;
  state: CampaignState;
  createdAt: number;
  rate: number;
  total: number;
  scanned: number;
  /** Listed ids that passed the segment's rule (the recipients to decide). */
  members: number;
  chunks: number;
  shardsDone: number;
  shards: number;
  counters: Counters;
  /** Admission control's hold on the expansion over all shards; null when it never held it back. */
  throttle: Throttled | null;
  /** Expanded (or cancelled) and every queued send finished. */
  complete: boolean;
  /** Fan-out on write (expanded, decided per recipient) or on read (a broadcast: `total` is the audience listed when it was stored). */
  path: DeliveryPath;
  /** Local-time delivery of the notification, if any (its waves are in `counters.waves`). */
  deliverAt?: { localTime: number; windowMin: number };
}

/** Campaign records and cursors (bucket nfx-campaigns) plus the tracker's counters (nfx-counters). */
export class Campaigns {
  constructor(readonly kv: KV, private readonly counters: KV, private readonly now: () => number = Date.now) {}

  /** The record and its KV revision, or null. */
  async get(id: string): Promise<{ rec: CampaignRecord; rev: number } | null> {
    if (!/^[A-Za-z0-9_-]{1,128}$/.test(id)) return null;
    const e = await this.kv.get(CAMPAIGN_KEY.record(id));
    return e && e.operation === "PUT" ? { rec: decodeJson<CampaignRecord>(e.value), rev: e.revision } : null;
  }

  /** Creates the record unless it exists; resolves the stored one either way (a redelivered intake message finds the first). */
  async create(rec: CampaignRecord): Promise<CampaignRecord> {
    try {
      await this.kv.create(CAMPAIGN_KEY.record(rec.id), encodeJson(rec));
      return rec;
    } catch {
      const got = await this.get(rec.id);
      if (!got) throw new Error(`campaign ${rec.id}: create failed and no record found`);
      return got.rec;
    }
  }

  /** Writes a new state with compare-and-set; `expanded` is the campaign actor's, the others are operators'. */
  async setState(id: string, state: CampaignState, expect?: CampaignState): Promise<CampaignRecord> {
    for (;;) {
      const got = await this.get(id);
      if (!got) throw new NotFound(`campaign ${id} not found`, { field: "id" });
      if (expect && got.rec.state !== expect) return got.rec;
      const rec = { ...got.rec, state, updatedAt: this.now() };
      try {
        await this.kv.update(CAMPAIGN_KEY.record(id), encodeJson(rec), got.rev);
        return rec;
      } catch {
        /* raced with another writer: read again */
      }
    }
  }

  /**
   * Applies an operator action. Throws {@link NotFound} or
   * {@link CampaignStateConflict} naming the current state when the action does
   * not apply (resume a running campaign, cancel a cancelled one).
   */
  async control(id: string, action: CampaignAction): Promise<CampaignRecord> {
    for (;;) {
      const got = await this.get(id);
      if (!got) throw new NotFound(`campaign ${id} not found`, { field: "id" });
      const to = NEXT[action][got.rec.state];
      if (!to) throw new CampaignStateConflict(`action: cannot ${action} a campaign that is ${got.rec.state}`, { field: "action" });
      const rec = { ...got.rec, state: to, updatedAt: this.now() };
      try {
        await this.kv.update(CAMPAIGN_KEY.record(id), encodeJson(rec), got.rev);
        return rec;
      } catch {
        /* raced: read again */
      }
    }
  }

  /** A shard's cursor and its revision (0 when none was written yet). */
  async cursor(id: string, shard: number): Promise<{ cur: Cursor; rev: number }> {
    const e = await this.kv.get(CAMPAIGN_KEY.cursor(id, shard));
    return e && e.operation === "PUT" ? { cur: decodeJson<Cursor>(e.value), rev: e.revision } : { cur: NEW_CURSOR, rev: 0 };
  }

  /** Writes a cursor only if it is still at `rev` (0 = not written yet): a stale owner's write fails. Returns the new revision. */
  async writeCursor(id: string, shard: number, cur: Cursor, rev: number): Promise<number> {
    const k = CAMPAIGN_KEY.cursor(id, shard);
    return rev === 0 ? this.kv.create(k, encodeJson(cur)) : this.kv.update(k, encodeJson(cur), rev);
  }

  /** Campaign ids, newest first (ids are time-ordered), at most `limit`. */
  async list(limit = 20): Promise<string[]> {
    const ids: string[] = [];
    for await (const k of await this.kv.keys()) if (!k.includes(".")) ids.push(k);
    return ids.sort().reverse().slice(0, limit);
  }

  /** The status view: record, expansion progress from the cursors, delivery counters from the tracker. */
  async status(id: string): Promise<CampaignStatus> {
    const got = await this.get(id);
    if (!got) throw new NotFound(`campaign ${id} not found`, { field: "id" });
    const { rec } = got;
    const cursors = await Promise.all(Array.from({ length: rec.shards }, (_, s) => this.cursor(id, s)));
    const counters = await readCounters(this.counters, id);
    const ended = rec.state === "expanded" || rec.state === "cancelled";
    const members = cursors.reduce((a, c) => a + (c.cur.members ?? 0), 0);
    // A campaign's accepted recipients are the segment members found so far (a broadcast's: its audience when stored).
    counters.accepted = Math.max(counters.accepted, members, rec.path === "read" ? rec.total : 0);
    return {
      id, segment: rec.segment, state: rec.state, createdAt: rec.createdAt, rate: rec.rate, total: rec.total,
      scanned: cursors.reduce((a, c) => a + c.cur.scanned, 0),
      members,
      chunks: cursors.reduce((a, c) => a + c.cur.chunk + (c.cur.to !== null ? 1 : 0), 0),
      shardsDone: cursors.filter((c) => c.cur.done).length,
      shards: rec.shards,
      counters,
      throttle: cursors.reduce<Throttled | null>((a, c) => (c.cur.throttle ? { ms: (a?.ms ?? 0) + c.cur.throttle.ms, min: Math.min(a?.min ?? 1, c.cur.throttle.min), at: Math.max(a?.at ?? 0, c.cur.throttle.at) } : a), null),
      // Complete once expanded and the counters have caught up: every member decided (a lagging tracker can show 0 outstanding early) and nothing outstanding.
      complete: ended && counters.decided >= members && outstanding(counters) === 0,
      path: rec.path ?? "write",
      ...(rec.brief.deliverAt ? { deliverAt: rec.brief.deliverAt } : {}),
    };
  }
}
