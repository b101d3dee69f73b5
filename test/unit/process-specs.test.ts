// Process specs: a role or a lane role restricted to one lane class; what `nfx up` starts; which nice value each process gets.
import t from "tap";

import { niceOf, nodeArgsOf } from "../../cmd/role-process.js";
import { parseProcessSpec, UP_PROCESSES } from "../../cmd/roles.js";
import { loadConfig } from "../../lib/core/config.js";
import { CLASS_PRIORITIES, laneClassOf, PRIORITIES } from "../../lib/core/subjects.js";

t.test("specs parse to a role and its lane classes, and bad ones name the rule", async (t) => {
  t.same(parseProcessSpec("shard"), { role: "shard", lanes: ["urgent", "bulk"] });
  t.same(parseProcessSpec("shard@urgent"), { role: "shard", lanes: ["urgent"] });
  t.same(parseProcessSpec("gateway-fcm@bulk"), { role: "gateway-fcm", lanes: ["bulk"] });
  t.throws(() => parseProcessSpec("shard@fast"), { code: "NFX_ERR_CONFIG_INVALID", message: /"shard@fast" names no lane class \(urgent or bulk after @\)/ });
  t.throws(() => parseProcessSpec("tracker@urgent"), { message: /tracker does not run per lane class \(only shard, gateway-apns/ });
  t.throws(() => parseProcessSpec("shards"), { message: /unknown role "shards"/ });
  t.throws(() => parseProcessSpec("shard@urgent@bulk"), { message: /names no lane class/ });
});

t.test("nfx up splits the shard actor and gives each process its nice value", async (t) => {
  t.ok(UP_PROCESSES.includes("shard@urgent") && UP_PROCESSES.includes("shard@bulk") && !UP_PROCESSES.includes("shard"));
  t.ok(UP_PROCESSES.includes("gateway-apns@urgent") && UP_PROCESSES.includes("gateway-sms@bulk") && !UP_PROCESSES.includes("gateway-fcm"), "gateways too");
  t.equal(UP_PROCESSES.length, 17);
  const cfg = loadConfig({ env: {} });
  t.same(["shard@urgent", "shard@bulk", "campaign", "gateway-apns", "gateway-apns@urgent", "ingest"].map((s) => niceOf(cfg, s as never)), [-5, 10, 10, 0, -5, -5]);
});

t.test("the WebSocket gateway's and the shard actor's own processes bound their heaps; ROLE_NODE_ARGS comes after", async (t) => {
  t.same(nodeArgsOf("ws-gateway", {}), ["--max-semi-space-size=4", "--heap-growing-percent=100"]);
  t.same(nodeArgsOf("shard@urgent", {}), ["--max-semi-space-size=4", "--heap-growing-percent=100"], "a shard process, of any lane class");
  t.same(nodeArgsOf("gateway-apns@bulk", {}), ["--max-semi-space-size=64"], "a provider gateway's young generation is raised");
  t.same(nodeArgsOf("gateway-email", {}), ["--max-semi-space-size=64"]);
  t.same(nodeArgsOf("gateway-webhook", {}), ["--max-semi-space-size=64"], "so is the webhook gateway's");
  t.same(nodeArgsOf("router", {}), [], "other roles get node's defaults");
  t.same(nodeArgsOf(["ingest", "ws-gateway"], {}), [], "roles sharing a process keep node's defaults");
  t.same(nodeArgsOf("ws-gateway", { ROLE_NODE_ARGS: " --cpu-prof  --max-semi-space-size=16" }), ["--max-semi-space-size=4", "--heap-growing-percent=100", "--cpu-prof", "--max-semi-space-size=16"]);
});

t.test("lane classes cover every priority once", async (t) => {
  t.same([...CLASS_PRIORITIES.urgent, ...CLASS_PRIORITIES.bulk], [...PRIORITIES]);
  t.same(PRIORITIES.map(laneClassOf), ["urgent", "urgent", "bulk", "bulk"]);
});
