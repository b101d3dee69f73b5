#!/bin/sh
# `npm test`: installs what is missing, builds, runs the unit and integration suites with lint beside them, and ends with a "N passed, N failed" line.
set -e
cd "$(dirname "$0")/.."
# The browser test drives Debian's Chromium with playwright-core: installed with the servers.
NFX_APT_EXTRA=chromium sh scripts/bootstrap.sh
out=$(mktemp)
rc=$(mktemp)
lint=$(mktemp)
# Lint (eslint.config.js) runs beside the suites, which mostly wait on servers: a finding fails `npm test` at the end.
node_modules/.bin/eslint . > "$lint" 2>&1 &
lint_pid=$!
trap 'kill "$lint_pid" 2>/dev/null || true; rm -f "$out" "$rc" "$lint"' EXIT
trap 'exit 130' INT TERM
# Unit files run two at a time (each costs ~2 s of process start); integration files one at a time (each starts its own servers and roles).
# set +e inside the group: with -e a failing tap would end the group before its exit code is saved (and npm test would pass).
{ set +e; node_modules/.bin/tap --jobs 2 --serial=dist/test/integration dist/test/unit dist/test/integration 2>&1; echo $? > "$rc"; } | tee "$out"
code=$(cat "$rc")
[ -n "$code" ] || code=1
if ! wait "$lint_pid"; then
  cat "$lint"
  echo "npm test: lint failed (npm run lint)"
  code=1
fi
summary=$(grep -E '^# \{ total: [0-9]+' "$out" | tail -1)
total=$(echo "$summary" | sed -E 's/.*total: ([0-9]+).*/\1/')
pass=$(echo "$summary" | sed -E 's/.*pass: ([0-9]+).*/\1/')
if [ "$code" != 0 ]; then
  # CI keeps only the tail of the output: repeat each failure (with its diagnostics) just above the last line.
  echo "npm test: the failures, repeated from above:"
  awk '/^ *# Subtest: dist\//{file=$0} /^ *not ok /{print file; print; diag=1; n=0; next} diag && /^ *---$/{inyaml=1} diag && inyaml{print; if (++n>40 || /^ *\.\.\.$/){diag=0; inyaml=0}; next} {diag=0}' "$out" | head -300
fi
if [ -n "$total" ]; then
  echo "$pass passed, $((total - pass)) failed"
fi
exit $code
