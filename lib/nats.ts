// NATS connection handling: connect with endless reconnects, log every status change, never exit on a disconnect.
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { Config } from "./config.js";
import type { Logger } from "./log.js";
import { inboxPrefixOf, natsPassword, natsUserName, type NatsIdentity } from "./nats-auth.js";

/** A NATS connection with its JetStream and KV handles. */
export interface Nats {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  kvm: Kvm;
}

/**
 * Connects to the configured servers as identity `as` (a role's own user, or
 * `admin` for the CLI and tools; lib/nats-auth.ts): its user, the password
 * derived from `nats.secret`, and its private inbox prefix. Reconnects
 * forever (logged as warnings, not fatal). Throws if the first connection
 * cannot be made at all.
 */
export async function connectNats(cfg: Config, log: Logger, name: string, as: NatsIdentity = "admin"): Promise<Nats> {
  const user = natsUserName(as);
  const nc = await connect({
    servers: [...cfg.nats.servers],
    name,
    user,
    pass: natsPassword(cfg.nats.secret, user),
    inboxPrefix: inboxPrefixOf(as),
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
  });
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
