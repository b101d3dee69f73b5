#!/bin/sh
# `npm run test:cluster`: the pipeline and campaign suites on a three-node nats-server cluster (R3) and a Redis Cluster, then the
# failover test (200,000 users, JetStream leaders and a Redis master SIGKILLed); its result JSON (lost, dup, dup_bound, recovery) is printed last.
cd "$(dirname "$0")/.."
res=$(mktemp -d)
trap 'rm -rf "$res"' EXIT
# Interrupted: stop here (without this, sh would go on to the next suite once tap exits).
trap 'exit 130' INT TERM
# Every role in a process of its own (NFX_TEST_PROCESSES=each), as `nfx up` runs them.
# Ctrl-C reaches tap, the tests and every process they started (one process group); each test also stops its cluster on SIGINT/SIGTERM.
NFX_TEST_PROCESSES=each NFX_TEST_NATS_NODES=3 NFX_TEST_REDIS=cluster node_modules/.bin/tap dist/test/integration/pipeline.test.js dist/test/integration/campaign.test.js dist/test/chaos/campaign-kills.test.js 2>&1
code=$?
# One file at a time: each starts its own cluster, and the recovery times are only meaningful on an otherwise quiet machine.
CHAOS_RESULTS_DIR="$res" node_modules/.bin/tap --jobs 1 --timeout 1500 dist/test/cluster 2>&1
[ $? -eq 0 ] || code=1
cat "$res"/*.json 2>/dev/null
exit $code
