#!/bin/sh
# Installs whatever nfx needs and is missing: nats-server and redis-server (and $NFX_APT_EXTRA) from Debian with one apt-get update, npm dependencies; then builds.
set -e
cd "$(dirname "$0")/.."
need=""
command -v nats-server >/dev/null 2>&1 || need="$need nats-server"
command -v redis-server >/dev/null 2>&1 || need="$need redis-server"
# NFX_APT_EXTRA: more Debian packages a caller needs (npm test: chromium for the browser test), installed in the same apt-get run.
for p in ${NFX_APT_EXTRA:-}; do command -v "$p" >/dev/null 2>&1 || need="$need $p"; done
if [ -n "$need" ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "bootstrap: installing$need with apt-get"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need >/dev/null
fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "bootstrap: installing npm dependencies"
  # `npm install` from the committed lock, not `npm ci`: npm 11 leaves other platforms'
  # optional packages (msgpackr-extract-*) out of the lock and then `npm ci` refuses it.
  npm install --no-audit --no-fund --loglevel=error
fi
rm -rf dist
node_modules/.bin/tsc -p tsconfig.json
