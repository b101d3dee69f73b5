// NATS accounts, users and permissions: nfx's roles in account NFX (one user each, least privilege), producers in account PRODUCERS (service imports only); renders nats-server's config.
import { createHmac } from "node:crypto";

import { ADMISSION, API, API_OPS, BROADCAST_LIVE_SUBJECT, BUCKET, type Channel, CONSUMER, deferAll, dirChangedAll, dlqSubject, extApiAll, extApiSubject, fanAll, GATEWAY_CHANNELS, intakeAll, KV_STORE, presenceAll, PRIORITIES, receiptAll, retryOf, sendAll, STREAM, trailAll } from "../core/subjects.js";

/** nfx's own NATS identities: one per role, plus `admin` (the CLI, `nfx init`, tools and tests). */
export const NATS_ROLE_USERS = ["ingest", "scheduler", "router", "campaign", "shard", "gateway-apns", "gateway-fcm", "gateway-email", "gateway-sms", "gateway-webhook", "ws-gateway", "tracker"] as const;
export type NatsRoleUser = (typeof NATS_ROLE_USERS)[number];
export type NatsIdentity = NatsRoleUser | "admin";

/** The NATS account holding nfx's roles and JetStream; producers' account imports the API from it. */
export const NFX_ACCOUNT = "NFX";
export const PRODUCER_ACCOUNT = "PRODUCERS";

/** The NATS user name of an nfx identity (`nfx-<role>`, `nfx-admin`). */
export const natsUserName = (who: NatsIdentity): string => `nfx-${who}`;

/** The inbox prefix of an identity's connection: replies and JetStream deliveries to it land only where its user may subscribe. */
export const inboxPrefixOf = (who: NatsIdentity | { producer: string }): string =>
  typeof who === "string" ? `_INBOX_${who}` : `_INBOX_${who.producer}`;

/**
 * The password of `user` (an nfx identity's user name or a producer's name),
 * derived from `nats.secret`: HMAC-SHA256 over the user name, base64url.
 * Everyone holding the secret can compute every password; nats-server's
 * config holds the results. Changing the secret changes them all.
 */
export function natsPassword(secret: string, user: string): string {
  return createHmac("sha256", secret).update(`nats-user:${user}`).digest("base64url");
}

type Perm = { pub: string[]; sub: string[] };

// JetStream API subjects, per stream: what a role may do with one stream, nothing broader.
const js = {
  /** Read-only JetStream metadata of every stream and consumer (never message contents). */
  info: ["$JS.API.INFO", "$JS.API.STREAM.INFO.*", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST", "$JS.API.CONSUMER.INFO.*.*", "$JS.API.CONSUMER.NAMES.*", "$JS.API.CONSUMER.LIST.*"],
  /** Pull from a durable consumer of `s` and ack what it took. */
  consume: (s: string) => [`$JS.API.CONSUMER.MSG.NEXT.${s}.*`, `$JS.ACK.${s}.>`],
  /** Pull from durable consumer `name` of `s` only, and ack what it took. */
  consumeOne: (s: string, name: string) => [`$JS.API.CONSUMER.MSG.NEXT.${s}.${name}`, `$JS.ACK.${s}.${name}.>`],
  /**
   * Create and read its own ephemeral (ordered) consumers of `s`; KV watches are these too. Deleting them only with
   * `del`, for a stream that has no durable consumer (KV buckets, NFX_FAN): a consumer name cannot be matched by
   * prefix, so elsewhere that would allow deleting every durable of `s`, and ephemerals lapse by their inactive
   * threshold instead. Where allowed, a reader replaced after a nats-server loss takes its old consumer away at once
   * rather than leave it to the JetStream meta leader for five minutes.
   */
  ordered: (s: string, del = false) => [
    `$JS.API.CONSUMER.CREATE.${s}`, `$JS.API.CONSUMER.CREATE.${s}.>`, `$JS.API.CONSUMER.MSG.NEXT.${s}.*`, `$JS.FC.${s}.>`, `$JS.ACK.${s}.>`,
    ...(del ? [`$JS.API.CONSUMER.DELETE.${s}.*`] : []),
  ],
  /** Delete and re-create the durable consumer `name` of `s` (the tracker rewinds its own). */
  durable: (s: string, name: string) => [`$JS.API.CONSUMER.DURABLE.CREATE.${s}.${name}`, `$JS.API.CONSUMER.CREATE.${s}.${name}`, `$JS.API.CONSUMER.CREATE.${s}.${name}.>`, `$JS.API.CONSUMER.DELETE.${s}.${name}`],
  /** Delete and re-create any durable consumer of `s`: for a stream whose every consumer is the role's own (the webhook gateway's lanes, one per priority and endpoint partition, as many as `endpoints.partitions` makes). */
  durableAny: (s: string) => [`$JS.API.CONSUMER.DURABLE.CREATE.${s}.*`, `$JS.API.CONSUMER.CREATE.${s}.*`, `$JS.API.CONSUMER.CREATE.${s}.*.>`, `$JS.API.CONSUMER.DELETE.${s}.*`],
  /** Read single messages of `s` by sequence or subject. */
  get: (s: string) => [`$JS.API.STREAM.MSG.GET.${s}`, `$JS.API.DIRECT.GET.${s}`, `$JS.API.DIRECT.GET.${s}.>`],
};
const kvStream = KV_STORE.stream;
const kv = {
  read: (b: string) => [...js.get(kvStream(b)), ...js.ordered(kvStream(b), true)],
  write: (b: string) => [...kv.read(b), `$KV.${b}.>`],
};

const send = (c: Channel | "*") => (c === "*" ? "nfx.send.>" : sendAll(c));
/** Recreate its own lane consumers of its send stream (lib/flow/stranded.ts: a consumer nats-server left past its stream). */
const ownLanes = (c: Channel): string[] => PRIORITIES.flatMap((p) => js.durable(STREAM.send(c), CONSUMER.gateway(c, p)));
const gateway = (c: (typeof GATEWAY_CHANNELS)[number]): Perm => ({
  pub: [
    ...js.consume(STREAM.send(c)), ...ownLanes(c), ...js.consume(STREAM.retry),
    send(c), receiptAll, dlqSubject(c), retryOf(c), dirChangedAll,
    // The stream reconciler looks for receipt batches NFX_RECEIPTS may have lost (lib/flow/stream-reconciler.ts).
    ...js.get(STREAM.receipts),
    ...kv.read(BUCKET.campaigns), ADMISSION.all,
  ],
  sub: [ADMISSION.all],
});

/**
 * Who publishes and subscribes where, per role (docs/architecture.md, "Acks,
 * ordering and ownership", rule 5 "Who publishes where"), beyond what every role has: read-only JetStream
 * metadata, its own process-registry entry and its own inbox. Responses to
 * requests a role received need no entry: `allow_responses` covers them.
 */
export const ROLE_PERMISSIONS: Readonly<Record<NatsRoleUser, Perm>> = {
  ingest: {
    pub: [
      intakeAll, receiptAll, dirChangedAll,
      ...kv.write(BUCKET.idempotency), ...kv.write(BUCKET.templates), ...kv.write(BUCKET.campaigns), ...kv.read(BUCKET.counters),
      ...js.get(STREAM.intake), ...js.get(STREAM.receipts), ...js.ordered(STREAM.receipts), ...js.get(STREAM.trails), ...js.ordered(STREAM.trails),
      ...js.get(STREAM.dlq),
    ],
    sub: [API.all, extApiAll],
  },
  scheduler: {
    // Its fan chunks (quiet-hours releases) are looked for in NFX_FAN by its stream reconciler (lib/flow/fan-publisher.ts), as are the router's and the campaign actor's.
    pub: [...js.consume(STREAM.intake), ...js.consume(STREAM.defer), intakeAll, fanAll, ...js.get(STREAM.intake), ...js.get(STREAM.fan)],
    sub: [],
  },
  router: {
    pub: [...js.consume(STREAM.intake), fanAll, ...js.get(STREAM.fan), send("webhook"), ...kv.read(BUCKET.templates)],
    sub: [],
  },
  campaign: {
    pub: [...js.consume(STREAM.intake), fanAll, ...js.get(STREAM.fan), ...kv.write(BUCKET.campaigns), ...kv.write(BUCKET.leases), ...kv.read(BUCKET.counters), ...kv.read(BUCKET.templates), BROADCAST_LIVE_SUBJECT],
    sub: [ADMISSION.all],
  },
  shard: {
    pub: [
      // Its fan lanes: read, and purged up to a checkpoint once the chunk there is looked at (actors/user-shard.ts, purgeTo).
      ...js.ordered(STREAM.fan, true), `$JS.API.STREAM.PURGE.${STREAM.fan}`, ...js.get(STREAM.fan),
      send("*"), receiptAll, deferAll, trailAll,
      // The stream reconciler looks for send and receipt batches a stream may have lost (lib/flow/stream-reconciler.ts).
      ...GATEWAY_CHANNELS.flatMap((c) => js.get(STREAM.send(c))), ...js.get(STREAM.receipts),
      ...kv.write(BUCKET.leases), ...kv.write(BUCKET.checkpoints), ...kv.read(BUCKET.campaigns), ...kv.read(BUCKET.templates),
      ADMISSION.all,
    ],
    sub: [presenceAll, ADMISSION.all],
  },
  "gateway-apns": gateway("apns"),
  "gateway-fcm": gateway("fcm"),
  "gateway-email": gateway("email"),
  "gateway-sms": gateway("sms"),
  // Webhook endpoints: its send stream in, receipts and dead letters out (its retries wait in Redis, not NFX_RETRY).
  // Its endpoint partitions are shared out by lease among the live webhook gateways (lib/flow/shard-ownership.ts).
  "gateway-webhook": { pub: [...js.consume(STREAM.send("webhook")), ...js.durableAny(STREAM.send("webhook")), ...kv.write(BUCKET.leases), ...js.consumeOne(STREAM.receipts, CONSUMER.events), ...js.consumeOne(STREAM.intake, CONSUMER.eventsIntake), receiptAll, dlqSubject("webhook"), ...js.get(STREAM.receipts)], sub: [] },
  "ws-gateway": {
    pub: [
      ...js.consume(STREAM.send("inapp")), ...ownLanes("inapp"), "nfx.live.>", presenceAll, receiptAll, send("*"), ...kv.read(BUCKET.campaigns), ADMISSION.all,
      // The in-app dispatcher's stream reconciler: its receipts and push fallbacks (lib/flow/stream-reconciler.ts).
      ...js.get(STREAM.receipts), ...GATEWAY_CHANNELS.flatMap((c) => js.get(STREAM.send(c))),
    ],
    sub: ["nfx.live.>", BROADCAST_LIVE_SUBJECT, presenceAll, ADMISSION.all],
  },
  tracker: {
    pub: [
      ...js.consume(STREAM.receipts), ...js.consume(STREAM.intake), ...js.durable(STREAM.receipts, CONSUMER.tracker),
      ...js.ordered(STREAM.receipts), ...js.ordered(STREAM.intake), ...js.get(STREAM.intake), ...js.get(STREAM.receipts), ...js.get(STREAM.dlq),
      ...kv.write(BUCKET.counters), ...kv.read(BUCKET.campaigns),
    ],
    sub: [],
  },
};

/** The permissions of an nfx role user as nats-server applies them: the role's table plus what every role has. */
export function rolePermissions(role: NatsRoleUser): Perm {
  const p = ROLE_PERMISSIONS[role];
  return {
    pub: [...new Set([...js.info, ...kv.write(BUCKET.procs), ...p.pub])],
    sub: [...new Set([`${inboxPrefixOf(role)}.>`, ...p.sub])],
  };
}

/** The API operations producers import, local name `nfx.api.<op>` in their account → `nfx.ext.api.<op>` in nfx's. */
export const PRODUCER_OPS = API_OPS;

const q = (s: string): string => JSON.stringify(s);
const list = (xs: readonly string[]): string => `[${xs.map(q).join(", ")}]`;

/**
 * nats-server's configuration for an nfx cluster: account NFX (JetStream,
 * one user per role with {@link rolePermissions}, `allow_responses` for
 * ingest and the ws-gateway, and `nfx-admin` with every permission), account
 * PRODUCERS (one user per name in `producers`, each publishing only the
 * imported API subjects and subscribing only to its own inbox prefix
 * `_INBOX_<name>.>`). Replies to producers travel back through the import, so
 * a producer can neither name a reply subject inside NFX nor see nfx's
 * traffic. Passwords come from {@link natsPassword}.
 */
export function renderNatsServerConf(o: { secret: string; producers: readonly string[]; serverName?: string; maxPayload?: string }): string {
  const user = (name: string, perm: Perm, responses: boolean): string =>
    `      { user: ${q(name)}, password: ${q(natsPassword(o.secret, name))}, permissions: {\n` +
    `          publish: { allow: ${list(perm.pub)} }\n` +
    `          subscribe: { allow: ${list(perm.sub)} }${responses ? "\n          allow_responses: true" : ""}\n      } }`;
  const roleUsers = NATS_ROLE_USERS.map((r) => user(natsUserName(r), rolePermissions(r), r === "ingest" || r === "ws-gateway"));
  const admin = `      { user: ${q(natsUserName("admin"))}, password: ${q(natsPassword(o.secret, natsUserName("admin")))} }`;
  const producers = o.producers.map((p) =>
    user(p, { pub: PRODUCER_OPS.map((op) => API[op]), sub: [`${inboxPrefixOf({ producer: p })}.>`] }, false),
  );
  return [
    "# nats-server configuration generated by `nfx nats-conf` (docs/security.md). Passwords are derived from nats.secret.",
    `server_name: ${q(o.serverName ?? "nfx")}`,
    "# Send and fan batches are ~50-200 KB; leave room.",
    `max_payload: ${o.maxPayload ?? "8MB"}`,
    "jetstream {",
    "  max_memory_store: 1GB",
    "  max_file_store: 50GB",
    "}",
    "accounts {",
    `  ${NFX_ACCOUNT}: {`,
    "    jetstream: enabled",
    "    users: [",
    [...roleUsers, admin].join(",\n"),
    "    ]",
    `    exports: [`,
    PRODUCER_OPS.map((op) => `      { service: ${q(extApiSubject(op))} }`).join(",\n"),
    "    ]",
    "  }",
    `  ${PRODUCER_ACCOUNT}: {`,
    "    users: [",
    producers.join(",\n"),
    "    ]",
    "    imports: [",
    PRODUCER_OPS.map((op) => `      { service: { account: ${NFX_ACCOUNT}, subject: ${q(extApiSubject(op))} }, to: ${q(API[op])} }`).join(",\n"),
    "    ]",
    "  }",
    "}",
    "",
  ].join("\n");
}

