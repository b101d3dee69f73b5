// Chaos-suite accounting: what the sandboxes accepted per device, and which accepted sends had no outcome recorded in Redis at a kill (the duplicate bound).
import { createHook } from "node:async_hooks";
import { type ChildProcess, spawnSync } from "node:child_process";
import { readlinkSync } from "node:fs";

import type { Test } from "tap";

import { deliveredField, deliveredKey } from "../../lib/core/keys.js";
import { shardOf } from "../../lib/core/shard-hash.js";
import type { UserRecord } from "../../lib/core/types.js";
import type { Redis } from "../../lib/infra/redis.js";
import type { Recorder, SandboxProvider } from "../../sandbox/recorder.js";

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/**
 * Ends the test process `graceMs` after `t` ended when something still holds it open, instead of letting it idle
 * until tap's file timeout (tap ends its root only once the event loop drains): prints what is left open
 * (`process.getActiveResourcesInfo()`; each timer with where it was made, each pipe with the process at its other
 * end) and exits 1. The timer is unref'd, so a process that drains exits as usual.
 */
export function exitWhenHeld(t: Test, graceMs = 60_000): void {
  watchTimers();
  t.teardown(() => {
    setTimeout(() => {
      console.error(`the test ended ${graceMs / 1000} s ago and something still holds the process: ${process.getActiveResourcesInfo().join(", ")}\n${heldBy().join("\n")}`);
      process.exit(1);
    }, graceMs).unref();
  });
}

/** Where each live timer of this process was made (its stack), from when {@link exitWhenHeld} was called. */
const timerStacks = new Map<number, { at: string; timer: { hasRef(): boolean } }>();
/** Records where timers are made, to name those that hold the process open. */
function watchTimers(): void {
  createHook({
    init(id, type, _trigger, resource) {
      if (type === "Timeout") timerStacks.set(id, { at: (new Error().stack ?? "").split("\n").slice(1).map((l) => l.trim()).filter((l) => !/\(node:|at node:|AsyncHook\.init/.test(l)).slice(0, 4).join(" < "), timer: resource as { hasRef(): boolean } });
    },
    destroy(id) {
      timerStacks.delete(id);
    },
  }).enable();
}

/** What holds the process open, one line each: the timers left (where they were made), the pipes and sockets (which process holds the other end). */
function heldBy(): string[] {
  const out = [...timerStacks.values()].filter((x) => x.timer.hasRef()).slice(0, 10).map((x) => `  timer made at ${x.at}`);
  // Unix socket pairs (a child's stdio) by inode, with their peers and holders, when iproute2's `ss` is there.
  const ss = spawnSync("ss", ["-xpn"], { encoding: "utf8" }).stdout ?? "";
  const peerOf = new Map<string, string>();
  const holderOf = new Map<string, string>();
  for (const l of ss.split("\n")) {
    const m = /\s(\d+)\s+\S+\s+(\d+)\s*(users:\S*)?\s*$/.exec(l);
    if (!m) continue;
    peerOf.set(m[1], m[2]);
    if (m[3]) holderOf.set(m[1], m[3]);
  }
  // node's own list of handles (undocumented, but the only one with the file descriptors).
  for (const h of (process as unknown as { _getActiveHandles(): unknown[] })._getActiveHandles()) {
    const o = h as { constructor: { name: string }; _handle?: { fd?: number }; pid?: number; spawnfile?: string };
    const fd = o._handle?.fd;
    if (fd !== undefined && fd >= 0 && fd <= 2) continue; // this process's own stdio
    let what = `  ${o.constructor.name}${o.pid ? ` pid ${o.pid} ${o.spawnfile}` : ""}`;
    if (fd !== undefined && fd >= 0) {
      const link = readlinkOr(`/proc/self/fd/${fd}`);
      const inode = /socket:\[(\d+)\]/.exec(link)?.[1];
      const peer = inode ? peerOf.get(inode) : undefined;
      what += ` fd ${fd} ${link}${peer ? `; its other end held by ${holderOf.get(peer) ?? "nobody"}` : ""}`;
    }
    out.push(what);
  }
  return out;
}
const readlinkOr = (p: string): string => {
  try {
    return readlinkSync(p);
  } catch {
    return "";
  }
};

export const exited = (p: ChildProcess): Promise<void> => (p.exitCode !== null || p.signalCode !== null ? Promise.resolve() : new Promise((r) => p.once("exit", () => r())));

/** The ledger of one notification `nid` sent to `users` (push devices only), as the sandbox and Redis see it. */
export interface DeliveryAudit {
  /** Accepted sends of the notification per token, at the sandbox (of one provider, or all). */
  acceptedNow: (provider?: SandboxProvider) => Map<string, number>;
  /**
   * Accepted sends (of `provider`, or all) that no earlier call counted and whose delivered key holds no recorded outcome
   * (absent, or still a claim marker `~…`): the sends that can go out again after a crash. Each is counted once across calls.
   */
  inFlight: (provider?: SandboxProvider) => Promise<number>;
}

/** Builds the {@link DeliveryAudit} of `nid`; `shards` is `cluster.shards`. */
export function deliveryAudit(o: { recorder: Recorder; redis: Redis; nid: string; users: readonly UserRecord[]; shards: number }): DeliveryAudit {
  // Each device's delivered key in Redis, by its token: what the gateway records once the provider answered.
  const keyOf = new Map<string, { hash: string; field: string }>();
  for (const u of o.users) {
    for (const d of u.devices) keyOf.set(d.token, { hash: deliveredKey(shardOf(u.id, o.shards), o.nid, d.platform === "ios" ? "apns" : "fcm"), field: deliveredField(u.id, d.id) });
  }
  const acceptedNow = (provider?: SandboxProvider): Map<string, number> => {
    const m = new Map<string, number>();
    for (const d of o.recorder.accepted(provider)) if (d.nid === o.nid) m.set(d.token, (m.get(d.token) ?? 0) + 1);
    return m;
  };
  const counted = new Map<string, number>();
  return {
    acceptedNow,
    inFlight: async (provider) => {
      const acc = [...acceptedNow(provider)].filter(([tok, n]) => n > (counted.get(tok) ?? 0));
      let n = 0;
      for (let i = 0; i < acc.length; i += 2000) {
        const part = acc.slice(i, i + 2000);
        // One GET per key (auto-pipelined): on Redis Cluster the keys live in many slots, which one MGET may not span.
        // Retried while a Redis Cluster fails over (MOVED, CLUSTERDOWN, a lost connection: lib/infra/redis.ts).
        const get = async (key: { hash: string; field: string }): Promise<string | null> => {
          for (let attempt = 0; ; attempt++) {
            try {
              return await o.redis.hget(key.hash, key.field);
            } catch (err) {
              if (attempt >= 100) throw err;
              await sleep(200);
            }
          }
        };
        const vals = await Promise.all(part.map(([tok]) => get(keyOf.get(tok)!)));
        part.forEach(([tok, c], j) => {
          const v = vals[j];
          if (v === null || v === undefined || v.startsWith("~")) {
            n += c - (counted.get(tok) ?? 0);
            counted.set(tok, c);
          }
        });
      }
      return n;
    },
  };
}
