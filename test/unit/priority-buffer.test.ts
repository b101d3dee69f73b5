// The per-priority buffer shared by lib/flow/lanes.ts and the shard actor: most urgent first, FIFO per lane, a full lane's reader waits for room.
import t from "tap";

import { PriorityBuffer } from "../../lib/flow/priority-buffer.js";

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
