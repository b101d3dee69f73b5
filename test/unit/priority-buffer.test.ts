// The per-priority buffer shared by lib/flow/lanes.ts and the shard actor (most urgent first, FIFO per lane, a full lane waits for room), and the ranked semaphore.
import t from "tap";

import { PriorityBuffer } from "../../lib/flow/priority-buffer.js";
import { Semaphore } from "../../lib/flow/semaphore.js";

t.test("takes the most urgent lane first, oldest first within a lane", async (t) => {
  const b = new PriorityBuffer<string>(8);
  t.equal(b.take(), null, "empty");
  b.push("bulk", "b1");
  b.push("normal", "n1");
  b.push("bulk", "b2");
  b.push("critical", "c1");
  b.push("high", "h1");
  b.push("critical", "c2");
  t.equal(b.size("critical"), 2);
  t.same([...b.items()], ["c1", "c2", "h1", "n1", "b1", "b2"], "items() lists without removing");
  const order: string[] = [];
  for (let x = b.take(); x; x = b.take()) order.push(`${x[1]}:${x[0]}`);
  t.same(order, ["critical:c1", "critical:c2", "high:h1", "normal:n1", "bulk:b1", "bulk:b2"]);
  t.equal(b.size("bulk"), 0);
});

t.test("a full lane's reader waits until an item of that lane is taken", async (t) => {
  const b = new PriorityBuffer<number>(2);
  b.push("bulk", 1);
  let passed = false;
  await b.waitForRoom("bulk", () => false);
  t.pass("room left: resolves at once");
  b.push("bulk", 2);
  const waiting = b.waitForRoom("bulk", () => false).then(() => (passed = true));
  b.push("critical", 9);
  b.take();
  await new Promise((r) => setImmediate(r));
  t.equal(passed, false, "taking from another lane does not free this one");
  t.same(b.take(), [1, "bulk"]);
  await waiting;
  t.equal(passed, true, "taking from the full lane lets its reader go on");
});

t.test("stopping: wakeAll lets a waiting reader see its stop flag; drain empties every lane", async (t) => {
  const b = new PriorityBuffer<string>(1);
  b.push("normal", "n");
  b.push("high", "h");
  let stopped = false;
  const waiting = b.waitForRoom("normal", () => stopped);
  stopped = true;
  b.wakeAll();
  await waiting;
  t.pass("reader released while its lane is still full");
  t.same(b.drain(), ["h", "n"], "most urgent lane first");
  t.equal(b.take(), null);
});

t.test("Semaphore: at most `limit` at once; waiting tasks run lower ranks first, FIFO within a rank", async (t) => {
  const sem = new Semaphore(2);
  const order: string[] = [];
  let running = 0;
  let most = 0;
  const gates: (() => void)[] = [];
  const task = (name: string) => async (): Promise<void> => {
    running++;
    most = Math.max(most, running);
    order.push(name);
    await new Promise<void>((r) => gates.push(r));
    running--;
  };
  const all = [sem.run(task("a"), 3), sem.run(task("b"), 3), sem.run(task("bulk1"), 3), sem.run(task("high1"), 1), sem.run(task("crit"), 0), sem.run(task("high2"), 1)];
  t.equal(sem.queued, 4, "two run, four wait");
  while (gates.length) {
    gates.shift()!();
    await new Promise((r) => setImmediate(r));
  }
  await Promise.all(all);
  t.same(order, ["a", "b", "crit", "high1", "high2", "bulk1"], "critical, then high in arrival order, then bulk");
  t.equal(most, 2, "never more than the limit at once");
  await t.rejects(sem.run(() => Promise.reject(new Error("boom"))), /boom/, "a failing task's error reaches its caller");
  t.equal(sem.inFlight, 0, "and its slot is released");
});
