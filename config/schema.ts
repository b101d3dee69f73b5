// The configuration schema with its defaults: every key nfx reads, validated at start-up, unknown keys rejected.
import { existsSync } from "node:fs";
import { z } from "zod";

const file = z.string().min(1).refine((p) => existsSync(p), { message: "file not found" });
const port = z.number().int().min(1).max(65535);
const host = z.string().min(1);

const apnsApp = z.strictObject({
  /** APNs topic: the app's bundle id. */
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
  /** Sends in flight at once for this app. */
  concurrency: z.number().int().min(1).max(10000).default(256),
});

const fcmApp = z.strictObject({
  projectId: z.string().regex(/^[a-z][a-z0-9-]{3,62}$/, "must be a Firebase project id").default("nfx-sandbox"),
  /** Service-account JSON for production; absent means the static sandbox token below. */
  serviceAccountFile: file.optional(),
  sandboxToken: z.string().min(1).default("nfx-sandbox-token"),
  /** Override of fcm.googleapis.com (host:port dialled instead; TLS name stays fcm.googleapis.com). */
  host: host.optional(),
  port: port.optional(),
  caFile: file.optional(),
  /** Keep-alive sockets in this app's pool. */
  sockets: z.number().int().min(1).max(1024).default(64),
  concurrency: z.number().int().min(1).max(10000).default(128),
});

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
      user: z.string().optional(),
      pass: z.string().optional(),
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
  router: z
    .strictObject({
      /** Recipients per fan chunk message (one shard's slice of one notification). */
      chunkSize: z.number().int().min(1).max(10000).default(1000),
    })
    .prefault({}),
  shard: z
    .strictObject({
      /** Fan chunks processed at once per process. */
      concurrency: z.number().int().min(1).max(256).default(8),
      /** Sends per channel batch message. */
      sendBatchSize: z.number().int().min(1).max(1000).default(500),
    })
    .prefault({}),
  gateways: z
    .strictObject({
      apns: apnsApp.prefault({}),
      fcm: fcmApp.prefault({}),
      /** Send batches processed at once per gateway process. */
      batchConcurrency: z.number().int().min(1).max(64).default(4),
      /** How long a delivered key is remembered so a replayed batch never calls a provider twice. */
      deliveredTtlSec: z.number().int().min(60).max(30 * 86400).default(86400),
    })
    .prefault({}),
  sandbox: z
    .strictObject({
      apnsPort: port.default(8443),
      fcmPort: port.default(8444),
      controlPort: port.default(8445),
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
