// `npm run demo` as a user runs it (`nfx demo`): both of its checks pass and it exits 0; Ctrl-C mid-run stops every process it started.
import "../helpers/child-env.js";

import { fileURLToPath } from "node:url";

import t from "tap";

import { runWatched } from "../helpers/watched-run.js";

const NFX = fileURLToPath(new URL("../../cmd/nfx.js", import.meta.url));

t.test("nfx demo: the transactional send and the campaign each arrive at the sandboxes exactly once, exit 0, nothing left", async (t) => {
  const r = await runWatched([NFX, "demo"], {}, { capMs: 240_000 });
  t.equal(r.code, 0, r.code === 0 ? "exit code 0" : `exit code 0 (stdout: ${r.stdout.slice(-1500)} stderr: ${r.stderr.slice(-600)})`);
  t.match(r.stdout, /seeded 5000 users with \d+ devices/, "5,000 demo users seeded");
  t.match(r.stdout, /2000 recipients, finished in [\d.]+ s/, "the transactional notification finished for its 2,000 recipients");
  t.match(r.stdout, /check: every send nfx reports as sent arrived at a sandbox exactly once: OK/, "its check: OK");
  t.match(r.stdout, /sandbox APNs accepted \d+ \(duplicates 0\)/, "no APNs duplicate");
  t.match(r.stdout, /sandbox FCM {2}accepted \d+ \(duplicates 0\)/, "no FCM duplicate");
  const camp = /check: the sandboxes accepted (\d+) campaign sends, nfx counted (\d+) sent, duplicates 0: OK/.exec(r.stdout);
  t.ok(camp, "the campaign's check: OK");
  t.ok(camp && Number(camp[1]) > 1000 && camp[1] === camp[2], `the campaign's sends (${camp?.[1]}) counted as sent (${camp?.[2]})`);
  t.ok([...r.seen.values()].includes("nats-server") && [...r.seen.values()].includes("redis-server"), "it had started nats-server and redis-server");
  t.same(r.left, [], "none of its processes is left");
});

t.test("nfx demo interrupted with SIGINT once its cluster is up: exits 130, its processes go with it", async (t) => {
  const r = await runWatched([NFX, "demo"], {}, {
    upWhen: (names, out) => names.includes("nats-server") && names.includes("redis-server") && out.includes("up in"),
    interrupt: (pid) => process.kill(pid, "SIGINT"),
    // Gone with it, not after a graceful stop of their own against servers that are gone (a role's lasts up to 10 s).
    goneWithinMs: 3000,
  });
  t.match(r.stdout, /up in [\d.]+ s/, "its cluster was up");
  t.equal(r.code, 130, `exit code 130 (stderr: ${r.stderr.slice(-400)})`);
  t.same(r.left, [], "none of its processes outlives it by more than 3 s");
});
