#!/bin/sh
# `npm test`: installs what is missing, builds, runs the integration suite with the unit suite and lint beside it (both at low CPU priority), and ends with a "N passed, N failed" line.
set -e
cd "$(dirname "$0")/.."
# The browser test drives Debian's Chromium with playwright-core: installed with the servers.
NFX_APT_EXTRA=chromium sh scripts/bootstrap.sh
# tap rebuilds itself when the plugins configured in package.json ("tap") differ from those it was built with; two taps
# starting at once would both rebuild, and one then fails to load the other's half-written files (seen on a fresh clone).
# So it is built here, once, before they start; the marker keeps later runs from paying for it again.
sig=$(node -e 'process.stdout.write(JSON.stringify(require("./package.json").tap))')
if [ "$(cat node_modules/.nfx-tap-built 2>/dev/null)" != "$sig" ]; then
  node_modules/.bin/tap build > /dev/null
  printf '%s' "$sig" > node_modules/.nfx-tap-built
fi
out=$(mktemp)
out2=$(mktemp)
unit=$(mktemp)
rc=$(mktemp)
lint=$(mktemp)
# Lint (eslint.config.js) and the unit files (no servers) run beside the integration files, which mostly wait on servers.
# Both at nice 10: CPU the integration files' servers and roles need goes to them first. A lint finding fails `npm test` at the end.
nice -n 10 node_modules/.bin/eslint . > "$lint" 2>&1 &
lint_pid=$!
nice -n 10 node_modules/.bin/tap --jobs 1 dist/test/unit > "$unit" 2>&1 &
unit_pid=$!
trap 'kill "$lint_pid" "$unit_pid" 2>/dev/null || true; rm -f "$out" "$out2" "$unit" "$rc" "$lint"' EXIT
trap 'exit 130' INT TERM
# Integration files, each with its own servers and roles, in two runs (docs/testing.md, "Two integration runs"):
# two at a time, since most of a file's time is spent waiting on its servers; then, one at a time, the files in
# test/integration/SOLO, whose checks compare rates, latencies or times that a second file beside them would disturb.
solo=$(grep -v '^#' test/integration/SOLO | sed 's|^|dist/test/integration/|; s|\.ts$|.js|')
for f in $solo; do [ -f "$f" ] || { echo "npm test: $f is named in test/integration/SOLO but does not exist"; exit 1; }; done
solo_line=" $(echo $solo) "
shared=$(for f in dist/test/integration/*.test.js; do case "$solo_line" in *" $f "*) ;; *) echo "$f" ;; esac; done)
code=0
# set +e inside each group: with -e a failing tap would end the group before its exit code is saved (and npm test would pass).
{ set +e; node_modules/.bin/tap --jobs 2 $shared 2>&1; echo $? > "$rc"; } | tee "$out"
[ "$(cat "$rc")" = 0 ] || code=1
{ set +e; node_modules/.bin/tap --jobs 1 $solo 2>&1; echo $? > "$rc"; } | tee "$out2"
[ "$(cat "$rc")" = 0 ] || code=1
wait "$unit_pid" || code=1
echo "# the unit files (run beside the integration files):"
cat "$unit"
if ! wait "$lint_pid"; then
  cat "$lint"
  echo "npm test: lint failed (npm run lint)"
  code=1
fi
# Each tap run ends with "# { total: N, pass: N }" (fail counted as the difference).
count() { n=$(grep -E '^# \{ total: [0-9]+' "$1" | tail -1 | sed -E "s/.*$2: ([0-9]+).*/\\1/"); echo "${n:-0}"; }
total=$(( $(count "$out" total) + $(count "$out2" total) + $(count "$unit" total) ))
pass=$(( $(count "$out" pass) + $(count "$out2" pass) + $(count "$unit" pass) ))
if [ "$code" != 0 ]; then
  # CI keeps only the tail of the output: repeat each failure (with its diagnostics) just above the last line.
  echo "npm test: the failures, repeated from above:"
  cat "$out" "$out2" "$unit" | awk '/^ *# Subtest: dist\//{file=$0} /^ *not ok /{print file; print; diag=1; n=0; next} diag && /^ *---$/{inyaml=1} diag && inyaml{print; if (++n>40 || /^ *\.\.\.$/){diag=0; inyaml=0}; next} {diag=0}' | head -300
fi
echo "$pass passed, $((total - pass)) failed"
exit $code
