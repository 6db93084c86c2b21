#!/usr/bin/env bash
# Fan-out CPU per delivery with the admin dashboard disabled, enabled, or with a page open.
# Usage (from the repository root, after `cargo build --release`): bench/admin/fanout.sh disabled|off|overview|tail RUN
set -euo pipefail
mkdir -p "${OUT:-results/admin}"
R=${R:-target/release}
mode=$1; run=$2
if [ "$mode" = disabled ]; then unset SIGNALBOX_ADMIN_PASSWORD; else export SIGNALBOX_ADMIN_PASSWORD=perf-admin-password; fi
taskset -c 0 $R/signalbox serve --dev --listen 127.0.0.1:0 > ${OUT:-results/admin}/sb.out 2>/dev/null &
PID=$!; sleep 0.7; ADDR=$(sed -n "s/signalbox listening on //p" ${OUT:-results/admin}/sb.out)
curl -s -o /dev/null -c ${OUT:-results/admin}/cj -d "password=${SIGNALBOX_ADMIN_PASSWORD:-x}" "http://$ADDR/admin/login"
STREAM=""
case $mode in
  off) ;;
  overview) taskset -c 1 curl -s -N -b ${OUT:-results/admin}/cj "http://$ADDR/admin/api/stream" > /dev/null & STREAM=$! ;;
  tail) taskset -c 1 curl -s -N -b ${OUT:-results/admin}/cj "http://$ADDR/admin/api/stream?tail=bench:0" > ${OUT:-results/admin}/tail.out & STREAM=$! ;;
esac
taskset -c 1 $R/signalbox-bench --scenario fanout --server "$ADDR" --server-pid "$PID" --out ${OUT:-results/admin}/res-$mode-$run > ${OUT:-results/admin}/bench-$mode-$run.log 2>&1
[ -n "$STREAM" ] && kill $STREAM 2>/dev/null || true
kill $PID; wait $PID 2>/dev/null || true
