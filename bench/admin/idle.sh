#!/usr/bin/env bash
# Server CPU over 60 s with nobody connected: the dashboard's own cost per second.
# Usage: bench/admin/idle.sh disabled|enabled|overview|two
set -euo pipefail
mkdir -p "${OUT:-results/admin}"
R=${R:-target/release}
mode=$1
if [ "$mode" = disabled ]; then unset SIGNALBOX_ADMIN_PASSWORD; else export SIGNALBOX_ADMIN_PASSWORD=perf-admin-password; fi
taskset -c 0 $R/signalbox serve --dev --listen 127.0.0.1:0 > ${OUT:-results/admin}/idle.out 2>/dev/null &
PID=$!; sleep 1; ADDR=$(sed -n "s/signalbox listening on //p" ${OUT:-results/admin}/idle.out)
curl -s -o /dev/null -c ${OUT:-results/admin}/cj2 -d "password=perf-admin-password" "http://$ADDR/admin/login"
STREAM=""
case $mode in
  overview) taskset -c 1 curl -s -N -b ${OUT:-results/admin}/cj2 "http://$ADDR/admin/api/stream" > /dev/null & STREAM=$! ;;
  two) for i in 1 2; do taskset -c 1 curl -s -N -b ${OUT:-results/admin}/cj2 "http://$ADDR/admin/api/stream?tail=job:1" > /dev/null & done ;;
esac
sleep 2
ticks() { awk '{print $14+$15}' /proc/$PID/stat; }
a=$(ticks); sleep 60; b=$(ticks)
echo "$mode: $((b-a)) ticks (10 ms) in 60 s = $(( (b-a)*10*1000/60 )) us/s"
[ -n "$STREAM" ] && kill $STREAM 2>/dev/null || true
pkill -f "curl -s -N -b ${OUT:-results/admin}/cj2" || true
kill $PID; wait $PID 2>/dev/null || true
