// What every CLI command shares: the validated config, a quiet logger, and NATS/Redis connections closed on exit.
import type { Command } from "commander";
import { pino } from "pino";

import { type Config, loadConfig } from "../lib/core/config.js";
import { createLogger, type Logger } from "../lib/core/log.js";
import { connectNats, type Nats } from "../lib/infra/nats.js";
import { connectRedis, type Redis } from "../lib/infra/redis.js";

/** Loads the config named by the root command's --config (else $NFX_CONFIG). Throws ConfigInvalid. */
export const cliConfig = (program: Command): Config => loadConfig({ file: program.opts<{ config?: string }>().config });

/** A logger for one-shot commands: warnings and errors only, on stderr. */
export const cliLog = (cfg: Config): Logger => createLogger({ level: "warn", redact: cfg.log.redact }, pino.destination(2));

/** NATS and Redis clients for a tool (CLI command, demo, benchmark, test), logging warnings to stderr. */
export async function openClients(cfg: Config, name: string): Promise<{ nats: Nats; redis: Redis; close: () => Promise<void> }> {
  const log = cliLog(cfg);
  const nats = await connectNats(cfg, log, name);
  const redis = await connectRedis(cfg, log);
  return {
    nats,
    redis,
    async close() {
      await nats.nc.close();
      redis.disconnect();
    },
  };
}

/** Runs `fn` with NATS and/or Redis connections and closes them afterwards, whatever happens. */
export async function withConnections<T>(cfg: Config, want: { nats?: boolean; redis?: boolean }, fn: (c: { nats: Nats; redis: Redis }) => Promise<T>): Promise<T> {
  const log = cliLog(cfg);
  const nats = want.nats ? await connectNats(cfg, log, "nfx-cli") : undefined;
  const redis = want.redis ? await connectRedis(cfg, log) : undefined;
  try {
    return await fn({ nats: nats!, redis: redis! });
  } finally {
    await nats?.nc.close();
    redis?.disconnect();
  }
}
