#!/usr/bin/env bash
# Issue 15: hand N live connections to a new process (wsedge serve
# --takeover) and time it; the clients (wsedge bench) run throughout and
# report what they lost.
#
#   MODE=echo       N idle echo connections (bench idle)
#   MODE=broadcast  N subscribers over a shared redis-server, a broadcast at
#                   RATE publishes/s running throughout (bench broadcast:
#                   missing, duplicated and out-of-order deliveries, p99);
#                   SWITCH=0 runs the same broadcast without a handoff, for
#                   the latency beside it. Namespace bench keeps 10,000
#                   publications (wsedge.yaml written here).
#
# usage: bench/handoff.sh     env: N=19000 MODE=echo HOLD=40s RATE=10 SWITCH=1 OUT=bench/results/issue15
# Writes $OUT/<mode>-<n>[-noswitch].json (the bench's result) and .log (both servers' handoff lines).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-19000}
MODE=${MODE:-echo}
HOLD=${HOLD:-40s}
RATE=${RATE:-10}
SWITCH=${SWITCH:-1}
OUT=${OUT:-bench/results/issue15}
mkdir -p "$OUT"
TMP=$(mktemp -d)
BIN=$TMP/wsedge
go build -o "$BIN" ./cmd/wsedge
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
SOCK=$TMP/handoff.sock
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT

ARGS=(--listen 127.0.0.1:$PORT --admin 127.0.0.1:0 --handoff-socket unix://$SOCK --max-conns 19800 --drain-grace 0s)
BENCH=()
if [[ $MODE == echo ]]; then
	ARGS+=(--echo)
	BENCH=(idle --conns "$N" --procs 2 --duration "$HOLD")
else
	RPORT=$(free_port)
	redis-server --port "$RPORT" --save '' --appendonly no >"$TMP/redis.log" 2>&1 &
	PIDS+=($!)
	for _ in $(seq 50); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
	# History deep enough to recover a switch of several seconds at RATE.
	cat >"$TMP/wsedge.yaml" <<YAML
namespaces:
  - {name: bench, history_size: 10000, history_ttl: 5m, publish: true}
YAML
	ARGS+=(--config "$TMP/wsedge.yaml" --insecure-no-auth --broker redis://127.0.0.1:$RPORT/0)
	BENCH=(broadcast --conns "$N" --procs 2 --rate "$RATE" --size 64 --duration "$HOLD")
fi
wait_line() { # file msg timeout_s
	for _ in $(seq $(($3 * 20))); do grep -q "\"msg\":\"$2\"" "$1" && return 0; sleep 0.05; done
	echo "no '$2' in $1" >&2; cat "$1" >&2; return 1
}
"$BIN" serve "${ARGS[@]}" 2>"$TMP/old.log" &
OLD=$!
PIDS+=($OLD)
wait_line "$TMP/old.log" listening 10
ADMIN=$(grep '"msg":"listening"' "$TMP/old.log" | jq -r .admin)
TAG=$MODE-$N
[[ $SWITCH == 1 ]] || TAG=$TAG-noswitch
"$BIN" bench "${BENCH[@]}" --url "ws://127.0.0.1:$PORT/ws" --json-file "$OUT/$TAG.json" --quiet >"$TMP/bench.out" 2>&1 &
BPID=$!
PIDS+=($BPID)
# Wait for every connection, then a little of the steady state.
for _ in $(seq 1200); do
	c=$(curl -s "http://$ADMIN/metrics" | awk '$1=="wsedge_connections"{print $2}')
	[[ ${c:-0} -ge $N ]] && break
	sleep 0.1
done
echo "old process holds $c connections" | tee "$OUT/$TAG.log"
sleep 3
if [[ $SWITCH == 1 ]]; then
	START=$(date +%s.%N)
	"$BIN" serve "${ARGS[@]}" --takeover unix://$SOCK 2>"$TMP/new.log" &
	PIDS+=($!)
	wait_line "$TMP/new.log" "takeover done" 120
	END=$(date +%s.%N)
	set +e
	wait "$OLD"
	echo "old process exit status $?" | tee -a "$OUT/$TAG.log"
	set -e
	grep -h '"msg":"handoff done"\|"msg":"takeover done"\|"msg":"listening"' "$TMP/old.log" "$TMP/new.log" | tee -a "$OUT/$TAG.log"
	echo "new process started → takeover done: $(python3 -c "print(round($END-$START,3))") s (includes its start)" | tee -a "$OUT/$TAG.log"
fi
wait "$BPID" || true
cat "$TMP/bench.out" | tee -a "$OUT/$TAG.log"
