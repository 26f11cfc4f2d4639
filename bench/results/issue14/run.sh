#!/bin/bash
# tune plan vs measured at 19,000 idle connections (issue 14). Usage: run.sh BINARY OUTDIR
# Starts `wsedge serve --echo`, holds 19,000 idle connections from 4 bench processes,
# and saves /metrics, sockstat, meminfo and slabinfo (root) before and while they are held.
set -u
BIN=$1; OUT=$2; mkdir -p $OUT; cd $OUT
$BIN serve --echo --listen 127.0.0.1:0 --admin 127.0.0.1:0 > server.log 2>&1 &
SPID=$!
for i in $(seq 100); do grep -q '"msg":"listening"' server.log && break; sleep 0.1; done
WS=$(grep '"msg":"listening"' server.log | sed 's/.*"ws":"\([^"]*\)".*/\1/')
ADMIN=$(grep '"msg":"listening"' server.log | sed 's/.*"admin":"\([^"]*\)".*/\1/')
echo "ws=$WS admin=$ADMIN pid=$SPID"
curl -s http://$ADMIN/metrics > metrics-before.txt
cat /proc/slabinfo > slabinfo-before.txt; cat /proc/net/sockstat > sockstat-before.txt; grep -E 'Slab|SReclaimable|SUnreclaim' /proc/meminfo > meminfo-before.txt
uptime > load.txt
$BIN bench idle --url ws://$WS/ws --conns 19000 --procs 4 --duration 20s --server-pid $SPID --server-metrics http://$ADMIN/metrics --label $OUT --json > idle.json 2> bench.err &
BPID=$!
for i in $(seq 600); do
  n=$(curl -s http://$ADMIN/metrics | awk '$1=="wsedge_connections"{print $2}')
  [ "${n:-0}" -ge 19000 ] && break; sleep 0.2
done
sleep 5
curl -s http://$ADMIN/metrics > metrics-held.txt
cat /proc/slabinfo > slabinfo-held.txt; cat /proc/net/sockstat > sockstat-held.txt; grep -E 'Slab|SReclaimable|SUnreclaim' /proc/meminfo > meminfo-held.txt
uptime >> load.txt
wait $BPID; echo "bench exit $?"
kill -TERM $SPID; wait $SPID
