#!/bin/sh
# `npm run test:chaos`: the slow suite in test/chaos (tap); its result JSON lines (lost, dup, dup_bound, ...) are printed last, after tap's summary.
cd "$(dirname "$0")/.."
res=$(mktemp -d)
trap 'rm -rf "$res"' EXIT
# Ctrl-C reaches tap, the test and every process it started (one process group); the test also stops its cluster on SIGINT/SIGTERM.
# Above the role-kills file's own 480 s limit (its settle deadline is 360 s): a run short of devices reports what it lost rather than being cut off by tap's default of 300 s.
CHAOS_RESULTS_DIR="$res" node_modules/.bin/tap --jobs 1 --timeout 600 dist/test/chaos 2>&1
code=$?
cat "$res"/*.json 2>/dev/null
exit $code
