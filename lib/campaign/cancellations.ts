// The set of cancelled campaigns, kept current from a KV watch: shard actors and gateways drop their queued work.
import type { KV } from "@nats-io/kv";

import { decodeJson } from "../core/codec.js";
import { CAMPAIGN_KEY } from "../core/subjects.js";
import type { CampaignRecord } from "./campaigns.js";

/** Live view of which campaign ids are cancelled. Changes arrive within milliseconds of the operator's cancel. */
export class Cancellations {
  private readonly cancelled = new Set<string>();
  private constructor(private readonly stopWatch: () => void) {}

  /** Starts watching the campaigns bucket (every record, then every change). */
  static async watch(kv: KV): Promise<Cancellations> {
    const w = await kv.watch({ key: CAMPAIGN_KEY.records });
    const c = new Cancellations(() => w.stop());
    void (async () => {
      for await (const e of w) {
        if (e.operation === "PUT" && decodeJson<CampaignRecord>(e.value).state === "cancelled") c.cancelled.add(e.key);
        else c.cancelled.delete(e.key);
      }
    })();
    return c;
  }

  has(id: string): boolean {
    return this.cancelled.has(id);
  }

  stop(): void {
    this.stopWatch();
  }
}
