// Shedding under overload: the deadline after which a normal or bulk send of a category with `overload: "shed"` is dropped (outcome `shed`) instead of sent late.
import type { Priority } from "../core/subjects.js";

/** What a category does with sends it cannot deliver in time: `delay` sends them late (until expiry), `shed` drops them. */
export type OverloadMode = "delay" | "shed";

/** Why a send was shed: its category's `maxDelaySec` passed, or the notification expired. */
export const SHED_REASONS = ["max_delay", "expired"] as const;
export type ShedReason = (typeof SHED_REASONS)[number];

/** The overload settings of one category. */
export interface OverloadRule {
  overload: OverloadMode;
  /** Seconds after acceptance (or after the end of the quiet hours a send waited for) past which a shed category's send is shed. */
  maxDelaySec?: number;
}

/** Whether sends of `priority` under `rule` may be shed: only normal and bulk, only when the category says `shed`. Critical and high never are. */
export const sheds = (rule: OverloadRule | undefined, priority: Priority): boolean =>
  rule?.overload === "shed" && (priority === "normal" || priority === "bulk");

/**
 * The shed deadline of a send of a notification (`createdAt`, `expiresAt`,
 * `priority`) under `rule`: the earlier of `since + maxDelaySec` and the
 * expiry, where `since` is the acceptance time, or the end of the quiet hours
 * the recipient waited for (a deliberate wait is not overload). Null when the
 * send is never shed ({@link sheds}). Pure.
 */
export function shedDeadline(rule: OverloadRule | undefined, n: { priority: Priority; createdAt: number; expiresAt: number }, since = n.createdAt): number | null {
  if (!sheds(rule, n.priority)) return null;
  return rule!.maxDelaySec !== undefined ? Math.min(n.expiresAt, since + rule!.maxDelaySec * 1000) : n.expiresAt;
}

/**
 * Why a send with shed deadline `deadline` (from {@link shedDeadline}) of a
 * notification expiring at `expiresAt` is shed at `now`, or null when it may
 * still go: `max_delay` once `now` is past a deadline earlier than the
 * expiry, else `expired` once `now` reaches the expiry. Pure.
 */
export function shedReason(deadline: number, expiresAt: number, now: number): ShedReason | null {
  if (deadline < expiresAt && now > deadline) return "max_delay";
  if (now >= expiresAt) return "expired";
  return null;
}
