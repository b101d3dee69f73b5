#!/bin/sh
# Installs the named Debian packages' commands when missing (benchmarks' load generators). Usage: ensure-apt.sh hey [wrk ...]
set -e
missing=""
for p in "$@"; do command -v "$p" >/dev/null 2>&1 || missing="$missing $p"; done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing$missing with apt-get"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
