// Scheduler actor: holds notifications with a future send-at time and releases them into their priority lane when due.
import type { JsMsg } from "@nats-io/jetstream";
import type { Config } from "../lib/config.js";
import { decodeAs, PoisonMessage } from "../lib/lanes.js";
import type { Logger } from "../lib/log.js";
import type { Nats } from "../lib/nats.js";
import { CONSUMER, MSGID, STREAM, intakeSubject } from "../lib/subjects.js";
import type { Notification } from "../lib/types.js";

/** Longest single wait before a held message is looked at again (JetStream keeps the timer; a restart loses nothing). */
const MAX_WAIT_MS = 3_600_000;

export interface SchedulerDeps {
  cfg: Config;
  nats: Nats;
  log: Logger;
  now?: () => number;
}

/**
 * Starts the scheduler on `nfx.intake.scheduled.*`. A message not yet due is
 * nak'd with a delay until its send-at time (at most an hour at a time); a due
 * one is republished to `nfx.intake.<prio>.<id>` (message id `due:<id>`) and
 * then acked, so a crash in between republishes the same id and JetStream
 * drops the copy.
 */
export async function startScheduler(d: SchedulerDeps): Promise<{ stop(): Promise<void> }> {
  const log = d.log.child({ actor: "scheduler" });
  const now = d.now ?? Date.now;
  const c = await d.nats.js.consumers.get(STREAM.intake, CONSUMER.scheduler);
  const it = await c.consume({ max_messages: 1000 });
  const handle = async (m: JsMsg): Promise<void> => {
    let n: Notification;
    try {
      n = decodeAs<Notification>(m.data, "notification");
    } catch (err) {
      log.error({ err, seq: m.seq }, "poison message terminated");
      m.term((err as PoisonMessage).message);
      return;
    }
    const wait = (n.sendAt ?? 0) - now();
    if (wait > 0) {
      m.nak(Math.min(wait, MAX_WAIT_MS));
      return;
    }
    try {
      await d.nats.js.publish(intakeSubject(n.priority, n.id), m.data, { msgID: MSGID.due(n.id) });
      m.ack();
    } catch (err) {
      log.warn({ err, nid: n.id }, "release failed; will retry");
      m.nak(1000);
    }
  };
  const done = (async () => {
    for await (const m of it) void handle(m);
  })();
  log.info("scheduler ready");
  return {
    async stop() {
      await it.close();
      await done;
    },
  };
}
