// One source for priorities, channels, KV keys and message ids: the config schema's enums are lib/core/subjects.ts's constants, and the builders keep their forms.
import { createHash } from "node:crypto";

import t from "tap";
import type { z } from "zod";

import { configSchema } from "../../config/schema.js";
import {
  CAMPAIGN_KEY, CHANNELS, checkpointKey, checkpointPartKey, checkpointPartsOf, CONTENT_CHANNELS, COUNTERS_KEY, idempotencyKvKey, LEASE_KEY, legacyCheckpointKey, MSGID, PRIORITIES, PROCESS_KEY, REPORTED_CHANNELS,
templateKey,
} from "../../lib/core/subjects.js";
import { userRecordSchema } from "../../lib/directory/users.js";
import { NATS_PRODUCER } from "../../lib/intake/intake.js";
import { eventsSchema } from "../../lib/tracking/engagement.js";

type Any = z.ZodType & { def: Record<string, unknown> };
/** Peels defaults, prefaults, optionals and descriptions off a schema. */
const bare = (s: unknown): Any => {
  let x = s as Any;
  while (x.def.innerType) x = x.def.innerType as Any;
  return x;
};
const field = (s: unknown, ...path: string[]): Any => path.reduce<Any>((x, k) => bare((bare(x) as unknown as { shape: Record<string, unknown> }).shape[k]), bare(s));
const options = (s: unknown): unknown[] => (bare(s) as unknown as { options: unknown[] }).options;
const element = (s: unknown): Any => bare((bare(s) as unknown as { element: unknown }).element);

t.test("the config schema's priorities and channels are the constants", async (t) => {
  const category = bare((field(configSchema, "categories") as unknown as { valueType: unknown }).valueType);
  t.same(options(field(category, "defaultPriority")), PRIORITIES, "categories.*.defaultPriority");
  const apiKey = element(field(configSchema, "apiKeys"));
  t.same(options(element(field(apiKey, "priorities"))), PRIORITIES, "apiKeys[].priorities");
  t.same(options(element(field(configSchema, "ingest", "channels"))), CONTENT_CHANNELS, "ingest.channels");
  const fallback = field(configSchema, "policy", "fallback") as unknown as { shape: Record<string, unknown> };
  t.same(Object.keys(fallback.shape), PRIORITIES, "policy.fallback has one key per priority, in order");
  for (const p of PRIORITIES) t.same(options(element(fallback.shape[p])), CONTENT_CHANNELS, `policy.fallback.${p}`);
  const parsed = configSchema.parse({ apiKeys: [{ name: "k", key: "0123456789abcdef", scopes: ["send"] }] });
  t.same(parsed.apiKeys[0].priorities, PRIORITIES, "an API key may send every priority by default");
});

t.test("request and record schemas use the same constants", async (t) => {
  const event = element(field(eventsSchema, "events"));
  t.same(options(field(event, "channel")), REPORTED_CHANNELS, "events[].channel");
  t.same(REPORTED_CHANNELS, ["push", ...CHANNELS]);
  const prefs = field(userRecordSchema, "preferences", "categories") as unknown as { valueType: unknown };
  t.same(options((bare(prefs.valueType) as unknown as { keyType: unknown }).keyType), CONTENT_CHANNELS, "preferences.categories.*");
  t.same(NATS_PRODUCER.priorities, PRIORITIES, "NATS producers may send every priority");
});

t.test("KV keys and message ids keep their forms", async (t) => {
  t.equal(templateKey("welcome"), "welcome");
  t.equal(CAMPAIGN_KEY.record("c1"), "c1");
  t.equal(CAMPAIGN_KEY.cursor("c1", 7), "c1.c.7");
  t.equal(CAMPAIGN_KEY.records, "*");
  t.equal(COUNTERS_KEY.notification("n1"), "n1");
  t.equal(COUNTERS_KEY.totals, "_totals.channels");
  t.equal(PROCESS_KEY.of("web-1.example.com", 42), "p.web-1_example_com.42");
  t.equal(PROCESS_KEY.all, "p.>");
  t.equal(LEASE_KEY.campaign("c1"), "campaign.c1");
  t.equal(LEASE_KEY.shard("urgent", 3), "shard.urgent.3");
  t.equal(LEASE_KEY.member("bulk", "h-1-ab"), "member.bulk.h-1-ab");
  t.equal(checkpointKey("bulk", 3), "shard.bulk.3");
  t.equal(checkpointPartKey(checkpointKey("bulk", 3), "g1x2", 0), "shard.bulk.3.g1x2.0");
  t.equal(checkpointPartsOf(checkpointKey("urgent", 3), "g1x2"), "shard.urgent.3.g1x2.*");
  t.equal(legacyCheckpointKey(3), "shard.3");
  t.match(idempotencyKvKey("shop", "order-1"), /^[0-9a-f]{64}$/);
  t.equal(idempotencyKvKey("shop", "order-1"), createHash("sha256").update("shop\u0000order-1").digest("hex"), "sha256 of producer NUL key, as before");
  t.not(idempotencyKvKey("shop", "order-1"), idempotencyKvKey("shop2", "order-1"));
  t.equal(MSGID.receipts("engagement", "n1", "h"), "engagement:n1:h");
  t.equal(MSGID.held("abc"), "q:abc");
});
