#!/usr/bin/env bash
# usage: storm.sh BIN CONNS WINDOW GRACE LABEL OUT.json
set -euo pipefail
bin=$1 conns=$2 window=$3 grace=$4 label=$5 out=$6
pa=$((20000 + RANDOM % 5000)); pb=$((pa + 1))
$bin serve --listen 127.0.0.1:$pa --admin "" --insecure-no-auth --drain-grace $grace --drain-reconnect-window $window --log-level warn 2>/tmp/h13/a.log &
a=$!
$bin serve --listen 127.0.0.1:$pb --admin "" --insecure-no-auth --log-level warn 2>/tmp/h13/b.log &
b=$!
trap 'kill $a $b 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$pa) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/$pb) 2>/dev/null && break; sleep 0.1; done
$bin bench reconnect --url ws://127.0.0.1:$pa/ws --to ws://127.0.0.1:$pb/ws --conns $conns --server-pid $a --label "$label" --json $out --window 60s
