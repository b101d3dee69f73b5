// The process roles `nfx run <role>` can start, and the code that wires each to its connections.
import type { Config } from "../lib/core/config.js";
import { ConfigInvalid } from "../lib/core/errors.js";
import type { Logger } from "../lib/core/log.js";
import { BUCKET, LANE_CLASSES, type LaneClass } from "../lib/core/subjects.js";
import { connectNats, type Nats } from "../lib/infra/nats.js";
import { announceProcess } from "../lib/infra/processes.js";
import { connectRedis, type Redis } from "../lib/infra/redis.js";
import { refusePublishedDefaults } from "../lib/infra/secrets.js";
import { awaitTopology } from "../lib/infra/topology.js";
import { requireNativeUws } from "../lib/infra/uws.js";

export const ROLES = ["ingest", "scheduler", "router", "campaign", "shard", "gateway-apns", "gateway-fcm", "gateway-email", "gateway-sms", "gateway-webhook", "ws-gateway", "tracker"] as const;
export type Role = (typeof ROLES)[number];

/** Roles that consume priority lanes and can run one lane class only (`nfx run <role> --lanes urgent|bulk`). */
export const LANE_ROLES = ["shard", "gateway-apns", "gateway-fcm", "gateway-email", "gateway-sms"] as const satisfies readonly Role[];
export type LaneRole = (typeof LANE_ROLES)[number];

/**
 * A process to start: a role, or a lane role restricted to one lane class (`shard@urgent`). `nfx up` and the test
 * harness start one process per spec; the lane class also picks the process's OS scheduling priority (`lanes.nice`).
 */
export type ProcessSpec = Role | `${LaneRole}@${LaneClass}`;

/** The processes `nfx up` starts: every role, each lane role (shard actor, gateways) split into an urgent and a bulk process (docs/priorities.md). */
export const UP_PROCESSES: readonly ProcessSpec[] = ROLES.flatMap((r): ProcessSpec[] => ((LANE_ROLES as readonly string[]).includes(r) ? [`${r as LaneRole}@urgent`, `${r as LaneRole}@bulk`] : [r]));

/** Splits a process spec into its role and lane classes (both when none is named). Throws ConfigInvalid (field `role`) naming the rule for anything else. */
export function parseProcessSpec(spec: string): { role: Role; lanes: readonly LaneClass[] } {
  const [role, cls, more] = spec.split("@");
  const bad = (msg: string): ConfigInvalid => new ConfigInvalid(`role: ${msg}`, { field: "role" });
  if (!(ROLES as readonly string[]).includes(role)) throw bad(`unknown role "${role}" (one of ${ROLES.join(", ")})`);
  if (cls === undefined) return { role: role as Role, lanes: LANE_CLASSES };
  if (more !== undefined || !(LANE_CLASSES as readonly string[]).includes(cls)) throw bad(`"${spec}" names no lane class (urgent or bulk after @)`);
  if (!(LANE_ROLES as readonly string[]).includes(role)) throw bad(`${role} does not run per lane class (only ${LANE_ROLES.join(", ")})`);
  return { role: role as Role, lanes: [cls as LaneClass] };
}

type Started = { stop(): Promise<void> };

/** `lanes`: the lane classes a lane role consumes in this process (both by default). */
type Deps = { cfg: Config; nats: Nats; redis: Redis; log: Logger; lanes: readonly LaneClass[] };

/** The ingest role: the NATS surface and, when enabled, the HTTP API, sharing one intake. */
async function startIngestRole(d: Deps): Promise<Started> {
  const [{ TemplateStore }, { Intake }, { Campaigns }, { startIngest }, { startHttpApi }] = await Promise.all([
    import("../lib/intake/templates.js"), import("../lib/intake/intake.js"), import("../lib/campaign/campaigns.js"), import("../actors/ingest.js"), import("../actors/http-api.js"),
  ]);
  const templates = new TemplateStore(await d.nats.kvm.open(BUCKET.templates));
  const intake = new Intake({ cfg: d.cfg, nats: d.nats, redis: d.redis, templates, idempotency: await d.nats.kvm.open(BUCKET.idempotency) });
  const campaigns = new Campaigns(await d.nats.kvm.open(BUCKET.campaigns), await d.nats.kvm.open(BUCKET.counters));
  const parts: Started[] = [await startIngest({ ...d, intake, campaigns })];
  if (d.cfg.http.enabled) parts.push(await startHttpApi({ ...d, intake, templates, campaigns }));
  return {
    stop: async () => {
      await Promise.all(parts.map((p) => p.stop()));
      intake.close();
    },
  };
}

/** The scheduler role: send-at times and quiet-hours releases, both "hold until due". */
async function startSchedulerRole(d: Deps): Promise<Started> {
  const [{ startScheduler }, { startDeferredRelease }] = await Promise.all([import("../actors/scheduler.js"), import("../actors/deferred-release.js")]);
  const parts = [await startScheduler(d), await startDeferredRelease(d)];
  return { stop: async () => void (await Promise.all(parts.map((p) => p.stop()))) };
}

/** The ws-gateway role: live connections, presence and inbox API, plus the in-app dispatcher that offers sends to them. */
async function startWsGatewayRole(d: Deps): Promise<Started> {
  const [{ startWsGateway }, { startInAppDispatch }] = await Promise.all([import("../actors/ws-gateway.js"), import("../actors/inapp-dispatch.js")]);
  const gw = await startWsGateway(d);
  const dispatch = await startInAppDispatch(d);
  return {
    stop: async () => {
      await dispatch.stop();
      await gw.stop();
    },
  };
}

/**
 * Each role's starter. Actors are imported when their role starts, so a process loads only its own roles' code
 * (the provider SDKs alone take a second of CPU to load): `nfx up` starts seventeen processes.
 */
const starters: Record<Role, (d: Deps) => Promise<Started>> = {
  ingest: startIngestRole,
  scheduler: startSchedulerRole,
  campaign: async (d) => (await import("../actors/campaign.js")).startCampaign(d),
  tracker: async (d) => {
    // The tracker's process reports the cluster-wide gauges (consumer lag, stream sizes, DLQ depth): one reporter per cluster.
    (await import("../lib/infra/metrics.js")).watchCluster(d.nats);
    return (await import("../actors/tracker.js")).startTracker(d);
  },
  router: async (d) => (await import("../actors/router.js")).startRouter(d),
  shard: async (d) => (await import("../actors/user-shard.js")).startUserShard(d),
  "gateway-apns": async (d) => (await import("../actors/gateway-apns.js")).startGatewayApns(d),
  "gateway-fcm": async (d) => (await import("../actors/gateway-fcm.js")).startGatewayFcm(d),
  "gateway-email": async (d) => (await import("../actors/gateway-email.js")).startGatewayEmail(d),
  "gateway-sms": async (d) => (await import("../actors/gateway-sms.js")).startGatewaySms(d),
  "gateway-webhook": async (d) => (await import("../actors/gateway-webhook.js")).startGatewayWebhook(d),
  "ws-gateway": startWsGatewayRole,
};

/**
 * Starts `roles` in this process (lane roles consuming the lane classes
 * `lanes`, both by default): refuses published default secrets
 * ({@link refusePublishedDefaults}, InsecureDefault naming the key), checks
 * the native runtime, connects Redis and, per role, NATS as that role's own
 * user (lib/infra/nats-auth.ts: least privilege, private inbox) — both waited for
 * when not up yet —, waits until `nfx init` has made the topology (roles may
 * not create streams), then starts each role's actor. `stop()` stops the
 * actors, then closes the connections. Throws if any step fails (nothing is
 * left running then).
 */
export async function startRoles(roles: readonly Role[], cfg: Config, log: Logger, lanes: readonly LaneClass[] = LANE_CLASSES): Promise<Started> {
  refusePublishedDefaults(cfg);
  requireNativeUws();
  const conns: Nats[] = [];
  let redis: Redis | undefined;
  const started: Started[] = [];
  const close = async (): Promise<void> => {
    for (const s of started.reverse()) await s.stop().catch((err) => log.error({ err }, "stop failed"));
    for (const n of conns) await n.nc.drain().catch(() => undefined);
    redis?.disconnect();
  };
  try {
    // A role waits for NATS and Redis to come up (logged, growing delay) rather than exiting: start order does not matter.
    for (const r of roles) conns.push(await connectNats(cfg, log.child({ role: r }), `nfx-${r}`, r, { waitForServer: true }));
    redis = await connectRedis(cfg, log, { waitForServer: true });
    await awaitTopology(conns[0], cfg, log);
    for (const [i, r] of roles.entries()) started.push(await starters[r]({ cfg, nats: conns[i], redis, lanes, log: log.child(lanes.length === 1 ? { role: r, lanes: lanes[0] } : { role: r }) }));
    // Announced last: a process in the registry is one whose roles are running.
    started.push(await announceProcess(cfg, conns[0], roles, log));
  } catch (err) {
    await close();
    throw err;
  }
  return { stop: close };
}
