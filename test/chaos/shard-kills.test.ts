// Shard actors on real NATS and Redis: ownership hand-over after a SIGKILL, and fencing of a SIGSTOPped owner. In `npm run test:chaos`, not `npm test`.
import t from "tap";

import { BUCKET } from "../../lib/core/subjects.js";
import { writeUsers } from "../../lib/directory/directory.js";
import { syntheticUser } from "../../lib/directory/users.js";
import { notify, status } from "../../lib/intake/api-client.js";
import { CheckpointStore } from "../../lib/shard/shard-checkpoint.js";
import { clientsFor, eventually, startTestCluster } from "../helpers/cluster.js";
import { ownedBy, shardHolders, watchSendBatches } from "../helpers/shards.js";

const push = (title: string) => ({ push: { title, body: "b" } });

t.test("ownership: shards spread over two processes, a killed one is replaced, nothing lost or doubled", async (t) => {
  // checkpointInlineKb 0: every state goes in parts, so the survivor restores a full state with changes on top (incremental checkpoints).
  const cluster = await startTestCluster(t, { own: "all", overrides: { shard: { checkpointMs: 300, checkpointInlineKb: 0 } } });
  const cfg = cluster.cfg;
  const { nats, redis } = await clientsFor(t, cfg);
  const a = cluster.procs.get("shard")!;
  const b = await cluster.startExtra("shard");
  t.ok(await eventually(async () => {
    const h = [...(await shardHolders(nats)).values()];
    const na = h.filter((x) => ownedBy(x.owner, a)).length;
    const nb = h.filter((x) => ownedBy(x.owner, b)).length;
    return na + nb === cfg.cluster.shards && na >= cfg.cluster.shards / 4 && nb >= cfg.cluster.shards / 4;
  }, 15_000), "both processes hold a fair share of the shards");

  const users = Array.from({ length: 400 }, (_, i) => ({ ...syntheticUser(i, Date.now()), optedOut: false, preferences: {} }));
  await writeUsers(redis, cfg.cluster.shards, users);
  const first = await notify(nats.nc, { recipients: users.slice(0, 200).map((u) => u.id), category: "transactional", content: push("one") });
  t.ok(await eventually(async () => (await status(nats.nc, first.id)).complete, 30_000));
  // The owners checkpoint what they decided, though their first checkpoint ticks found nothing to write (the cluster sat idle).
  const kvCheckpoints = await nats.kvm.open(BUCKET.checkpoints);
  const stores = (["urgent", "bulk"] as const).map((cls) => new CheckpointStore(kvCheckpoints, cls));
  const checkpointed = async (): Promise<number> => {
    let n = 0;
    for (const st of stores) for (let s = 0; s < cfg.cluster.shards; s++) for (const sec of (await st.load(s)).cp?.sections ?? []) n += sec.dedup.readUInt32LE(0);
    return n;
  };
  t.ok(await eventually(async () => (await checkpointed()) >= 200, 10_000), "every recipient's dedup entry is in a checkpoint");

  const killedAt = Date.now();
  await new Promise<void>((r) => (a.once("exit", () => r()), a.kill("SIGKILL")));
  const second = await notify(nats.nc, { recipients: users.map((u) => u.id), category: "transactional", content: push("two") });
  const survivorHoldsAll = async (cls: "urgent" | "bulk") => [...(await shardHolders(nats, cls)).values()].filter((x) => ownedBy(x.owner, b)).length === cfg.cluster.shards;
  t.ok(await eventually(async () => (await survivorHoldsAll("urgent")) && (await survivorHoldsAll("bulk")), 60_000), "the survivor took every shard, of both lane classes");
  // Measured, not asserted (a loaded machine takes longer): the lease (shard.leaseMs) plus a tick.
  t.comment(`taken over ${Date.now() - killedAt} ms after the kill (shard.leaseMs ${cfg.shard.leaseMs})`);
  t.ok(await eventually(async () => (await status(nats.nc, second.id)).complete, 30_000), "the notification sent during the takeover completes");
  const perToken = new Map<string, number>();
  for (const d of cluster.sandbox!.recorder.accepted()) if (d.nid === second.id) perToken.set(d.token, (perToken.get(d.token) ?? 0) + 1);
  const expected = users.flatMap((u) => u.devices.map((d) => d.token));
  t.equal(expected.filter((tok) => !perToken.has(tok)).length, 0, "no device missed");
  t.equal([...perToken.values()].filter((c) => c > 1).length, 0, "no device notified twice");
});

t.test("a shard owner stopped past its lease sends nothing more under it when continued", async (t) => {
  const cluster = await startTestCluster(t, { own: "all", overrides: { shard: { leaseMs: 1500, checkpointMs: 300 }, campaign: { chunkSize: 200 } } });
  const cfg = cluster.cfg;
  const { nats, redis } = await clientsFor(t, cfg);
  const a = cluster.procs.get("shard")!;
  const b = await cluster.startExtra("shard");
  t.ok(await eventually(async () => [...(await shardHolders(nats)).values()].filter((x) => ownedBy(x.owner, b)).length > 0, 15_000));
  const now = Date.now();
  const users = Array.from({ length: 20_000 }, (_, i) => ({ ...syntheticUser(i, now), lastActive: now, optedOut: false, preferences: {} }));
  for (let i = 0; i < users.length; i += 5000) await writeUsers(redis, cfg.cluster.shards, users.slice(i, i + 5000));
  const watch = watchSendBatches(nats);
  t.teardown(watch.stop);
  const { id } = await notify(nats.nc, { segment: "all", category: "social", content: push("campaign"), campaign: { rate: 4000 } });
  t.ok(await eventually(() => watch.seen.some((s) => ownedBy(s.owner, a)), 20_000), "the owner to stop is sending");
  const before = [...(await shardHolders(nats)).values()].filter((x) => ownedBy(x.owner, a));
  const staleEpochs = new Set(before.map((x) => x.epoch));
  a.kill("SIGSTOP");
  t.ok(await eventually(async () => [...(await shardHolders(nats)).values()].filter((x) => ownedBy(x.owner, b)).length === cfg.cluster.shards, 10_000), "the other process took its shards");
  const contAt = Date.now();
  a.kill("SIGCONT");
  await new Promise((r) => setTimeout(r, 3000));
  const afterCont = watch.seen.filter((s) => s.at > contAt + 50 && ownedBy(s.owner, a) && staleEpochs.has(s.epoch));
  t.equal(afterCont.length, 0, `no send batch under a lost lease after SIGCONT (stale epochs ${[...staleEpochs].join(",")})`);
  t.ok(await eventually(async () => (await status(nats.nc, id)).complete, 90_000), "the campaign completes");
  const perToken = new Map<string, number>();
  for (const d of cluster.sandbox!.recorder.accepted()) if (d.nid === id) perToken.set(d.token, (perToken.get(d.token) ?? 0) + 1);
  const expected = users.flatMap((u) => u.devices.map((d) => d.token));
  t.equal(expected.filter((tok) => !perToken.has(tok)).length, 0, `no device missed (of ${expected.length})`);
  t.equal([...perToken.values()].filter((c) => c > 1).length, 0, "no device notified twice");
});
