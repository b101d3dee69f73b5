// Scheduler actor: holds notifications with a future send-at time and releases them into their priority lane when due.
import { CONSUMER, intakeSubject, MSGID, STREAM } from "../lib/core/subjects.js";
import type { Notification } from "../lib/core/types.js";
import { type HoldActorDeps, holdUntilDue } from "../lib/flow/hold-until-due.js";

export type SchedulerDeps = HoldActorDeps;

/**
 * Starts the scheduler on `nfx.intake.scheduled.*`. A message not yet due
 * waits (lib/flow/hold-until-due.ts); a due one is republished to
 * `nfx.intake.<prio>.<id>` (message id `due:<id>`) and then acked, so a crash
 * in between republishes the same id and JetStream drops the copy.
 */
export async function startScheduler(d: SchedulerDeps): Promise<{ stop(): Promise<void> }> {
  const log = d.log.child({ actor: "scheduler" });
  const held = await holdUntilDue<Notification>({
    nats: d.nats, log, stream: STREAM.intake, consumer: CONSUMER.scheduler, type: "notification", now: d.now ?? Date.now,
    dueAt: (n) => n.sendAt ?? 0,
    release: (n, raw) => d.nats.js.publish(intakeSubject(n.priority, n.id), raw, { msgID: MSGID.due(n.id) }),
  });
  log.info("scheduler ready");
  return held;
}
