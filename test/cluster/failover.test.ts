// Cluster failover (npm run test:cluster): a 200,000-user campaign on three nats-servers (R3) and a Redis Cluster while JetStream leaders and a Redis master are SIGKILLed; 0 lost, duplicates within the sends in flight, recovery times measured.
import { writeFileSync } from "node:fs";
import { join } from "node:path";

import t from "tap";

import type { CampaignStatus } from "../../lib/campaign/campaigns.js";
import { decode } from "../../lib/core/codec.js";
import { deliveredField, deliveredKey } from "../../lib/core/keys.js";
import { shardOf } from "../../lib/core/shard-hash.js";
import { API, BUCKET, checkpointKey, CONSUMER, fanSubject, LEASE_KEY, PRIORITIES, receiptSubject, STREAM } from "../../lib/core/subjects.js";
import type { ReceiptBatch, UserRecord } from "../../lib/core/types.js";
import { writeUsers } from "../../lib/directory/directory.js";
import { syntheticUser } from "../../lib/directory/users.js";
import { readStored } from "../../lib/flow/stream-read.js";
import { callApi, notify, status } from "../../lib/intake/api-client.js";
import { deliveryAudit, exitWhenHeld, sleep } from "../helpers/chaos.js";
import { clientsFor, eventually, startTestCluster } from "../helpers/cluster.js";

const DAY = 86_400_000;
const USERS = Number(process.env.FAILOVER_USERS ?? 200_000);
/** nats-server SIGKILLs (each restarted, and caught up, before the next). */
const NATS_KILLS = Number(process.env.FAILOVER_NATS_KILLS ?? 10);
/** Streams whose leader is killed in turn, between kills of the meta leader. */
const LEADER_STREAMS = [STREAM.fan, STREAM.send("apns"), STREAM.intake, STREAM.send("fcm"), STREAM.receipts];
const SETTLE_MS = 600_000;
/** The campaign is paced to last this long, outlasting the kills. */
const CAMPAIGN_SECS = Number(process.env.FAILOVER_CAMPAIGN_SECS ?? 360);

const pct = (xs: readonly number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : 0;
};

t.test(`${USERS.toLocaleString("en")} users; JetStream leaders SIGKILLed ${NATS_KILLS} times and a Redis master once: 0 lost, duplicates ≤ sends in flight`, { timeout: 1_500_000 }, async (t) => {
  // After a failed check this file once stayed open until tap's 1,500 s timeout with nothing of the cluster left: it now ends a minute after the test and says what held it.
  exitWhenHeld(t);
  const cluster = await startTestCluster(t, {
    own: "all",
    natsNodes: 3,
    redis: "cluster",
    // Leases outlast a nats-server Raft election (4 to 9 s) and checkpoints come every 5 s, as docs/operations.md recommends for a cluster.
    overrides: { shard: { leaseMs: 15_000, checkpointMs: 5000 }, campaign: { leaseMs: 15_000, chunkSize: 1000 } },
  });
  const onSignal = (): void => void cluster.stop().finally(() => process.exit(130));
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  t.teardown(() => void (process.off("SIGINT", onSignal), process.off("SIGTERM", onSignal)));
  const nc = cluster.natsCluster!;
  const cfg = cluster.cfg;
  const P = cfg.cluster.shards;
  t.equal(cfg.streams.replicas, 3, "streams and buckets have three replicas");
  const { nats, redis } = await clientsFor(t, cfg);
  for (const s of [STREAM.fan, STREAM.send("apns"), "KV_nfx-leases"]) {
    t.equal((await nats.jsm.streams.info(s)).cluster?.replicas?.length, 2, `${s}: a leader and two replicas`);
  }

  const now = Date.now();
  const users: UserRecord[] = Array.from({ length: USERS }, (_, i) => syntheticUser(i, now));
  for (let i = 0; i < users.length; i += 5000) await writeUsers(redis, P, users.slice(i, i + 5000));
  const probeUser: UserRecord = { id: "probe", lastActive: now - 400 * DAY, devices: [{ id: "p", platform: "ios", token: "probe-0123456789abcdef0123456789abcdef" }] };
  await writeUsers(redis, P, [probeUser]);
  // Three shard actors share the 64 shards; a killed nats-server's clients move to the others.
  await cluster.startExtra("shard");
  await cluster.startExtra("shard");

  const { recorder } = cluster.sandbox!;
  // Providers answer after 50 ms, so a campaign has sends in flight at every kill.
  for (const provider of ["apns", "fcm"] as const) recorder.faults.add({ provider, latencyMs: 50 });
  const { id } = await notify(nats.nc, { segment: "active_30d", category: "social", content: { push: { title: "Failover", body: "f" } }, campaign: { rate: Math.ceil(USERS / CAMPAIGN_SECS) } });
  const started = Date.now();
  // The sandboxes answer from this process: a stall here (GC, a blocking write, a starved CPU) makes providers look slow
  // to the gateways. Its event-loop delay is measured, and each stall over a second kept with when it ended.
  const stalls: { at_s: number; ms: number }[] = [];
  let tick = performance.now();
  let maxLate = 0;
  const stallTimer = setInterval(() => {
    const late = performance.now() - tick - 100;
    tick = performance.now();
    maxLate = Math.max(maxLate, late);
    if (late > 1000) stalls.push({ at_s: Math.round((Date.now() - started) / 100) / 10, ms: Math.round(late) });
  }, 100);
  t.teardown(() => clearInterval(stallTimer));
  const campaignStatus = (): Promise<CampaignStatus> => callApi<CampaignStatus>(nats.nc, API.campaign, { id, action: "status" });
  let createdAt = 0;
  t.ok(await eventually(async () => ((createdAt = (await campaignStatus()).createdAt), true), 60_000), "the campaign is recorded");
  const audit = deliveryAudit({ recorder, redis, nid: id, users, shards: P });
  const accepted = (): number => recorder.acceptedCount.apns + recorder.acceptedCount.fcm;
  t.ok(await eventually(() => accepted() > 0, 120_000), "deliveries under way");

  /** Time until the sandboxes accept a send of the campaign again, and until a critical probe sent now arrives. */
  const recovery = async (): Promise<{ resume_ms: number; probe_ms: number }> => {
    const at = Date.now();
    const before = accepted();
    // As a producer does: a request that times out while a leader is elected is sent again, under the same idempotency key.
    const req = { recipients: [probeUser.id], category: "security", priority: "critical", idempotencyKey: `probe-${at}`, content: { push: { title: "probe", body: "p" } } };
    const probe = (async (): Promise<{ id: string }> => {
      for (;;) {
        try {
          return await notify(nats.nc, req);
        } catch (err) {
          if (Date.now() > at + 120_000) throw err;
          await sleep(100);
        }
      }
    })();
    let resume = -1;
    let probeMs = -1;
    const until = at + 120_000;
    let described = false;
    while ((resume < 0 || probeMs < 0) && Date.now() < until) {
      if (!described && Date.now() > at + 20_000) {
        // Still stuck after 20 s: each stream's and bucket's leader and replicas, for the failure log.
        described = true;
        console.error(`after 20 s: ${await describeStreams().catch((err: Error) => err.message)}\n${await whereIsProbe().catch((err: Error) => err.message)}`);
      }
      if (resume < 0 && accepted() > before) resume = Date.now() - at;
      if (probeMs < 0) {
        const pid = await Promise.race([probe.then((p) => p.id), sleep(0).then(() => "")]);
        if (pid && recorder.deliveries.some((d) => d.nid === pid && d.status === 200)) probeMs = Date.now() - at;
      }
      await sleep(20);
    }
    if (probeMs < 0) {
      // Where the probe got to, for the failure message.
      const pid = await Promise.race([probe.then((p) => p.id), sleep(1000).then(() => "")]);
      console.error(`probe ${pid || "(not accepted)"} not delivered after 120 s: ${pid ? JSON.stringify(await status(nats.nc, pid).catch((err: Error) => err.message)) : ""}`);
    }
    return { resume_ms: resume, probe_ms: probeMs };
  };

  /** One line per stream or bucket: its leader and each replica's state (current, offline, lag, last seen). */
  async function describeStreams(): Promise<string> {
    const lines: string[] = [];
    for await (const si of nats.jsm.streams.list()) {
      const c = si.cluster;
      const reps = (c?.replicas ?? []).map((r) => `${r.name}${r.current ? "" : " behind"}${r.offline ? " offline" : ""} lag ${r.lag ?? 0} seen ${r.active ? Math.round(r.active / 1e6) : "?"} ms`);
      lines.push(`${si.config.name}: leader ${c?.leader ?? "NONE"}; ${reps.join(", ")}; msgs ${si.state.messages}`);
    }
    return lines.join("\n");
  }

  /** The probe's path: the router's critical consumer, the probe shard's critical fan subject, the APNs gateway's critical consumer. */
  async function whereIsProbe(): Promise<string> {
    const ci = async (stream: string, name: string): Promise<string> => {
      const c = await nats.jsm.consumers.info(stream, name).catch((err: Error) => err.message);
      return typeof c === "string" ? `${stream}/${name}: ${c}` : `${stream}/${name}: leader ${c.cluster?.leader ?? "NONE"} pending ${c.num_pending} ack_pending ${c.num_ack_pending} waiting ${c.num_waiting} delivered ${c.delivered.stream_seq}`;
    };
    const shard = shardOf(probeUser.id, P);
    const fan = fanSubject("critical", shard);
    const fi = await nats.jsm.streams.info(STREAM.fan, { subjects_filter: fan });
    // Who holds the shard's urgent lanes, and how far its checkpoint got.
    const kvGet = async (bucket: string, key: string): Promise<string> => {
      const e = await (await nats.kvm.open(bucket)).get(key).catch((err: Error) => err.message);
      if (typeof e === "string" || !e) return String(e);
      if (bucket === BUCKET.leases) return e.string();
      const m = decode<{ owner: string; epoch: number; at: number; pos: Record<string, number> }>(e.value);
      return JSON.stringify({ owner: m.owner, epoch: m.epoch, ago_ms: Date.now() - m.at, pos: m.pos });
    };
    return [
      await ci(STREAM.intake, CONSUMER.router("critical")),
      `${fan}: ${fi.state.subjects?.[fan] ?? 0} chunks (stream last seq ${fi.state.last_seq}); lease ${await kvGet(BUCKET.leases, LEASE_KEY.shard("urgent", shard))} (now ${Date.now()}); checkpoint ${await kvGet(BUCKET.checkpoints, checkpointKey("urgent", shard))}`,
      await ci(STREAM.send("apns"), CONSUMER.gateway("apns", "critical")),
    ].join("\n");
  }

  /** Durable consumers whose delivered position is past their stream's last sequence (nats-server #5412, #6124: they skip what is published until the stream catches up). */
  async function consumersAhead(): Promise<string> {
    const out: string[] = [];
    for await (const si of nats.jsm.streams.list()) {
      for await (const ci of nats.jsm.consumers.list(si.config.name)) {
        if (ci.delivered.stream_seq > si.state.last_seq) out.push(`${si.config.name}/${ci.name}: delivered ${ci.delivered.stream_seq} > stream last ${si.state.last_seq} (first ${si.state.first_seq}, ${si.state.messages} msgs)`);
      }
    }
    return out.length ? out.join("\n") : "no consumer is ahead of its stream";
  }

  /** Every stream and bucket has a leader and two replicas that are current. */
  /**
   * A replica caught up: current, or a few entries behind and heard from within 2 s. Under a campaign's steady writes a
   * follower being fed is often a few entries behind when asked, and nats-server 2.9.10 then reports it not current
   * (one run saw `lag 1 seen 6 ms` on NFX_SEND_APNS for minutes, every other replica current).
   */
  const caughtUp = (r: { current: boolean; offline?: boolean; lag?: number; active: number }): boolean => !r.offline && (r.current || ((r.lag ?? 0) <= 10 && r.active > 0 && r.active < 2e9));
  const allCurrent = async (): Promise<boolean> => {
    for await (const si of nats.jsm.streams.list()) {
      const c = si.cluster;
      if (!c?.leader || c.replicas?.length !== 2 || !c.replicas.every(caughtUp)) return false;
    }
    return true;
  };

  /** The nodes holding a replica that is not caught up (or offline) of some stream or bucket. */
  const behindNodes = async (): Promise<string[]> => {
    const out = new Set<string>();
    for await (const si of nats.jsm.streams.list()) for (const r of si.cluster?.replicas ?? []) if (!caughtUp(r)) out.add(r.name);
    return [...out];
  };

  const killedAt: number[] = [];
  const kills: { what: string; node: string; at_s: number; in_flight: number; accepted_before: number; resume_ms: number; probe_ms: number }[] = [];
  // One Redis master SIGKILLed halfway through the NATS kills (the campaign still sending); its replica takes over
  // (cluster-node-timeout), and only then does it come back (as a replica: without persistence, a master restarted
  // before its replica took over would come back empty).
  /** Kills `node` with `kill`, measures the recovery and the sends in flight, and records it as a kill of `what`. */
  const measuredKill = async (what: string, node: string, kill: () => Promise<void>): Promise<{ resume_ms: number; probe_ms: number }> => {
    const acceptedBefore = accepted();
    killedAt.push(Date.now());
    await kill();
    const r = await recovery();
    const inFlight = await audit.inFlight();
    kills.push({ what, node, at_s: Math.round((killedAt[killedAt.length - 1] - started) / 100) / 10, in_flight: inFlight, accepted_before: acceptedBefore, ...r });
    console.error(`kill ${kills.length}: ${what} ${node}: ${JSON.stringify(r)} in_flight ${inFlight}`);
    return r;
  };
  const rc = cluster.redisCluster!;
  let rr = { resume_ms: -1, probe_ms: -1 };
  const killRedisMaster = async (): Promise<void> => {
    await sleep(2000);
    const masterPorts = await rc.masters();
    const m = rc.nodes.findIndex((n) => n.port === masterPorts[0]);
    rr = await measuredKill("redis master", rc.nodes[m].url, () => new Promise<void>((r) => (rc.nodes[m].proc.once("exit", () => r()), rc.nodes[m].proc.kill("SIGKILL"))));
    t.ok(await eventually(async () => (await rc.masters()).filter((p) => p !== rc.nodes[m].port).length === 3, 60_000), "a replica took over the killed master's slots");
    await rc.nodes[m].start();
    await rc.waitHealthy(60_000);
    t.notOk((await rc.masters()).includes(rc.nodes[m].port), "the old master came back as a replica");
  };
  for (let k = 0; k < NATS_KILLS; k++) {
    if (k === NATS_KILLS >> 1) await killRedisMaster();
    await sleep(2000 + Math.random() * 2000);
    const stream = LEADER_STREAMS[(k >> 1) % LEADER_STREAMS.length];
    const leaderName = k % 2 === 0 ? nc.nodes[await nc.metaLeader()]?.name : (await nats.jsm.streams.info(stream)).cluster?.leader;
    const i = nc.nodes.findIndex((n) => n.name === leaderName);
    if (i < 0) throw new Error(`no leader found for ${k % 2 === 0 ? "the meta group" : stream}`);
    await measuredKill(k % 2 === 0 ? "meta leader" : `${stream} leader`, nc.nodes[i].name, () => nc.kill(i));
    await nc.restart(i);
    // Caught up: the restarted node is a current peer of every stream again before the next kill (quorum stays two of three).
    // nats-server 2.9.10 sometimes leaves a replica behind for minutes (not always the restarted node); the recovery
    // docs/operations.md gives ("A stream stays without a leader"): restart the nodes that are behind, once, and wait again.
    let current = await eventually(allCurrent, 60_000);
    if (!current) {
      const behind = await behindNodes();
      console.error(`after kill ${k + 1}: replicas still behind after 60 s on ${behind.join(", ") || "(none named)"}; restarting them once (docs/operations.md)\n${await describeStreams().catch((err: Error) => err.message)}`);
      for (const name of behind) {
        const j = nc.nodes.findIndex((n) => n.name === name);
        await nc.kill(j);
        await nc.restart(j);
        await eventually(allCurrent, 30_000);
      }
      current = await eventually(allCurrent, 60_000);
    }
    t.ok(current, `${nc.nodes[i].name} caught up after kill ${k + 1}`);
  }

  if (NATS_KILLS === 0) await killRedisMaster();

  const eligible = users.filter((u) => (u.lastActive ?? 0) >= createdAt - 30 * DAY && !u.optedOut && u.preferences?.categories?.social?.push !== false);
  const expected = new Set(eligible.flatMap((u) => u.devices.map((d) => d.token)));
  const allIn = await eventually(() => {
    const acc = audit.acceptedNow();
    return [...expected].every((tok) => acc.has(tok));
  }, Math.max(10_000, started + SETTLE_MS - Date.now()));
  let trackerSent: number | null = null;
  for (let until = Date.now() + 60_000; Date.now() < until; await sleep(500)) {
    trackerSent = await campaignStatus().then((s) => s.counters.sent, () => null);
    if (trackerSent === expected.size) break;
  }
  if (trackerSent !== expected.size) {
    // Where the counters stand, for the failure log: the tracker's consumers of receipts and the sandboxes' last acceptance.
    const cons = await Promise.all(([[STREAM.receipts, CONSUMER.tracker], [STREAM.intake, CONSUMER.trackerIntake]] as const).map(([stream, name]) => nats.jsm.consumers.info(stream, name).then((c) => `${name}: leader ${c.cluster?.leader ?? "NONE"} pending ${c.num_pending} ack_pending ${c.num_ack_pending} waiting ${c.num_waiting} redelivered ${c.num_redelivered} ack floor ${c.ack_floor.stream_seq}`, (err: Error) => `${name}: ${err.message}`)));
    const last = recorder.accepted().reduce((a, d) => (d.nid === id && d.at > a ? d.at : a), 0);
    // What NFX_RECEIPTS holds for the campaign: counted "sent" entries, distinct devices among them, echoes.
    let sentEntries = 0;
    let echoes = 0;
    let batches = 0;
    const sentDevices = new Set<string>();
    await readStored(nats, STREAM.receipts, (m) => {
      const rb = decode<ReceiptBatch>(m.data);
      batches++;
      for (const e of rb.entries) {
        if (e.outcome !== "sent") continue;
        if (e.echo) echoes++;
        else {
          sentEntries++;
          sentDevices.add(`${e.user}|${e.device}`);
        }
      }
    }, receiptSubject(id)).catch((err: Error) => console.error(`receipts not read: ${err.message}`));
    console.error(await consumersAhead().catch((err: Error) => err.message));
    console.error(`NFX_RECEIPTS for the campaign: ${batches} batches, ${sentEntries} sent entries (${sentDevices.size} distinct devices), ${echoes} echoes`);
    console.error(`tracker sent ${trackerSent} of ${expected.size}; last campaign send accepted ${((Date.now() - last) / 1000).toFixed(1)} s ago; ${cons.join("; ")}; ${JSON.stringify(await campaignStatus().catch((err: Error) => err.message))}`);
  }
  await sleep(2000);
  const got = audit.acceptedNow();
  const lost = [...expected].filter((tok) => !got.has(tok)).length;
  const dup = [...got.values()].reduce((a, c) => a + (c > 1 ? c - 1 : 0), 0);
  const dupBound = kills.reduce((a, k) => a + k.in_flight, 0);
  if (dup > 0 || lost > 0) {
    // Where they went wrong, for the failure log: each duplicate's acceptance times and each missing device's delivery record.
    const rel = (at: number): string => `${((at - started) / 1000).toFixed(1)} s`;
    console.error(await consumersAhead().catch((err: Error) => err.message));
    console.error(`kills at ${killedAt.map(rel).join(", ")}; campaign ${JSON.stringify(await campaignStatus().catch((err: Error) => err.message))}`);
    const dupToks = [...got].filter(([, c]) => c > 1).slice(0, 8).map(([tok]) => tok);
    for (const tok of dupToks) console.error(`dup ${tok}: accepted at ${recorder.accepted().filter((d) => d.token === tok && d.nid === id).map((d) => `${rel(d.at)}${d.unanswered ? " (client had given up)" : ""}`).join(", ")}`);
    for (const ch of ["apns", "fcm"] as const) {
      const si = await nats.jsm.streams.info(STREAM.send(ch)).catch(() => null);
      const cons = await Promise.all(PRIORITIES.map((p) => nats.jsm.consumers.info(STREAM.send(ch), CONSUMER.gateway(ch, p)).then((c) => `${p}: pending ${c.num_pending} ack_pending ${c.num_ack_pending} waiting ${c.num_waiting} redelivered ${c.num_redelivered}`, (err: Error) => `${p}: ${err.message}`)));
      console.error(`${STREAM.send(ch)}: ${si?.state.messages ?? "?"} messages; ${cons.join("; ")}`);
    }
    const byToken = new Map(users.flatMap((u) => u.devices.map((d) => [d.token, { u, d }] as const)));
    for (const tok of [...expected].filter((tk) => !got.has(tk)).slice(0, 8)) {
      const { u, d } = byToken.get(tok)!;
      const key = deliveredKey(shardOf(u.id, P), id, d.platform === "ios" ? "apns" : "fcm");
      const field = deliveredField(u.id, d.id);
      console.error(`lost ${tok} (user ${u.id}, shard ${shardOf(u.id, P)}): ${key} ${field} = ${JSON.stringify(await redis.hget(key, field).catch((err: Error) => err.message))}`);
    }
  }
  // Duplicates whose earlier acceptance reached no client: the gateway had given up on the request (its timeout), so it was sent again.
  const unanswered = new Map<string, number>();
  for (const d of recorder.accepted()) if (d.nid === id && d.unanswered) unanswered.set(d.token, (unanswered.get(d.token) ?? 0) + 1);
  const dupUnanswered = [...got].reduce((a, [tok, c]) => a + Math.min(c - 1, unanswered.get(tok) ?? 0), 0);
  clearInterval(stallTimer);
  const natsKills = kills.filter((k) => k.what !== "redis master");
  const result = {
    test: "cluster-failover", recipients: users.length, expected_devices: expected.size, nats_kills: natsKills.length, redis_kills: 1,
    lost, dup, dup_bound: dupBound, dup_unanswered: dupUnanswered, harness_loop_delay_max_ms: Math.round(maxLate), harness_stalls: stalls.slice(0, 20), tracker_sent: trackerSent, secs: Math.round((Date.now() - started) / 1000),
    recovery: {
      nats_resume_ms: { p50: pct(natsKills.map((k) => k.resume_ms), 50), max: Math.max(...natsKills.map((k) => k.resume_ms)) },
      nats_probe_ms: { p50: pct(natsKills.map((k) => k.probe_ms), 50), max: Math.max(...natsKills.map((k) => k.probe_ms)) },
      redis_resume_ms: rr.resume_ms, redis_probe_ms: rr.probe_ms,
    },
    per_kill: kills,
  };
  t.ok(allIn, "every eligible device reached its sandbox before the deadline");
  t.equal(lost, 0, `no eligible device missed (of ${expected.size})`);
  t.ok(dup <= dupBound, `duplicates ${dup} ≤ sends in flight at the kills ${dupBound}`);
  t.equal([...got.keys()].filter((tok) => !expected.has(tok)).length, 0, "no ineligible device notified");
  t.equal(trackerSent, expected.size, "nfx's counters: sent equals the devices delivered, each counted once");
  t.ok(kills.every((k) => k.accepted_before < expected.size), "every kill came while the campaign was still sending");
  t.ok(kills.every((k) => k.resume_ms >= 0 && k.probe_ms >= 0), "the pipeline moved again after every kill");
  if (process.env.CHAOS_RESULTS_DIR) writeFileSync(join(process.env.CHAOS_RESULTS_DIR, "cluster-failover.json"), JSON.stringify(result) + "\n");
  console.error(JSON.stringify(result));
});
