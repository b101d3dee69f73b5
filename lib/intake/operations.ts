// Operations both API surfaces offer besides notify: campaign control and preference updates, with their validation.
import type { NatsConnection } from "@nats-io/transport-node";

import type { CampaignRecord, Campaigns, CampaignStatus } from "../campaign/campaigns.js";
import type { Config } from "../core/config.js";
import { CategoryUnknown, NotFound, RequestInvalid } from "../core/errors.js";
import { ownValue } from "../core/own-keys.js";
import { parseWith, preferencesSchema } from "../core/request-schema.js";
import { ID_PATTERN } from "../core/subjects.js";
import type { ConsentActor, UserRecord } from "../core/types.js";
import { updatePreferences } from "../directory/directory.js";
import type { Redis } from "../infra/redis.js";

const ACTIONS = ["pause", "resume", "cancel", "status"] as const;
export type CampaignOp = (typeof ACTIONS)[number];

/**
 * Runs a campaign action: `status` reads, the others change state (see
 * lib/campaign/campaigns.ts for which transitions are allowed). Throws
 * {@link RequestInvalid} for an unknown action, NotFound / CampaignStateConflict otherwise.
 */
export async function campaignOp(campaigns: Campaigns, id: string, action: string): Promise<CampaignStatus | CampaignRecord> {
  if (!(ACTIONS as readonly string[]).includes(action)) throw new RequestInvalid(`action: must be one of ${ACTIONS.join(", ")}`, { field: "action" });
  if (action === "status") return campaigns.status(id);
  const rec = await campaigns.control(id, action as Exclude<CampaignOp, "status">);
  const { brief: _brief, ...view } = rec;
  return view as CampaignRecord;
}

/**
 * Validates and applies a preference update for `userId`, announcing it on
 * the directory change subject and logging it in the user's consent log as made by `by`. Unknown categories are refused with
 * {@link CategoryUnknown}; an unknown user with {@link NotFound}.
 */
export async function preferencesOp(cfg: Config, redis: Redis, nc: NatsConnection, userId: string, body: unknown, by: ConsentActor): Promise<UserRecord> {
  if (!ID_PATTERN.test(userId)) throw new RequestInvalid("user: must be a user id", { field: "user" });
  const patch = parseWith(preferencesSchema, body);
  for (const cat of Object.keys(patch.categories ?? {})) {
    if (!ownValue(cfg.categories, cat)) throw new CategoryUnknown(`categories.${cat}: unknown category`, { field: `categories.${cat}` });
  }
  const u = await updatePreferences(redis, nc, cfg.cluster.shards, userId, patch, by);
  if (!u) throw new NotFound(`user ${userId} not found`, { field: "user" });
  return u;
}
