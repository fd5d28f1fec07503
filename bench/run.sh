#!/usr/bin/env bash
# tug's benchmark harness. Run as root on a Debian machine, from anywhere:
#
#   bench/run.sh --install            install the peers (Debian packages + two PyPI tools)
#   bench/run.sh [WORKLOAD...]        full run: release build of tug, start dockerd, run every
#                                     workload alternating tug and each peer, print the table,
#                                     write bench/results/latest.json, stop and clean up
#   bench/run.sh --smoke              each workload once, tug only, no daemons (CI)
#
# Options: --peers none|daemonless|all (default all; 'daemonless' = crun, runc, compose config,
# tar, skopeo: nothing that changes host networking), --tug PATH (skip the build),
# --out FILE, --list. Run counts: RUNS_START, RUNS_START_NET, RUNS_COMPOSE5, RUNS_COMPOSE20,
# RUNS_NOOP, RUNS_CONFIG, RUNS_UNPACK, RUNS_PULL, RUNS_WATCH; MANY (containers in the 'many' workload,
# 100); WATCH_EDITS (edits timed by the 'watch' workload, 100); TRIAL_GAP (idle seconds before each
# compose sample, 0.5).
set -euo pipefail
BENCH=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$BENCH")
PY=/usr/bin/python3; [ -x $PY ] || PY=python3

install=0 smoke=0 peers=all tug="" pass=()
while [ $# -gt 0 ]; do
  case $1 in
    --install) install=1 ;;
    --smoke) smoke=1 ;;
    --peers) peers=$2; shift ;;
    --peers=*) peers=${1#*=} ;;
    --tug) tug=$2; shift ;;
    --tug=*) tug=${1#*=} ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) pass+=("$1") ;;
  esac
  shift
done

if [ "$(id -u)" != 0 ]; then echo "bench/run.sh: needs root (namespaces, mounts, cgroups)" >&2; exit 2; fi

if [ $install = 1 ]; then
  "$BENCH/lib/install.sh"
  [ ${#pass[@]} = 0 ] && [ $smoke = 0 ] && exit 0
fi

if [ -z "$tug" ]; then
  if [ $smoke = 1 ]; then
    (cd "$REPO" && cargo build -q --bin tug)
    tug=$REPO/target/debug/tug
  else
    (cd "$REPO" && cargo build -q --release --bin tug)
    tug=$REPO/target/release/tug
  fi
fi

if [ $smoke = 1 ]; then
  exec $PY "$BENCH/bench.py" --smoke --tug "$tug" "${pass[@]}"
fi

case " ${pass[*]-} " in
  *" --list "*) exec $PY "$BENCH/bench.py" --list ;;
esac

if [ "$peers" = all ]; then
  trap '"$BENCH/lib/down.sh"' EXIT
  "$BENCH/lib/up.sh"
fi
rc=0
$PY "$BENCH/bench.py" --peers "$peers" --tug "$tug" "${pass[@]}" || rc=$?
# The figures page follows the results file (only for the default results path).
case " ${pass[*]-} " in
  *" --out"*|*" --list "*) ;;
  *) [ -s "$BENCH/results/latest.json" ] && \
       $PY "$BENCH/bench.py" --markdown "$BENCH/results/latest.json" --update-doc "$REPO/docs/benchmarks.md" ;;
esac
exit $rc
