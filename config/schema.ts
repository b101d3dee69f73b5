// The configuration schema with its defaults: every key nfx reads, validated at start-up, unknown keys rejected.
import { existsSync } from "node:fs";

import ipaddr from "ipaddr.js";
import { z } from "zod";

import { isPrototypeName, PROTOTYPE_NAME_RULE } from "../lib/core/own-keys.js";
import { CONTENT_CHANNELS, PRIORITIES } from "../lib/core/subjects.js";

const file = z.string().min(1).refine((p) => existsSync(p), { message: "file not found" });
const port = z.number().int().min(1).max(65535);
const host = z.string().min(1);
const hhmm = z.string().regex(/^([01][0-9]|2[0-3]):[0-5][0-9]$/, "must be a 24-hour HH:MM time");
const contentChannel = z.enum(CONTENT_CHANNELS);
/** True when `c` is an IPv4 or IPv6 network in CIDR form. */
const isCidr = (c: string): boolean => {
  try {
    ipaddr.parseCIDR(c);
    return true;
  } catch {
    return false;
  }
};
/** A Redis Cluster seed node: a redis:// or rediss:// URL with a host, on database 0 (the only one Redis Cluster has). */
const redisSeed = z
  .string()
  .regex(/^rediss?:\/\/[^\s/]+(\/0?)?$/, "must be a redis:// or rediss:// URL of a node (host:port, no database but /0)")
  .refine((u) => URL.canParse(u) && new URL(u).hostname !== "", "must name a host");

/**
 * API-key scopes, one per kind of operation: `send` (explicit recipients), `campaigns.create` (a segment
 * target), `campaigns.control` (pause, resume, cancel), `users.write` (user records and preferences),
 * `templates` (manage templates), `topics` (topics, their subscribers and webhook endpoints; publishing to a topic is `send`), `read` (status, delivery logs, overview, metrics targets, templates),
 * `events` (app-reported engagement) and `admin` (every scope).
 */
export const API_SCOPES = ["send", "campaigns.create", "campaigns.control", "users.write", "templates", "topics", "read", "events", "admin"] as const;
/** The published development default of `nats.secret`: a role refuses to start with it (lib/infra/secrets.ts). */
export const DEV_NATS_SECRET = "nfx-local-nats-secret-change-me-in-production";
/** The published development default of `ws.secret`: a role refuses to start with it (lib/infra/secrets.ts). */
export const DEV_WS_SECRET = "nfx-dev-ws-secret-change-me-in-production!";
/** The published development default of `engagement.secret`: a role refuses to start with it (lib/infra/secrets.ts). */
export const DEV_LINK_SECRET = "nfx-dev-link-secret-change-me-in-production";

/** What every provider app has: its name, bulkhead limits, circuit breaker and an optional failover app. */
const bulkhead = {
  concurrency: z.number().int().min(1).max(10000).describe("Requests in flight at once for this app (bulkhead)."),
  queueLimit: z.number().int().min(0).max(1_000_000).default(4096).describe("Requests waiting for a slot beyond which sends are pushed back (re-queued with a delay) rather than holding the batch."),
  ratePerSec: z.number().min(0).default(0).describe("The provider's quota for this app, sends per second (0 = none): the rate limit (GCRA, one second of burst)."),
  breaker: z
    .strictObject({
      failures: z.number().int().min(1).max(100_000).default(50).describe("Consecutive failed provider requests (429, 5xx, timeouts, resets; not a bad token) that open the breaker."),
      halfOpenAfterMs: z.number().int().min(100).max(3_600_000).default(10_000).describe("How long an open breaker stays open before one trial request (half-open) decides."),
    })
    .prefault({})
    .describe("This app's circuit breaker (cockatiel)."),
  failover: z.string().min(1).optional().describe("Name of another app of the same channel that takes this app's sends while its breaker is open or its queue is full."),
};

/** How many sends of one notification an APNs or FCM gateway takes through its bulkhead together (`how`: the SDK calls they make). */
const groupSize = (how: string) =>
  z
    .number()
    .int()
    .min(1)
    .max(500)
    .default(32)
    .describe(
      `Sends of one notification taken through this app's bulkhead together, ${how}: the gateway's work per request (bulkhead, records, metrics) is shared by the group. Counted as that many sends against \`concurrency\`, \`queueLimit\` and \`ratePerSec\`; \`breaker.failures\` counts failed sends (a group failing as a whole counts as its sends). 1 = one send at a time.`,
    );

const apnsApp = z.strictObject({
  name: z.string().min(1).optional().describe("Name used in logs, metrics and `failover`; the topic when absent."),
  topic: z.string().min(1).default("com.example.nfx").describe("APNs topic: the app's bundle id. Devices whose `app` is this topic or this app's name are sent through this app; others through the first app."),
  teamId: z.string().regex(/^[A-Z0-9]{10}$/, "must be a 10-character Apple team id").default("NFXTEAM001").describe("Apple developer team id (10 characters), the `iss` of the provider token."),
  keyId: z.string().regex(/^[A-Z0-9]{10}$/, "must be a 10-character APNs key id").default("NFXKEY0001").describe("Id of the APNs token-signing key (10 characters), the `kid` of the provider token."),
  keyFile: file.optional().describe("Path of the .p8 token-signing key; must exist. `nfx up` creates one for the sandbox when absent."),
  production: z.boolean().default(false).describe("Use APNs' production endpoint instead of its development one."),
  address: host.optional().describe("Override of the APNs host (e.g. 127.0.0.1 for the sandbox)."),
  port: port.optional().describe("Override of the APNs port."),
  caFile: file.optional().describe("PEM CA to trust for the APNs endpoint (the sandbox's certificate); must exist."),
  clientCount: z.number().int().min(1).max(64).default(2).describe("HTTP/2 sessions in this app's pool."),
  groupSize: groupSize("in one SDK call (`send(note, tokens)`: one HTTP/2 stream per token)"),
  ...bulkhead,
  concurrency: bulkhead.concurrency.default(256).describe("Sends in flight at once for this app (HTTP/2 streams; bulkhead)."),
});

const fcmApp = z.strictObject({
  name: z.string().min(1).optional().describe("Name used in logs, metrics and `failover`; the project id when absent."),
  projectId: z.string().regex(/^[a-z][a-z0-9-]{3,62}$/, "must be a Firebase project id").default("nfx-sandbox").describe("Firebase project id. Devices whose `app` is this id, this app's name or one of `packages` are sent through this app; others through the first app."),
  packages: z.array(z.string().min(1)).default([]).describe("Android package names whose devices this project serves (besides devices registered with the project id or name)."),
  serviceAccountFile: file.optional().describe("Service-account JSON for production; must exist. Absent: the static `sandboxToken` is used."),
  sandboxToken: z.string().min(1).default("nfx-sandbox-token").describe("Static OAuth bearer token sent when no `serviceAccountFile` is set (the sandbox accepts it)."),
  host: host.optional().describe("Override of fcm.googleapis.com: host dialled instead (the TLS name stays fcm.googleapis.com)."),
  port: port.optional().describe("Override of the FCM port."),
  caFile: file.optional().describe("PEM CA to trust for the FCM endpoint (the sandbox's certificate); must exist."),
  sockets: z.number().int().min(1).max(1024).default(64).describe("Keep-alive sockets in this app's pool."),
  groupSize: groupSize("one SDK `send` each (one HTTP request), made at once"),
  ...bulkhead,
  concurrency: bulkhead.concurrency.default(128).describe("Sends in flight at once for this app (HTTP requests; bulkhead)."),
});

const sendgridAccount = z.strictObject({
  name: z.string().min(1).default("sendgrid").describe("Name used in logs, metrics and `failover`. The first account sends; the others only as failovers."),
  apiKey: z.string().regex(/^SG\.\S+$/, "must be a SendGrid API key (SG.…)").default("SG.nfx-sandbox-key").describe("SendGrid API key (`SG.…`)."),
  from: z
    .strictObject({
      email: z.email("must be an email address").describe("Sender address."),
      name: z.string().optional().describe("Sender display name."),
    })
    .default({ email: "noreply@nfx.example", name: "nfx" })
    .describe("Sender of every email sent through this account."),
  baseUrl: z.url("must be a URL").optional().describe("Base URL override (e.g. http://127.0.0.1:8446/ for the sandbox); api.sendgrid.com when absent."),
  sockets: z.number().int().min(1).max(1024).default(32).describe("Keep-alive sockets in this account's pool."),
  ...bulkhead,
  concurrency: bulkhead.concurrency.default(16),
  batchSize: z.number().int().min(1).max(1000).default(1000).describe("Personalizations (recipients) per request; SendGrid allows 1000."),
});

const twilioAccount = z.strictObject({
  name: z.string().min(1).default("twilio").describe("Name used in logs, metrics and `failover`. The first account sends; the others only as failovers."),
  accountSid: z.string().regex(/^AC[0-9a-f]{32}$/, "must be a Twilio account SID (AC + 32 hex)").default("AC00000000000000000000000000000000").describe("Twilio account SID (`AC` + 32 hex)."),
  authToken: z.string().min(1).default("nfx-sandbox-token").describe("Twilio auth token: authenticates requests and verifies `X-Twilio-Signature` on status callbacks."),
  from: z.string().regex(/^(\+[1-9][0-9]{6,14}|MG[0-9a-f]{32})$/, "must be an E.164 number or a messaging service SID").default("+15550000000").describe("Sender: an E.164 phone number, or a messaging service SID (`MG…`)."),
  baseUrl: z.url("must be a URL").optional().describe("Base URL override (e.g. http://127.0.0.1:8447 for the sandbox); https://api.twilio.com when absent."),
  sockets: z.number().int().min(1).max(1024).default(64).describe("Keep-alive sockets in this account's pool."),
  ...bulkhead,
  concurrency: bulkhead.concurrency.default(64),
});

/** A channel's provider apps: at least one; names must be unique and failovers must name another app. */
function appsOf<T extends z.ZodType<{ name?: string; failover?: string }>>(app: T, naming: (a: z.output<T>) => string) {
  return z
    .array(app)
    .min(1)
    .superRefine((apps, ctx) => {
      const names = apps.map((a) => a.name ?? naming(a));
      names.forEach((n, i) => {
        if (names.indexOf(n) !== i) ctx.addIssue({ code: "custom", path: [i, "name"], message: `must be unique (${n} is used twice)` });
        const f = apps[i].failover;
        if (f !== undefined && (f === n || !names.includes(f))) ctx.addIssue({ code: "custom", path: [i, "failover"], message: `must name another app of this channel (got ${f})` });
      });
    });
}

/** One channel's gateway section: its provider apps (by default one app of the app schema's defaults), described. */
function gatewayOf<T extends z.ZodType<{ name?: string; failover?: string }>>(app: T, naming: (a: z.output<T>) => string, apps: string, what: string, batches?: { default: number; why: string }) {
  const batchConcurrency = z
    .number()
    .int()
    .min(1)
    .max(64)
    .describe(`Send batches of this channel processed at once per gateway process and lane${batches ? `: ${batches.why}` : "; absent: `gateways.batchConcurrency`"}.`);
  return z
    .strictObject({
      apps: appsOf(app, naming).default([app.parse({})]).describe(apps),
      batchConcurrency: batches ? batchConcurrency.default(batches.default) : batchConcurrency.optional(),
    })
    .prefault({})
    .describe(what);
}

const retry = z
  .strictObject({
    maxAttempts: z.number().int().min(1).max(50).default(5).describe("Provider attempts per send before it goes to the dead-letter stream `NFX_DLQ`."),
    baseMs: z.number().int().min(10).max(600_000).default(1000).describe("First backoff; doubles per attempt up to `maxMs`, jittered to half-to-all of it; never sooner than the provider's Retry-After."),
    maxMs: z.number().int().min(100).max(3_600_000).default(300_000).describe("Longest backoff between two attempts."),
    quotaMs: z.number().int().min(0).max(3_600_000).default(60_000).describe("Least wait after FCM QUOTA_EXCEEDED (Google asks for at least a minute)."),
  })
  .prefault({})
  .describe("Retries of retryable provider failures (429, 5xx, timeouts, resets) through `NFX_RETRY`.");

/** The whole configuration. `z.infer` of it is {@link Config}. Every key carries a `.describe()` text: docs/configuration.md is generated from them (`npm run docs:config`). */
export const configSchema = z.strictObject({
  cluster: z
    .strictObject({
      shards: z.number().int().min(1).max(4096).default(64).describe("Number of user shards P (`shard = FNV-1a(user id) mod P`). Fixed when a cluster is created; never change it under a running cluster."),
    })
    .prefault({})
    .describe("The cluster's fixed shape."),
  nats: z
    .strictObject({
      servers: z.array(z.string().regex(/^(nats|tls):\/\/[^\s]+$/, "must be a nats:// or tls:// URL")).min(1).default(["nats://127.0.0.1:4222"]).describe("nats-server URLs (`nats://` or `tls://`)."),
      secret: z
        .string()
        .min(32, "must be at least 32 characters")
        .default(DEV_NATS_SECRET)
        .describe(
          "Secret every nfx NATS user's password is derived from (one user per role, `nfx-admin` for the CLI, and each producer); `nfx nats-conf` renders nats-server's config from it. At least 32 characters. Must be set: roles refuse the published default outside `nfx up` and the tests.",
        ),
      producers: z
        .array(z.string().regex(/^[a-z][a-z0-9_-]{0,63}$/, "must be 1-64 characters of a-z 0-9 _ - starting with a letter"))
        .default(["producer"])
        .describe("Producer users of the PRODUCERS account (`nfx nats-password <name>` prints each one's password); see docs/security.md."),
    })
    .prefault({})
    .describe("Connection to NATS JetStream and the NATS users."),
  redis: z
    .strictObject({
      url: z.string().regex(/^rediss?:\/\/[^\s]+$/, "must be a redis:// or rediss:// URL").default("redis://127.0.0.1:6379").describe("URL of the Redis holding the user directory, presence, inboxes and delivery keys (a single redis-server; ignored when `redis.cluster` is set)."),
      cluster: z
        .array(redisSeed)
        .max(64)
        .default([])
        .superRefine((seeds, ctx) => {
          // One client, one set of credentials and one transport for every node of the cluster.
          const id = (u: string): string => {
            const x = new URL(u);
            return `${x.protocol}//${x.username}:${x.password}`;
          };
          seeds.forEach((u, i) => {
            if (i > 0 && id(u) !== id(seeds[0])) ctx.addIssue({ code: "custom", path: [i], message: "every seed node must use the scheme (redis:// or rediss://) and credentials of the first" });
          });
        })
        .describe(
          "Seed nodes of a Redis Cluster (`redis://host:port`, a few of its nodes; the client discovers the rest). When non-empty, every role uses a cluster client and `redis.url` is ignored. Every command nfx sends touches one hash slot (docs/directory.md, \"Redis Cluster\").",
        ),
    })
    .prefault({})
    .describe("Connection to Redis: one redis-server (`redis.url`) or a Redis Cluster (`redis.cluster`)."),
  log: z
    .strictObject({
      level: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info").describe("pino log level."),
      redact: z.boolean().default(true).describe("Redact device tokens, emails, phones, titles and bodies in logs. Turn off only on a developer machine."),
    })
    .prefault({})
    .describe("Logging (pino, one line of JSON per event)."),
  streams: z
    .strictObject({
      replicas: z.number().int().min(1).max(5).default(1).describe("JetStream replicas of every stream and KV bucket (3 on a nats-server cluster)."),
      storage: z.enum(["file", "memory"]).default("file").describe("JetStream storage of every stream and KV bucket."),
      retentionHours: z.number().min(1).max(24 * 365).default(7 * 24).describe("How long accepted requests and receipts are kept (status and replay read them)."),
      duplicateWindowSec: z.number().int().min(10).max(86400).default(1200).describe("JetStream duplicate window: replays of a batch within it are dropped by message id."),
      ackWaitSec: z.number().int().min(5).max(3600).default(60).describe("Seconds a consumer waits for an ack before redelivering (every consumer but the gateways' send lanes: gateways.ackWaitSec)."),
    })
    .prefault({})
    .describe("JetStream streams, applied by `nfx init`."),
  categories: z
    .record(
      z.string().regex(/^[a-z][a-z0-9_-]{0,63}$/, "category names are 1-64 characters of a-z 0-9 _ -").refine((k) => !isPrototypeName(k), PROTOTYPE_NAME_RULE),
      z.strictObject({
        description: z.string().optional().describe("What the category is for (shown to operators only)."),
        defaultPriority: z.enum(PRIORITIES).default("normal").describe("Priority used when a request names none."),
        cap: z
          .strictObject({
            count: z.number().int().min(1).max(1_000_000).describe("Sends allowed per period."),
            periodSec: z.number().int().min(1).max(30 * 86400).describe("The period, in seconds."),
          })
          .optional()
          .describe("Frequency cap per user: at most `count` sends per `periodSec` (token bucket) on normal and bulk sends; critical and high skip it (docs/priorities.md). Absent: uncapped."),
        commercial: z
          .boolean()
          .default(false)
          .describe("Commercial (marketing) messages: need the recipient's consent, carry a one-click unsubscribe (email `List-Unsubscribe`), can be switched off on the preference page, and stop for a user who stopped all marketing. False: transactional (receipts, security codes), always on (docs/consent.md)."),
        presenceRouting: z.boolean().default(false).describe("While the user is online (in-app presence), deliver in-app instead of push."),
        digest: z
          .strictObject({
            windowSec: z.number().int().min(1).max(7 * 86400).default(600).describe("Fixed window: the digest is sent this long after its first notification."),
            quietSec: z.number().int().min(1).max(86400).optional().describe("Quiet-period window instead: sent once no notification came for this long (but at most `maxSec` after the first)."),
            maxSec: z.number().int().min(1).max(7 * 86400).default(3600).describe("Longest a quiet-period digest waits after its first notification."),
            maxItems: z.number().int().min(1).max(1000).default(50).describe("Notifications listed in one digest (the count includes the rest)."),
          })
          .optional()
          .describe("Gather this category's notifications per recipient into a digest (key: the category, or the request's `digest.key`) sent when the window closes; critical ones are never held (docs/architecture.md#digests). Absent: no digest unless a request asks."),
        quietHours: z.boolean().default(true).describe("Respect users' quiet hours (critical notifications never do)."),
        overload: z
          .enum(["delay", "shed"])
          .default("delay")
          .describe(
            "What happens to normal and bulk sends that cannot go out in time: `delay` sends them late, until the notification expires (then `suppressed`/`failed` with reason `expired`); `shed` drops them with outcome `shed` (reason `max_delay` or `expired`), counted and shown like every outcome. Critical and high sends are never shed.",
          ),
        maxDelaySec: z
          .number()
          .int()
          .min(1)
          .max(30 * 86400)
          .optional()
          .describe("With `overload: \"shed\"` only: seconds after acceptance (or after the end of the quiet hours a recipient waited for) past which a normal or bulk send is shed with reason `max_delay`. Absent: shed only at expiry. Refused with `overload: \"delay\"`, where it would do nothing."),
      }).superRefine((c, ctx) => {
        if (c.maxDelaySec !== undefined && c.overload !== "shed") ctx.addIssue({ code: "custom", path: ["maxDelaySec"], message: "only meaningful with overload \"shed\"" });
      }),
    )
    .default({
      transactional: { defaultPriority: "high", commercial: false, presenceRouting: false, quietHours: false, overload: "delay" },
      security: { defaultPriority: "critical", commercial: false, presenceRouting: false, quietHours: false, overload: "delay" },
      social: { defaultPriority: "normal", commercial: false, presenceRouting: true, quietHours: true, overload: "delay" },
      marketing: { defaultPriority: "bulk", cap: { count: 3, periodSec: 86400 }, commercial: true, presenceRouting: false, quietHours: true, overload: "delay" },
    })
    .describe("Categories producers may use, by name (1-64 characters of a-z 0-9 _ -, never an `Object.prototype` member name); a request naming any other is refused. Setting this key replaces the default four."),
  ingest: z
    .strictObject({
      maxBodyBytes: z.number().int().min(1024).max(16 * 1048576).default(1048576).describe("Largest request body accepted on either surface (413 beyond it)."),
      maxJsonDepth: z.number().int().min(4).max(1000).default(32).describe("Deepest nesting of arrays/objects in a request body (checked before parsing, both surfaces)."),
      maxSendAheadDays: z.number().min(0).max(365).default(30).describe("How far ahead `sendAt` may be."),
      maxSendBehindSec: z.number().int().min(0).max(86400).default(300).describe("How far in the past `sendAt` may be (clock skew, queueing); it is then sent at once. Older ones are refused."),
      maxExpiresAheadDays: z.number().min(1).max(3650).default(60).describe("How far ahead an explicit `expiresAt` may be."),
      channels: z.array(contentChannel).min(1).default(["push"]).describe("Content channels that have gateways in this cluster; requests wanting others are refused, and the shard actor routes only to these."),
    })
    .prefault({})
    .describe("Request validation limits of the ingest role (NATS and HTTP alike)."),
  http: z
    .strictObject({
      enabled: z.boolean().default(true).describe("Serve the HTTP API from the ingest role."),
      host: z.string().min(1).default("127.0.0.1").describe("Address the HTTP API listens on."),
      port: z.number().int().min(0).max(65535).default(8080).describe("Port of the HTTP API; 0 picks a free one."),
      apiKeys: z
        .never({ error: "moved to the top-level apiKeys (each key lists its scopes; admin: true became scopes: [\"admin\"])" })
        .optional()
        .describe("Moved: API keys are the top-level `apiKeys` now (they serve HTTP and `nfx.ext.api.*` alike). Refused with that instruction."),
    })
    .prefault({})
    .describe("The HTTP API (in the ingest role)."),
  apiKeys: z
    .array(
      z.strictObject({
        name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, "must be 1-64 characters of A-Z a-z 0-9 _ . -").describe("The key's name: in logs, error messages and as the producer of idempotency keys."),
        key: z.string().min(16, "must be at least 16 characters").describe("The secret itself, at least 16 characters: `Authorization: Bearer <key>` over HTTP, `Nfx-Api-Key: <key>` over NATS."),
        scopes: z.array(z.enum(API_SCOPES)).min(1).describe("The operations this key may call; `admin` holds every scope (see docs/api.md)."),
        categories: z.array(z.string().min(1)).min(1).default(["*"]).describe("Categories this key may send; [\"*\"] for all."),
        priorities: z.array(z.enum(PRIORITIES)).min(1).default([...PRIORITIES]).describe("Priorities this key may send."),
        admin: z
          .never({ error: "replaced by scopes: admin: true is scopes: [\"admin\"]; a key without it lists what it may do, e.g. [\"send\",\"read\"]" })
          .optional()
          .describe("Replaced by scopes (`admin: true` is `scopes: [\"admin\"]`). Refused with that instruction."),
      }),
    )
    .superRefine((keys, ctx) => {
      const names = new Set<string>();
      const secrets = new Set<string>();
      keys.forEach((k, i) => {
        if (names.has(k.name)) ctx.addIssue({ code: "custom", path: [i, "name"], message: `duplicate key name ${k.name}` });
        if (secrets.has(k.key)) ctx.addIssue({ code: "custom", path: [i, "key"], message: "the same key is configured twice" });
        names.add(k.name);
        secrets.add(k.key);
      });
    })
    .default([])
    .describe(
      "API keys, for HTTP and the external NATS family `nfx.ext.api.*` alike; none means every such request is refused with 401 (a local cluster adds a development key with `admin`). Each key lists the scopes it holds; `categories` and `priorities` further limit what `send` and `campaigns.create` may submit. Names and keys must be unique.",
    ),
  campaign: z
    .strictObject({
      chunkSize: z.number().int().min(1).max(10_000).default(10_000).describe("Users per campaign chunk (one shard's slice); at most 10,000."),
      shardConcurrency: z.number().int().min(1).max(256).default(8).describe("Shards a campaign expands at once."),
      defaultRate: z.number().min(0).default(0).describe("Default expansion limit, users per second (0 = none); a request's `campaign.rate` overrides it."),
      leaseMs: z.number().int().min(500).max(60_000).default(3000).describe("Campaign ownership lease; an owner that dies is replaced within about this long."),
    })
    .prefault({})
    .describe("The campaign actor: segment expansion."),
  router: z
    .strictObject({
      chunkSize: z.number().int().min(1).max(10000).default(1000).describe("Recipients per fan chunk message (one shard's slice of one notification)."),
    })
    .prefault({})
    .describe("The router: explicit recipient lists split by shard."),
  shard: z
    .strictObject({
      concurrency: z.number().int().min(1).max(256).default(8).describe("Bulk-class fan chunks (normal, bulk) processed at once per process (across its shards); urgent chunks have `chunksInFlight` per shard of their own."),
      chunksInFlight: z.number().int().min(1).max(64).default(4).describe("Fan chunks of one shard in flight at once (read, decide, publish)."),
      usersInFlight: z.number().int().min(1).max(1_000_000).default(25_000).describe("Users of the bulk-class fan chunks in flight at once per process (across its shards), besides `concurrency`: each chunk weighs its users (a larger one runs alone). Bounds the memory a process holds for chunks being read, decided and published, whatever the chunk size (docs/architecture.md, \"Memory per recipient\")."),
      sendBatchSize: z.number().int().min(1).max(1000).default(500).describe("Sends per channel batch message."),
      leaseMs: z.number().int().min(500).max(60_000).default(3000).describe("Shard lease: an owner that dies is replaced within about this long plus one tick (a sixth of it)."),
      checkpointMs: z.number().int().min(100).max(600_000).default(2000).describe("How often an owner checkpoints each shard's position, dedup window and buckets."),
      checkpointInlineKb: z.number().int().min(0).max(512).default(64).describe("A shard's dedup window and buckets up to this size are checkpointed whole every time, inline (one KV write). Larger ones are written whole in parts, then only what changed since, until the changes are as large as the whole (or 32 of them): incremental checkpoints."),
      dedupWindowSec: z.number().int().min(0).max(30 * 86400).default(86400).describe("Dedup window on (notification, user) and (collapse key, user): an entry is kept at least this long and at most a quarter longer (entries are held in sets by expiry, a quarter window apart: docs/architecture.md, \"Memory per recipient\")."),
      reconcileSends: z.enum(["auto", "on", "off"]).default("auto").describe("Check that every send batch reached a gateway and every decided-receipt batch stays in NFX_RECEIPTS, and publish again those a replicated stream lost after a leader kill (nats-server; docs/operations.md, \"nats-server version\"). auto: on when streams.replicas > 1."),
      reconcileChunks: z.enum(["auto", "on", "off"]).default("auto").describe("Check that every fan chunk the router, the campaign actor and the quiet-hours release publish is decided by its shard owner, and publish again those a replicated NFX_FAN lost after a leader kill (docs/operations.md, \"nats-server version\"); each publishing process holds its chunks until decided, up to `reconcileMaxMb`. auto: on when streams.replicas > 1."),
      reconcileMaxMb: z.number().int().min(1).max(4096).default(64).describe("Memory for send batches held until a gateway takes them and receipt batches held until checked twice (reconcileSends), per shard actor process and lane class; also for the fan chunks the router, the campaign actor and the quiet-hours release each hold until decided (reconcileChunks), per process. Past it the oldest go unchecked (nfx_messages_unchecked_total)."),
    })
    .prefault({})
    .describe("Shard actors: ownership, checkpoints and batching."),
  lanes: z
    .strictObject({
      nice: z
        .strictObject({
          urgent: z.number().int().min(-20).max(19).default(-5).describe("OS scheduling priority (nice) of processes that run only urgent lanes (`shard@urgent`, `gateway-*@urgent`), and of ingest and the router (on every urgent path, with little bulk work: campaigns do not pass through them). Negative values need root or CAP_SYS_NICE; without it the process keeps its inherited value and says so."),
          bulk: z.number().int().min(-20).max(19).default(10).describe("Nice value of processes that run only bulk lanes (`shard@bulk`, `gateway-*@bulk`) and of the campaign actor."),
          other: z.number().int().min(-20).max(19).default(0).describe("Nice value of every other process (scheduler, tracker, ws-gateway, lane roles running both classes)."),
          servers: z.number().int().min(-20).max(19).default(-5).describe("Nice value of the nats-server and redis-server `nfx up` starts: every lane goes through them."),
        })
        .prefault({})
        .describe("OS scheduling priorities `nfx up` and the test harness give the processes they start, by lane class, so a saturated machine runs urgent work first."),
      admission: z
        .strictObject({
          enabled: z.boolean().default(true).describe("Throttle bulk work (campaign expansion, bulk shard chunks, bulk gateway batches) when urgent latency rises."),
          targetMs: z.number().int().min(1).max(600_000).default(50).describe("Target for the p99 of urgent (critical, high) latency from acceptance to the provider or WebSocket (and the age of the oldest urgent chunk waiting). Above it, bulk work is slowed; well below it (70%), it speeds up again."),
          minFactor: z.number().min(0.01).max(1).default(0.05).describe("The least share of its unthrottled pace bulk work keeps however high urgent latency is (it is never stopped)."),
          intervalMs: z.number().int().min(50).max(10_000).default(250).describe("How often urgent-lane processes report their latency and every bulk consumer re-computes its throttle factor."),
        })
        .prefault({})
        .describe("Admission control of bulk work by feedback from urgent latency (docs/priorities.md)."),
    })
    .prefault({})
    .describe("Priority lane classes: urgent (critical, high) and bulk (normal, bulk). See docs/priorities.md."),
  policy: z
    .strictObject({
      defaultQuietHours: z
        .strictObject({
          start: hhmm.describe("Start of quiet hours, HH:MM in the user's time zone."),
          end: hhmm.describe("End of quiet hours, HH:MM in the user's time zone (may be earlier than start: the window crosses midnight)."),
        })
        .optional()
        .describe("Quiet hours of users who set none, local time in their zone; absent: none."),
      defaultTimezone: z
        .string()
        .min(1)
        .refine((tz) => { try { new Intl.DateTimeFormat("en", { timeZone: tz }); return true; } catch { return false; } }, "must be an IANA time zone")
        .default("UTC")
        .describe("Time zone of users who set none: their quiet hours and local-time delivery (`deliverAt`) use it."),
      fallback: z
        .strictObject({
          critical: z.array(contentChannel).default(["sms", "email"]).describe("Fallback channels of critical notifications, in order."),
          high: z.array(contentChannel).default(["email"]).describe("Fallback channels of high-priority notifications, in order."),
          normal: z.array(contentChannel).default([]).describe("Fallback channels of normal-priority notifications, in order."),
          bulk: z.array(contentChannel).default([]).describe("Fallback channels of bulk notifications, in order."),
        })
        .prefault({})
        .describe("Channels tried one at a time when a notification's own channels reach nobody, per priority. Only channels with gateways (`ingest.channels`) are used."),
      trails: z.boolean().default(true).describe("Keep every recipient's decision trail for `nfx explain`."),
      trailRetentionHours: z.number().min(1).max(24 * 90).default(72).describe("How long decision trails are kept (`NFX_TRAILS`)."),
      trailMaxBytes: z.number().int().min(1_048_576).default(2 * 1024 ** 3).describe("Largest size of the decision trail stream; the oldest trails go first."),
    })
    .prefault({})
    .describe("The shard actor's per-recipient policy."),
  gateways: z
    .strictObject({
      apns: gatewayOf(apnsApp, (a) => a.topic, "APNs apps (at least one; unique names; a failover names another app).", "The APNs gateway."),
      fcm: gatewayOf(fcmApp, (a) => a.projectId, "FCM projects (at least one; unique names; a failover names another app).", "The FCM gateway."),
      email: gatewayOf(sendgridAccount, (a) => a.name, "SendGrid accounts (at least one; unique names; the first sends, the others only as failovers).", "The email gateway (SendGrid).", {
        default: 16,
        why: "a batch of up to `batchSize` recipients is one SendGrid request, so this many batches keep the first account's `concurrency` (16) busy",
      }),
      sms: gatewayOf(twilioAccount, (a) => a.name, "Twilio accounts (at least one; unique names; the first sends, the others only as failovers).", "The SMS gateway (Twilio)."),
      retry,
      batchConcurrency: z.number().int().min(1).max(64).default(4).describe("Send batches processed at once per gateway process and lane, for channels that set none of their own (`gateways.<channel>.batchConcurrency`)."),
      deliveredTtlSec: z.number().int().min(60).max(30 * 86400).default(86400).describe("How long, at least, a delivered key is remembered so a replayed batch never calls a provider twice (its notification's keys in a user shard live until this long after the last of them was recorded)."),
      claimTtlSec: z.number().int().min(3).max(3600).default(10).describe("How long a claim on a delivery key (taken right before the provider call) holds off other attempts; a live batch renews its claims every third of it, so it bounds how long a dead gateway's claims outlive it."),
      ackWaitSec: z.number().int().min(3).max(3600).default(10).describe("Redelivery timeout of the send-stream consumers (the runner signals progress every third of it): how soon a dead gateway's batches go to another."),
      reconcileReceipts: z.enum(["auto", "on", "off"]).default("auto").describe("Check that every receipt batch a gateway (or the in-app dispatcher) published stays in NFX_RECEIPTS, and every in-app fallback batch reaches its gateway, and publish again those a replicated stream lost after a leader kill (nats-server; docs/operations.md, \"nats-server version\"). auto: on when streams.replicas > 1."),
      reconcileMaxMb: z.number().int().min(1).max(4096).default(64).describe("Memory for receipt batches held until checked twice (reconcileReceipts, about a minute), per gateway process and lane class; past it the oldest go unchecked (nfx_messages_unchecked_total)."),
    })
    .prefault({})
    .describe("Channel gateways: provider apps, bulkheads, retries and delivery keys."),
  ws: z
    .strictObject({
      host: z.string().min(1).default("127.0.0.1").describe("Address the WebSocket gateway listens on."),
      port: z.number().int().min(0).max(65535).default(8090).describe("Port of the WebSocket gateway (`/v1/ws`, `/v1/inbox`, `/v1/client.js`, `/demo`, `/healthz`); 0 picks a free one. Several gateway processes may share it (SO_REUSEPORT)."),
      secret: z
        .string()
        .min(32, "must be at least 32 characters")
        .default(DEV_WS_SECRET)
        .describe("HMAC secret of the user tokens (HS256 JWTs, `sub` = user id); at least 32 characters. Must be set: roles refuse the published default (`nfx up` and tests generate one)."),
      issuer: z.string().min(1).optional().describe("Expected `iss` claim of user tokens; absent means any."),
      origins: z
        .array(z.string().regex(/^(\*|https?:\/\/[^/\s]+)$/, "must be * or scheme://host[:port] with no path"))
        .default(["*"])
        .describe("Browser origins allowed to connect (exact `scheme://host[:port]`). Must be set: roles refuse \"*\" (`nfx up` sets the gateway's own origins)."),
      allowNoOrigin: z.boolean().default(true).describe("Accept connections that send no Origin header (non-browser clients; the token still authenticates them)."),
      maxMessageBytes: z.number().int().min(256).max(1_048_576).default(16_384).describe("Largest client message; a bigger one drops the connection (1006 at the client)."),
      messagesPerSec: z.number().int().min(1).max(10_000).default(20).describe("Client messages per second per connection (token bucket, burst = 2×); beyond it the connection is closed with 1008."),
      idleTimeoutSec: z.number().int().min(8).max(960).default(32).describe("Seconds without traffic before the gateway pings; a client that does not answer is closed after as long again."),
      presenceTtlSec: z.number().int().min(3).max(3600).default(30).describe("Presence key TTL; the gateway refreshes every user it holds at a third of it; shard actors trust presence events after listening this long."),
      ackTimeoutMs: z.number().int().min(50).max(60_000).default(2000).describe("How long a live in-app send waits for the client's acknowledgement before falling back."),
      inboxCap: z.number().int().min(1).max(10_000).default(200).describe("Inbox items kept per user (oldest dropped)."),
      inboxRetentionDays: z.number().min(1).max(365).default(30).describe("How long an inbox lives without new items."),
      syncItems: z.number().int().min(0).max(1000).default(50).describe("Items sent to a client when it connects."),
      batchConcurrency: z.number().int().min(1).max(256).default(16).describe("In-app send batches the dispatcher handles at once per process."),
      broadcastMinAudience: z
        .number().int().min(0).default(10_000)
        .describe("An in-app-only notification with inline content to a segment or topic listing at least this many users is a broadcast: stored once and merged into each member's inbox when read (fan-out on read; docs/inapp.md). 0: never."),
      broadcastsPerInbox: z.number().int().min(1).max(1000).default(100).describe("Newest broadcasts an inbox read considers (older ones drop out of inboxes, as items beyond the cap do)."),
      broadcastRefreshMs: z.number().int().min(50).max(60_000).default(1000).describe("How often a gateway re-reads the list of broadcasts (a new one also arrives at once on `nfx.bcast`)."),
    })
    .prefault({})
    .describe("The WebSocket gateway, the in-app inbox and the in-app dispatcher."),
  tracker: z
    .strictObject({
      userLog: z.boolean().default(true).describe("Keep a per-user delivery log in Redis (`nfx log --user`): one entry per outcome but \"queued\"."),
      userLogCap: z.number().int().min(1).max(10_000).default(100).describe("Entries kept per user (oldest dropped)."),
      userLogDays: z.number().min(1).max(365).default(30).describe("How long a user's log is kept after its latest entry."),
    })
    .prefault({})
    .describe("The tracker: counters and delivery logs."),
  consent: z
    .strictObject({
      linkTtlDays: z.number().min(1).max(365).default(60).describe("How long unsubscribe and preference-page links work (signed with `engagement.secret`, under `engagement.baseUrl`)."),
      mailto: z.string().email().optional().describe("Address of the `mailto:` unsubscribe in `List-Unsubscribe` (each message's subject names the recipient and category); absent: the HTTPS URL only."),
      smsHelpText: z.string().min(1).max(320).default("Reply STOP to stop these messages, START to get them again.").describe("The answer to an inbound HELP (or INFO)."),
      smsStopText: z.string().min(1).max(320).default("You will receive no more messages from us. Reply START to get them again.").describe("The answer to an inbound STOP keyword."),
      smsStartText: z.string().min(1).max(320).default("You will receive our messages again. Reply STOP to stop them.").describe("The answer to an inbound START or UNSTOP."),
      timezones: z.array(z.string().min(1)).min(1).default(["UTC", "Europe/London", "Europe/Berlin", "Europe/Madrid", "Europe/Paris", "America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles", "America/Sao_Paulo", "Asia/Kolkata", "Asia/Tokyo", "Asia/Shanghai", "Australia/Sydney"]).describe("Time zones offered on the preference page (the user's own is always offered)."),
    })
    .prefault({})
    .describe("Consent: one-click unsubscribe, the preference page, SMS keywords (docs/consent.md)."),
  engagement: z
    .strictObject({
      baseUrl: z
        .string()
        .regex(/^https?:\/\/[^\s?#]+[^/\s?#]$/, "must be an http(s) URL without a trailing slash, query or fragment")
        .default("http://127.0.0.1:8080")
        .describe("Public base URL of the HTTP API: open pixels, click redirects and Twilio status callbacks point here (a local cluster sets its own)."),
      secret: z
        .string()
        .min(32, "must be at least 32 characters")
        .default(DEV_LINK_SECRET)
        .describe("HMAC secret that signs tracking links (at least 32 characters). Must be set: roles refuse the published default (`nfx up` and tests generate one)."),
      openPixel: z.boolean().default(true).describe("Add an open pixel to HTML email."),
      clickTracking: z.boolean().default(true).describe("Rewrite http(s) links of HTML email through the click redirect."),
      linkTtlDays: z.number().min(1).max(365).default(30).describe("How long tracking links work and a recipient's first open / click is remembered."),
    })
    .prefault({})
    .describe("Open and click tracking."),
  webhooks: z
    .strictObject({
      sendgridPublicKey: z
        .string()
        .regex(/^[A-Za-z0-9+/=]{40,}$/, "must be the base64 public key SendGrid shows")
        .optional()
        .describe("SendGrid Signed Event Webhook verification key (base64 DER, as SendGrid's settings page shows it); absent: the endpoint answers 503 (a local cluster sets the sandbox's)."),
      maxAgeSec: z.number().int().min(10).max(7 * 86400).default(600).describe("Signed webhook timestamps older than this are refused (replay protection)."),
      dedupDays: z.number().min(1).max(30).default(3).describe("How long a provider event id is remembered so a redelivered webhook counts once."),
    })
    .prefault({})
    .describe("Provider callbacks (SendGrid events, Twilio status)."),
  endpoints: z
    .strictObject({
      allowNetworks: z
        .array(z.string().refine((c) => isCidr(c), "must be a network in CIDR form, e.g. 127.0.0.0/8 or fd00::/8"))
        .default([])
        .describe("Networks (CIDR) endpoint URLs may resolve into although they are loopback, private, link-local or otherwise not public; empty: none (SSRF protection). A local cluster and the tests allow 127.0.0.0/8."),
      timeoutMs: z.number().int().min(100).max(60_000).default(10_000).describe("How long a delivery may take, connection to last byte of the answer; past it the attempt failed (retried)."),
      maxAttempts: z.number().int().min(1).max(100).default(12).describe("Attempts of one delivery before it is failed and dead-lettered (when its endpoint is not paused first)."),
      backoffBaseMs: z.number().int().min(10).max(3_600_000).default(5000).describe("First retry delay; doubles per attempt, with full jitter, up to `backoffMaxMs`. A `Retry-After` answer waits at least what it asks."),
      backoffMaxMs: z.number().int().min(10).max(86_400_000).default(3_600_000).describe("Longest retry delay."),
      pauseAfterFailures: z.number().int().min(1).max(10_000).default(10).describe("Consecutive failed attempts after which an endpoint is paused (together with `pauseAfterMs`)."),
      pauseAfterMs: z.number().int().min(0).max(30 * 86_400_000).default(600_000).describe("How long an endpoint must have been failing, since its last success, before it is paused (together with `pauseAfterFailures`)."),
      socketsPerHost: z.number().int().min(1).max(1024).default(8).describe("Keep-alive connections per endpoint host (undici pool)."),
      maxEndpointsPerProcess: z.number().int().min(1).max(100_000).default(5000).describe("Endpoints one gateway process delivers to at once (each in order, one request at a time)."),
      directBacklog: z.number().int().min(0).max(1000).default(64).describe("Send batches' deliveries of one endpoint a gateway process keeps waiting in memory behind the one it is posting, when it delivers to the endpoint directly (an endpoint with nothing queued, not paused, not backing off): beyond it, after a failed attempt, or after an answer slower than `directSlowMs`, the endpoint's deliveries go through its Redis queue until that is empty again. 0: every delivery goes through the queue."),
      directSlowMs: z.number().int().min(10).max(60_000).default(1000).describe("An endpoint delivered to directly whose answer takes longer than this has its later deliveries queued (delivered in order after it) instead of holding their send batches."),
      directBatches: z.number().int().min(1).max(1000).default(8).describe("Send batches a gateway process delivers directly at once (each acked when all its deliveries are delivered, failed for good or queued)."),
      headRead: z.number().int().min(1).max(1000).default(64).describe("Deliveries a gateway process reads from the head of an endpoint's queue at a time (then sends one after the other, in order): fewer Redis calls per delivery, and as many sent again at most after the process dies mid-read (same `webhook-id`)."),
      recordEveryMs: z.number().int().min(100).max(60_000).default(5000).describe("Longest a delivered outcome waits to be recorded (receipt, counters, the endpoint's state) while the rest of its head read is sent: a slow endpoint's counts lag by at most this."),
      leaseMs: z.number().int().min(1000).max(300_000).default(15_000).describe("Hold a gateway process keeps on an endpoint it delivers to; a dead process's endpoints go to another after it."),
      secretOverlapSec: z.number().int().min(0).max(30 * 86400).default(86_400).describe("After a secret rotation, how long deliveries are also signed with the old secret."),
      batchSize: z.number().int().min(1).max(10_000).default(500).describe("Endpoint deliveries per send batch on NFX_SEND_WEBHOOK."),
      partitions: z.number().int().min(1).max(256).default(4).describe(
        "Endpoint partitions (`partition = FNV-1a(endpoint id) mod N`): each partition's send batches are taken by one gateway-webhook process at a time, which holds it by lease (`partitionLeaseMs`) and shares the partitions out with the other live processes, so an endpoint's deliveries are posted in publish order however many processes run. At least the number of gateway-webhook processes, for all of them to take a share. Fixed when a cluster is created; never change it under a running cluster.",
      ),
      partitionLeaseMs: z.number().int().min(500).max(60_000).default(3000).describe(
        "Lease of an endpoint partition (`partitions`): a gateway-webhook process that dies has its partitions taken by the others within about this long plus a tick (a sixth of it), then its unfinished send batches within `gateways.ackWaitSec`. The endpoints it was posting to wait for their own hold (`leaseMs`); their deliveries queue meanwhile.",
      ),
      doneTtlSec: z.number().int().min(60).max(30 * 86400).default(86_400).describe("How long a delivered id is remembered so a redelivered batch does not deliver it again."),
      historyPerEndpoint: z.number().int().min(0).max(10_000).default(100).describe("Recent deliveries kept per endpoint for `nfx endpoints deliveries` (Redis holds up to a quarter more, at least 16, between trims)."),
    })
    .prefault({})
    .describe("Webhook endpoints (systems subscribed to topics): delivery, retries, pausing, SSRF protection."),
  metrics: z
    .strictObject({
      enabled: z.boolean().default(true).describe("Serve Prometheus `/metrics` (and `/metrics.json`) from every process."),
      host: z.string().min(1).default("127.0.0.1").describe("Address the metrics server listens on."),
      port: z.number().int().min(0).max(65535).default(0).describe("Port of this process's metrics server; 0 picks a free one (every process announces its URL in the process registry: `nfx top`, `/v1/metrics/targets`)."),
    })
    .prefault({})
    .describe("Prometheus metrics of every process."),
  sandbox: z
    .strictObject({
      apnsPort: port.default(8443).describe("Port of the sandbox APNs."),
      fcmPort: port.default(8444).describe("Port of the sandbox FCM."),
      controlPort: port.default(8445).describe("Port of the sandbox control API (`/stats`, `/faults`, ...)."),
      sendgridPort: port.default(8446).describe("Port of the sandbox SendGrid."),
      twilioPort: port.default(8447).describe("Port of the sandbox Twilio."),
    })
    .prefault({})
    .describe("Sandbox providers started by `nfx sandbox` and `nfx up`."),
  up: z
    .strictObject({
      dataDir: z.string().min(1).default(".nfx").describe("Where `nfx up` keeps nats-server and redis-server data and the cluster's config."),
      natsPort: port.default(4222).describe("nats-server port of `nfx up`."),
      redisPort: port.default(6379).describe("redis-server port of `nfx up`."),
      readyTimeoutMs: z.number().int().min(1000).max(3_600_000).default(60_000)
        .describe("How long `nfx up`, `nfx demo`, `nfx node` and the benchmarks wait for a role process they start to report ready; past it the role is killed and start-up fails with NFX_ERR_ROLE_NOT_READY, naming the role and its last lines (a role on its own waits for its servers for ever)."),
    })
    .prefault({})
    .describe("The local cluster of `nfx up`."),
});

/** The validated, frozen configuration every process runs with. */
export type Config = z.infer<typeof configSchema>;
export type ApnsAppConfig = z.infer<typeof apnsApp>;
export type FcmAppConfig = z.infer<typeof fcmApp>;
export type SendgridAccountConfig = z.infer<typeof sendgridAccount>;
export type TwilioAccountConfig = z.infer<typeof twilioAccount>;
/** The bulkhead settings every provider app has. */
export type BulkheadConfig = Pick<ApnsAppConfig, "concurrency" | "queueLimit" | "ratePerSec" | "breaker" | "failover">;
export type RetryConfig = Config["gateways"]["retry"];
