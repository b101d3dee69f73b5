// The root pino logger. Device tokens, emails, phone numbers and message bodies are redacted by default.
import { type Logger, pino } from "pino";

export type { Logger };

/** Paths pino censors when redaction is on. Covers request bodies, directory records and send batches. */
export const REDACT_PATHS = [
  "token", "*.token", "*.tokens", "*.*.token", "sends[*].token", "devices[*].token", "*.devices[*].token",
  "email", "*.email", "*.*.email", "phone", "*.phone", "*.*.phone",
  "body", "*.body", "*.*.body", "title", "*.title", "*.*.title", "push", "*.push",
  "pass", "*.pass", "authorization", "*.authorization", "*.headers.authorization",
];

/**
 * Creates the one root logger of a process. Children per actor come from
 * `log.child({ actor, shard })`. Errors go under `err`. With `redact` on
 * (the default), the values at {@link REDACT_PATHS} print as "[redacted]".
 */
export function createLogger(o: { level: string; redact: boolean; name?: string }, dest?: pino.DestinationStream): Logger {
  const opts: pino.LoggerOptions = {
    level: o.level,
    base: { pid: process.pid, ...(o.name ? { role: o.name } : {}) },
    serializers: { err: pino.stdSerializers.err },
    ...(o.redact ? { redact: { paths: REDACT_PATHS, censor: "[redacted]" } } : {}),
  };
  return dest ? pino(opts, dest) : pino(opts);
}
