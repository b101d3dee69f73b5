// The configuration schema with its defaults: every key nfx reads, validated at start-up, unknown keys rejected.
import { existsSync } from "node:fs";
import { z } from "zod";
import { PROTOTYPE_NAME_RULE, isPrototypeName } from "../lib/core/own-keys.js";

const file = z.string().min(1).refine((p) => existsSync(p), { message: "file not found" });
const port = z.number().int().min(1).max(65535);
const host = z.string().min(1);
const hhmm = z.string().regex(/^([01][0-9]|2[0-3]):[0-5][0-9]$/, "must be a 24-hour HH:MM time");
const contentChannel = z.enum(["push", "email", "sms", "inapp"]);

/**
 * API-key scopes, one per kind of operation: `send` (explicit recipients), `campaigns.create` (a segment
 * target), `campaigns.control` (pause, resume, cancel), `users.write` (user records and preferences),
 * `templates` (manage templates), `read` (status, delivery logs, overview, metrics targets, templates),
 * `events` (app-reported engagement) and `admin` (every scope).
 */
export const API_SCOPES = ["send", "campaigns.create", "campaigns.control", "users.write", "templates", "read", "events", "admin"] as const;
/** The published development default of `nats.secret`: a role refuses to start with it (lib/infra/secrets.ts). */
export const DEV_NATS_SECRET = "nfx-local-nats-secret-change-me-in-production";
/** The published development default of `ws.secret`: a role refuses to start with it (lib/infra/secrets.ts). */
export const DEV_WS_SECRET = "nfx-dev-ws-secret-change-me-in-production!";
/** The published development default of `engagement.secret`: a role refuses to start with it (lib/infra/secrets.ts). */
export const DEV_LINK_SECRET = "nfx-dev-link-secret-change-me-in-production";

/** What every provider app has: its name, bulkhead limits, circuit breaker and an optional failover app. */
const bulkhead = {
  /** Requests in flight at once for this app. */
  concurrency: z.number().int().min(1).max(10000),
  /** Requests waiting for a slot beyond which sends are pushed back (re-queued with a delay) rather than holding the batch. */
  queueLimit: z.number().int().min(0).max(1_000_000).default(4096),
  /** The provider's quota for this app, sends per second (0 = none): the rate limit. */
  ratePerSec: z.number().min(0).default(0),
  breaker: z
    .strictObject({
      /** Consecutive failed provider requests (429, 5xx, timeouts, resets) that open the breaker. */
      failures: z.number().int().min(1).max(100_000).default(50),
      /** How long an open breaker stays open before one trial request (half-open). */
      halfOpenAfterMs: z.number().int().min(100).max(3_600_000).default(10_000),
    })
    .prefault({}),
  /** Name of another app of the same channel that takes this app's sends while its breaker is open. */
  failover: z.string().min(1).optional(),
};

const apnsApp = z.strictObject({
  /** Name used in logs, metrics and `failover`; the topic when absent. */
  name: z.string().min(1).optional(),
  /** APNs topic: the app's bundle id. Devices registered with this app id are sent through this app. */
  topic: z.string().min(1).default("com.example.nfx"),
  teamId: z.string().regex(/^[A-Z0-9]{10}$/, "must be a 10-character Apple team id").default("NFXTEAM001"),
  keyId: z.string().regex(/^[A-Z0-9]{10}$/, "must be a 10-character APNs key id").default("NFXKEY0001"),
  /** Path of the .p8 token-signing key. `nfx up` creates one for the sandbox when absent. */
  keyFile: file.optional(),
  production: z.boolean().default(false),
  /** Override of the APNs host (e.g. 127.0.0.1 for the sandbox). */
  address: host.optional(),
  port: port.optional(),
  /** PEM CA to trust for the APNs endpoint (sandbox). */
  caFile: file.optional(),
  /** HTTP/2 sessions in this app's pool. */
  clientCount: z.number().int().min(1).max(64).default(2),
  ...bulkhead,
  concurrency: bulkhead.concurrency.default(256),
});

const fcmApp = z.strictObject({
  /** Name used in logs, metrics and `failover`; the project id when absent. */
  name: z.string().min(1).optional(),
  projectId: z.string().regex(/^[a-z][a-z0-9-]{3,62}$/, "must be a Firebase project id").default("nfx-sandbox"),
  /** Android package names whose devices this project serves (besides devices registered with the project id). */
  packages: z.array(z.string().min(1)).default([]),
  /** Service-account JSON for production; absent means the static sandbox token below. */
  serviceAccountFile: file.optional(),
  sandboxToken: z.string().min(1).default("nfx-sandbox-token"),
  /** Override of fcm.googleapis.com (host:port dialled instead; TLS name stays fcm.googleapis.com). */
  host: host.optional(),
  port: port.optional(),
  caFile: file.optional(),
  /** Keep-alive sockets in this app's pool. */
  sockets: z.number().int().min(1).max(1024).default(64),
  ...bulkhead,
  concurrency: bulkhead.concurrency.default(128),
});

const sendgridAccount = z.strictObject({
  name: z.string().min(1).default("sendgrid"),
  apiKey: z.string().regex(/^SG\.\S+$/, "must be a SendGrid API key (SG.…)").default("SG.nfx-sandbox-key"),
  from: z.strictObject({ email: z.email("must be an email address"), name: z.string().optional() }).default({ email: "noreply@nfx.example", name: "nfx" }),
  /** Base URL override (e.g. http://127.0.0.1:8446/ for the sandbox); api.sendgrid.com when absent. */
  baseUrl: z.url("must be a URL").optional(),
  /** Keep-alive sockets in this account's pool. */
  sockets: z.number().int().min(1).max(1024).default(32),
  ...bulkhead,
  concurrency: bulkhead.concurrency.default(16),
  /** Personalizations per request (SendGrid allows 1000). */
  batchSize: z.number().int().min(1).max(1000).default(1000),
});

const twilioAccount = z.strictObject({
  name: z.string().min(1).default("twilio"),
  accountSid: z.string().regex(/^AC[0-9a-f]{32}$/, "must be a Twilio account SID (AC + 32 hex)").default("AC00000000000000000000000000000000"),
  authToken: z.string().min(1).default("nfx-sandbox-token"),
  /** Sender: a phone number, or a messaging service SID (MG…). */
  from: z.string().regex(/^(\+[1-9][0-9]{6,14}|MG[0-9a-f]{32})$/, "must be an E.164 number or a messaging service SID").default("+15550000000"),
  /** Base URL override (e.g. http://127.0.0.1:8447 for the sandbox); https://api.twilio.com when absent. */
  baseUrl: z.url("must be a URL").optional(),
  sockets: z.number().int().min(1).max(1024).default(64),
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
        const f = apps[i]!.failover;
        if (f !== undefined && (f === n || !names.includes(f))) ctx.addIssue({ code: "custom", path: [i, "failover"], message: `must name another app of this channel (got ${f})` });
      });
    });
}

const retry = z
  .strictObject({
    /** Provider attempts per send before it goes to the dead-letter stream. */
    maxAttempts: z.number().int().min(1).max(50).default(5),
    /** First backoff; doubles per attempt, with full jitter. */
    baseMs: z.number().int().min(10).max(600_000).default(1000),
    maxMs: z.number().int().min(100).max(3_600_000).default(300_000),
    /** Least wait after FCM QUOTA_EXCEEDED (Google asks for at least a minute). */
    quotaMs: z.number().int().min(0).max(3_600_000).default(60_000),
  })
  .prefault({});

/** The whole configuration. `z.infer` of it is {@link Config}. */
export const configSchema = z.strictObject({
  cluster: z
    .strictObject({
      /** Number of user shards P. Fixed when a cluster is created; never change it under a running cluster. */
      shards: z.number().int().min(1).max(4096).default(64),
    })
    .prefault({}),
  nats: z
    .strictObject({
      servers: z.array(z.string().regex(/^(nats|tls):\/\/[^\s]+$/, "must be a nats:// or tls:// URL")).min(1).default(["nats://127.0.0.1:4222"]),
      /**
       * Secret every nfx NATS user's password is derived from (one user per role, `nfx-admin` for the CLI,
       * and each producer); `nfx nats-conf` renders nats-server's config from it. At least 32 characters;
       * roles refuse the published default outside `nfx up` and the tests.
       */
      secret: z.string().min(32, "must be at least 32 characters").default(DEV_NATS_SECRET),
      /** Producer users of the PRODUCERS account (`nfx nats-password <name>` prints each one's password). */
      producers: z.array(z.string().regex(/^[a-z][a-z0-9_-]{0,63}$/, "must be 1-64 characters of a-z 0-9 _ - starting with a letter")).default(["producer"]),
    })
    .prefault({}),
  redis: z
    .strictObject({
      url: z.string().regex(/^rediss?:\/\/[^\s]+$/, "must be a redis:// or rediss:// URL").default("redis://127.0.0.1:6379"),
    })
    .prefault({}),
  log: z
    .strictObject({
      level: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
      /** Redact device tokens, emails, phones and bodies. Turn off only on a developer machine. */
      redact: z.boolean().default(true),
    })
    .prefault({}),
  streams: z
    .strictObject({
      replicas: z.number().int().min(1).max(5).default(1),
      storage: z.enum(["file", "memory"]).default("file"),
      /** How long accepted requests and receipts are kept (status and replay read them). */
      retentionHours: z.number().min(1).max(24 * 365).default(7 * 24),
      /** JetStream duplicate window: replays of a batch within it are dropped by message id. */
      duplicateWindowSec: z.number().int().min(10).max(86400).default(1200),
      /** Seconds a consumer waits for an ack before redelivering. */
      ackWaitSec: z.number().int().min(5).max(3600).default(60),
    })
    .prefault({}),
  /** Categories producers may use; a request naming any other is refused. */
  categories: z
    .record(
      z.string().regex(/^[a-z][a-z0-9_-]{0,63}$/, "category names are 1-64 characters of a-z 0-9 _ -").refine((k) => !isPrototypeName(k), PROTOTYPE_NAME_RULE),
      z.strictObject({
        description: z.string().optional(),
        /** Priority used when a request names none. */
        defaultPriority: z.enum(["critical", "high", "normal", "bulk"]).default("normal"),
        /** Frequency cap per user: at most `count` sends per `periodSec` (token bucket). Absent: uncapped. */
        cap: z.strictObject({ count: z.number().int().min(1).max(1_000_000), periodSec: z.number().int().min(1).max(30 * 86400) }).optional(),
        /** While the user is online (in-app presence), deliver in-app instead of push. */
        presenceRouting: z.boolean().default(false),
        /** Respect users' quiet hours (critical notifications never do). */
        quietHours: z.boolean().default(true),
      }),
    )
    .default({
      transactional: { defaultPriority: "high", presenceRouting: false, quietHours: false },
      security: { defaultPriority: "critical", presenceRouting: false, quietHours: false },
      social: { defaultPriority: "normal", presenceRouting: true, quietHours: true },
      marketing: { defaultPriority: "bulk", cap: { count: 3, periodSec: 86400 }, presenceRouting: false, quietHours: true },
    }),
  ingest: z
    .strictObject({
      /** Largest request body accepted on either surface. */
      maxBodyBytes: z.number().int().min(1024).max(16 * 1048576).default(1048576),
      /** Deepest nesting of arrays/objects in a request body (checked before parsing, both surfaces). */
      maxJsonDepth: z.number().int().min(4).max(1000).default(32),
      /** How far ahead `sendAt` may be. */
      maxSendAheadDays: z.number().min(0).max(365).default(30),
      /** How far in the past `sendAt` may be (clock skew, queueing); it is then sent at once. Older ones are refused. */
      maxSendBehindSec: z.number().int().min(0).max(86400).default(300),
      /** How far ahead an explicit `expiresAt` may be. */
      maxExpiresAheadDays: z.number().min(1).max(3650).default(60),
      /** Content channels that have gateways in this cluster; requests wanting others are refused. */
      channels: z.array(z.enum(["push", "email", "sms", "inapp"])).min(1).default(["push"]),
    })
    .prefault({}),
  http: z
    .strictObject({
      enabled: z.boolean().default(true),
      host: z.string().min(1).default("127.0.0.1"),
      port: z.number().int().min(0).max(65535).default(8080),
      /** Moved: API keys are the top-level `apiKeys` now (they serve HTTP and `nfx.ext.api.*` alike). */
      apiKeys: z.never({ error: "moved to the top-level apiKeys (each key lists its scopes; admin: true became scopes: [\"admin\"])" }).optional(),
    })
    .prefault({}),
  /**
   * API keys, for HTTP and the external NATS family `nfx.ext.api.*` alike; none means every such request
   * is refused with 401. Each key lists the scopes it holds (see {@link API_SCOPES}); `categories` and
   * `priorities` further limit what `send` and `campaigns.create` may submit.
   */
  apiKeys: z
    .array(
      z.strictObject({
        name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, "must be 1-64 characters of A-Z a-z 0-9 _ . -"),
        key: z.string().min(16, "must be at least 16 characters"),
        /** The operations this key may call; `admin` holds every scope. */
        scopes: z.array(z.enum(API_SCOPES)).min(1),
        /** Categories this key may send; ["*"] for all. */
        categories: z.array(z.string().min(1)).min(1).default(["*"]),
        priorities: z.array(z.enum(["critical", "high", "normal", "bulk"])).min(1).default(["critical", "high", "normal", "bulk"]),
        /** Replaced by scopes. */
        admin: z.never({ error: "replaced by scopes: admin: true is scopes: [\"admin\"]; a key without it lists what it may do, e.g. [\"send\",\"read\"]" }).optional(),
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
    .default([]),
  campaign: z
    .strictObject({
      /** Users per campaign chunk (one shard's slice); at most 10,000. */
      chunkSize: z.number().int().min(1).max(10_000).default(10_000),
      /** Shards a campaign expands at once. */
      shardConcurrency: z.number().int().min(1).max(256).default(8),
      /** Default expansion limit, users per second (0 = none); a request's campaign.rate overrides it. */
      defaultRate: z.number().min(0).default(0),
      /** Campaign ownership lease; an owner that dies is replaced within about this long. */
      leaseMs: z.number().int().min(500).max(60_000).default(3000),
    })
    .prefault({}),
  router: z
    .strictObject({
      /** Recipients per fan chunk message (one shard's slice of one notification). */
      chunkSize: z.number().int().min(1).max(10000).default(1000),
    })
    .prefault({}),
  shard: z
    .strictObject({
      /** Fan chunks processed at once per process (across its shards). */
      concurrency: z.number().int().min(1).max(256).default(8),
      /** Fan chunks of one shard in flight at once (read, decide, publish). */
      chunksInFlight: z.number().int().min(1).max(64).default(4),
      /** Sends per channel batch message. */
      sendBatchSize: z.number().int().min(1).max(1000).default(500),
      /** Shard lease: an owner that dies is replaced within about this long plus one tick. */
      leaseMs: z.number().int().min(500).max(60_000).default(3000),
      /** How often an owner checkpoints each shard's position, dedup window and buckets. */
      checkpointMs: z.number().int().min(100).max(600_000).default(2000),
      /** Dedup window on (notification, user) and (collapse key, user). */
      dedupWindowSec: z.number().int().min(0).max(30 * 86400).default(86400),
    })
    .prefault({}),
  policy: z
    .strictObject({
      /** Quiet hours of users who set none, local time in their zone; absent: none. */
      defaultQuietHours: z.strictObject({ start: hhmm, end: hhmm }).optional(),
      /** Channels tried one at a time when a notification's own channels reach nobody, per priority. Only channels with gateways are used. */
      fallback: z
        .strictObject({
          critical: z.array(contentChannel).default(["sms", "email"]),
          high: z.array(contentChannel).default(["email"]),
          normal: z.array(contentChannel).default([]),
          bulk: z.array(contentChannel).default([]),
        })
        .prefault({}),
      /** Keep every recipient's decision trail for `nfx explain`. */
      trails: z.boolean().default(true),
      trailRetentionHours: z.number().min(1).max(24 * 90).default(72),
      trailMaxBytes: z.number().int().min(1_048_576).default(2 * 1024 ** 3),
    })
    .prefault({}),
  gateways: z
    .strictObject({
      apns: z.strictObject({ apps: appsOf(apnsApp, (a) => a.topic).default([apnsApp.parse({})]) }).prefault({}),
      fcm: z.strictObject({ apps: appsOf(fcmApp, (a) => a.projectId).default([fcmApp.parse({})]) }).prefault({}),
      email: z.strictObject({ apps: appsOf(sendgridAccount, (a) => a.name).default([sendgridAccount.parse({})]) }).prefault({}),
      sms: z.strictObject({ apps: appsOf(twilioAccount, (a) => a.name).default([twilioAccount.parse({})]) }).prefault({}),
      retry,
      /** Send batches processed at once per gateway process. */
      batchConcurrency: z.number().int().min(1).max(64).default(4),
      /** How long a delivered key is remembered so a replayed batch never calls a provider twice. */
      deliveredTtlSec: z.number().int().min(60).max(30 * 86400).default(86400),
      /** How long a claim on a delivery key (taken right before the provider call) holds off other attempts; a live batch renews its claims every third of it, so it bounds how long a dead gateway's claims outlive it. */
      claimTtlSec: z.number().int().min(3).max(3600).default(10),
      /** Redelivery timeout of the send-stream consumers (the runner signals progress every third of it): how soon a dead gateway's batches go to another. */
      ackWaitSec: z.number().int().min(3).max(3600).default(10),
    })
    .prefault({}),
  ws: z
    .strictObject({
      host: z.string().min(1).default("127.0.0.1"),
      /** Port of the WebSocket gateway (`/v1/ws`, `/v1/inbox`, `/v1/client.js`, `/demo`); 0 picks a free one. */
      port: z.number().int().min(0).max(65535).default(8090),
      /** HMAC secret of the user tokens (HS256 JWTs, `sub` = user id); at least 32 characters. Must be set: roles refuse the published default (`nfx up` and tests generate one). */
      secret: z.string().min(32, "must be at least 32 characters").default(DEV_WS_SECRET),
      /** Expected `iss` claim of user tokens; absent means any. */
      issuer: z.string().min(1).optional(),
      /** Browser origins allowed to connect (exact `scheme://host[:port]`). Must be set: roles refuse "*" (`nfx up` sets the gateway's own origins). */
      origins: z.array(z.string().regex(/^(\*|https?:\/\/[^/\s]+)$/, "must be * or scheme://host[:port] with no path")).default(["*"]),
      /** Accept connections that send no Origin header (non-browser clients; the token still authenticates them). */
      allowNoOrigin: z.boolean().default(true),
      /** Largest client message; bigger ones close the connection. */
      maxMessageBytes: z.number().int().min(256).max(1_048_576).default(16_384),
      /** Client messages per second per connection (token bucket, burst = 2×); beyond it the connection is closed. */
      messagesPerSec: z.number().int().min(1).max(10_000).default(20),
      /** Seconds without traffic before the gateway pings; a client that does not answer is closed after as long again. */
      idleTimeoutSec: z.number().int().min(8).max(960).default(32),
      /** Presence key TTL; the gateway refreshes every user it holds at a third of it. */
      presenceTtlSec: z.number().int().min(3).max(3600).default(30),
      /** How long a live in-app send waits for the client's acknowledgement before falling back to push. */
      ackTimeoutMs: z.number().int().min(50).max(60_000).default(2000),
      /** Inbox items kept per user (oldest dropped). */
      inboxCap: z.number().int().min(1).max(10_000).default(200),
      /** How long inbox items are kept. */
      inboxRetentionDays: z.number().min(1).max(365).default(30),
      /** Items sent to a client when it connects. */
      syncItems: z.number().int().min(0).max(1000).default(50),
      /** In-app send batches handled at once by the dispatcher. */
      batchConcurrency: z.number().int().min(1).max(256).default(16),
    })
    .prefault({}),
  tracker: z
    .strictObject({
      /** Keep a per-user delivery log in Redis (`nfx log --user`): one entry per outcome but "queued". */
      userLog: z.boolean().default(true),
      /** Entries kept per user (oldest dropped). */
      userLogCap: z.number().int().min(1).max(10_000).default(100),
      /** How long a user's log is kept after its latest entry. */
      userLogDays: z.number().min(1).max(365).default(30),
    })
    .prefault({}),
  engagement: z
    .strictObject({
      /** Public base URL of the HTTP API: open pixels, click redirects and Twilio status callbacks point here. */
      baseUrl: z.string().regex(/^https?:\/\/[^\s?#]+[^/\s?#]$/, "must be an http(s) URL without a trailing slash, query or fragment").default("http://127.0.0.1:8080"),
      /** HMAC secret that signs tracking links (at least 32 characters). Must be set: roles refuse the published default (`nfx up` and tests generate one). */
      secret: z.string().min(32, "must be at least 32 characters").default(DEV_LINK_SECRET),
      /** Add an open pixel to HTML email. */
      openPixel: z.boolean().default(true),
      /** Rewrite http(s) links of HTML email through the click redirect. */
      clickTracking: z.boolean().default(true),
      /** How long tracking links work and a recipient's first open / click is remembered. */
      linkTtlDays: z.number().min(1).max(365).default(30),
    })
    .prefault({}),
  webhooks: z
    .strictObject({
      /** SendGrid Signed Event Webhook verification key (base64 DER, as SendGrid's settings page shows it); absent: the endpoint answers 503. */
      sendgridPublicKey: z.string().regex(/^[A-Za-z0-9+/=]{40,}$/, "must be the base64 public key SendGrid shows").optional(),
      /** Signed webhook timestamps older than this are refused (replay protection). */
      maxAgeSec: z.number().int().min(10).max(7 * 86400).default(600),
      /** How long a provider event id is remembered so a redelivered webhook counts once. */
      dedupDays: z.number().min(1).max(30).default(3),
    })
    .prefault({}),
  metrics: z
    .strictObject({
      /** Serve Prometheus `/metrics` from every process. */
      enabled: z.boolean().default(true),
      host: z.string().min(1).default("127.0.0.1"),
      /** Port of this process's metrics server; 0 picks a free one (every process announces its URL in the process registry: `nfx top`, `/v1/metrics/targets`). */
      port: z.number().int().min(0).max(65535).default(0),
    })
    .prefault({}),
  sandbox: z
    .strictObject({
      apnsPort: port.default(8443),
      fcmPort: port.default(8444),
      controlPort: port.default(8445),
      sendgridPort: port.default(8446),
      twilioPort: port.default(8447),
    })
    .prefault({}),
  up: z
    .strictObject({
      /** Where `nfx up` keeps nats-server and redis-server data. */
      dataDir: z.string().min(1).default(".nfx"),
      natsPort: port.default(4222),
      redisPort: port.default(6379),
    })
    .prefault({}),
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
