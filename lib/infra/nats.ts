// NATS connection handling: connect with endless reconnects, log every status change, never exit on a disconnect.
import { jetstream, JetStreamApiCodes, JetStreamApiError, type JetStreamClient, type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";

import { backoffMs } from "../core/backoff.js";
import type { Config } from "../core/config.js";
import type { Logger } from "../core/log.js";
import { KV_STORE } from "../core/subjects.js";
import { inboxPrefixOf, type NatsIdentity, natsPassword, natsUserName } from "./nats-auth.js";

/** A NATS connection with its JetStream and KV handles. */
export interface Nats {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  kvm: Kvm;
}

/**
 * The keys of KV bucket `bucket` matching `filter` (a key with KV wildcards), each once and including deleted ones (check
 * the entry's operation), from the bucket stream's per-subject counts, answered by the stream's leader. Use it rather
 * than nats.js `kv.keys()`: that reads a consumer until its pending count is 0, so a key written while it runs is named
 * twice or the listing ends after a few keys; and it creates a consumer through the JetStream meta leader, which after
 * a nats-server loss times out for minutes.
 */
export async function kvKeys(jsm: JetStreamManager, bucket: string, filter: string): Promise<string[]> {
  const prefix = KV_STORE.subject(bucket, "");
  const si = await jsm.streams.info(KV_STORE.stream(bucket), { subjects_filter: KV_STORE.subject(bucket, filter) });
  return Object.keys(si.state.subjects ?? {}).map((s) => s.slice(prefix.length));
}

/** Whether `err` is JetStream's answer that the consumer asked about does not exist. */
export const isConsumerNotFound = (err: unknown): boolean => err instanceof JetStreamApiError && err.code === JetStreamApiCodes.ConsumerNotFound;

/**
 * Whether a JetStream API error means "busy, or electing a leader: ask again" — a request timeout, no responders, or the
 * cluster's "temporarily unavailable" (503) — rather than a refusal. On a nats-server cluster these last through a leader
 * election (nats-server's Raft elections take 4 to 9 s).
 */
export const isTransientJsError = (err: unknown): boolean => /timeout|temporarily unavailable|no responders|\b503\b|jetstream is not enabled/i.test(String((err as Error)?.message ?? err));

/**
 * Runs `fn` until it succeeds. A transient JetStream error ({@link isTransientJsError}) is retried after a growing
 * delay (`baseMs`, doubling up to `maxMs`), at most `attempts` times and not past `until` (epoch ms); `onRetry` sees
 * each one first. Any other error, the last allowed one, or `stop()` turning true, is thrown.
 */
export async function retryTransient<T>(
  fn: () => Promise<T>,
  o: { baseMs: number; maxMs: number; attempts?: number; until?: number; stop?: () => boolean; onRetry?: (err: unknown, attempt: number) => void },
): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!isTransientJsError(err) || o.stop?.() || attempt >= (o.attempts ?? Infinity) || Date.now() > (o.until ?? Infinity)) throw err;
      o.onRetry?.(err, attempt);
      await new Promise((r) => setTimeout(r, backoffMs(attempt, { baseMs: o.baseMs, maxMs: o.maxMs })));
    }
  }
}

/** Options of {@link connectNats}. */
export interface ConnectNatsOptions {
  /** Wait for an unreachable server at start-up (roles), retrying with a logged, growing delay, instead of throwing (CLI tools). */
  waitForServer?: boolean;
}

/** Delay before start-up attempt `n` (1-based): 250 ms doubling up to 5 s. */
export const startupBackoffMs = (n: number): number => backoffMs(n - 1, { baseMs: 250, maxMs: 5000 });

/**
 * Connects to the configured servers as identity `as` (a role's own user, or
 * `admin` for the CLI and tools; lib/infra/nats-auth.ts): its user, the password
 * derived from `nats.secret`, and its private inbox prefix. Reconnects
 * forever (logged as warnings, not fatal). Throws if the first connection
 * cannot be made at all, unless `o.waitForServer`: then a refused or
 * unreachable server is retried until it answers, each retry logged with its
 * delay ({@link startupBackoffMs}); other errors (authentication) still throw.
 */
export async function connectNats(cfg: Config, log: Logger, name: string, as: NatsIdentity = "admin", o: ConnectNatsOptions = {}): Promise<Nats> {
  const user = natsUserName(as);
  const opts = {
    servers: [...cfg.nats.servers],
    name,
    user,
    pass: natsPassword(cfg.nats.secret, user),
    inboxPrefix: inboxPrefixOf(as),
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    // No error object (with its stack) made in advance for every request and JetStream publish: nats.js otherwise
    // builds one to put the caller's stack in a timeout, about 4% of the shard actor's CPU (docs/benchmarks.md).
    noAsyncTraces: true,
  };
  let nc: NatsConnection;
  for (let attempt = 1; ; attempt++) {
    try {
      nc = await connect(opts);
      break;
    } catch (err) {
      if (!o.waitForServer || (err as Error).name !== "ConnectionError") throw err;
      const retryInMs = startupBackoffMs(attempt);
      log.warn({ err, servers: opts.servers, attempt, retryInMs }, "nats not reachable yet, waiting");
      await new Promise((r) => setTimeout(r, retryInMs));
    }
  }
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === "ping") continue;
      const lvl = s.type === "disconnect" || s.type === "error" || s.type === "staleConnection" ? "warn" : "info";
      log[lvl]({ nats: s.type, server: "server" in s ? s.server : undefined }, `nats ${s.type}`);
    }
  })();
  const js = jetstream(nc);
  const jsm = await jetstreamManager(nc);
  return { nc, js, jsm, kvm: new Kvm(nc) };
}
