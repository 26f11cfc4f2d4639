#!/usr/bin/env bash
# Cluster figures (issue 10): cross-node delivery beside single-node
# delivery in the same run, and throughput of 4 nodes joined by Redis.
# Starts its own redis-server (free port, nothing persisted) and fresh
# `wsedge serve` processes built from this tree; everything stops on exit.
#
# usage: bench/cluster.sh               (from anywhere in the repository)
# env:   DURATION=30s    measured phase of each run
#        SUBS=10000      subscribers of the delivery runs
#        RATE=10         publishes per second in the delivery runs
#        TPUT_RATES="5 10 20"  publishes/s per channel of the 4-node runs (1,000 channels × 19)
#        PUBLISHERS=50   publisher connections of the 4-node runs: a connection has one
#                        broker call in flight at a time (replies keep command order), so
#                        one connection publishes at most 1/RTT to Redis a second
#        RUNS="delivery throughput"
#        OUT=dir         JSON results and logs; default bench/results/cluster
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/bench/results/cluster}
DURATION=${DURATION:-30s}
SUBS=${SUBS:-10000}
RATE=${RATE:-10}
TPUT_RATES=${TPUT_RATES:-5 10 20}
PUBLISHERS=${PUBLISHERS:-50}
RUNS=${RUNS:-delivery throughput}
command -v jq >/dev/null || { echo "cluster.sh needs jq" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "cluster.sh needs redis-server" >&2; exit 1; }
mkdir -p "$OUT"
BIN=$(mktemp -d)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$BIN"
}
trap cleanup EXIT
go build -o "$BIN/wsedge" ./cmd/wsedge

RPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --logfile "$OUT/redis.log" &
PIDS+=($!)
for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.05; done

# node NAME BROKER: starts a node, sets WS_<NAME> and PID_<NAME>.
node() {
	local name=$1 broker=$2 log="$OUT/$1.server.log"
	"$BIN/wsedge" serve --listen 127.0.0.1:0 --admin 127.0.0.1:0 --drain-grace 1s --insecure-no-auth \
		--command-rate 0 --broker "$broker" 2>"$log" &
	local pid=$!
	PIDS+=("$pid")
	local line=""
	for _ in $(seq 200); do
		line=$(grep -m1 '"msg":"listening"' "$log" || true)
		[[ -n $line ]] && break
		sleep 0.05
	done
	[[ -n $line ]] || { echo "wsedge $name did not start:" >&2; cat "$log" >&2; exit 1; }
	printf -v "WS_$name" '%s' "ws://$(jq -r .ws <<<"$line")/ws"
	printf -v "PID_$name" '%s' "$pid"
}
stop_all_nodes() {
	for p in "${PIDS[@]:1}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	PIDS=("${PIDS[0]}")
}
bench() { # label, then bench flags
	local label=$1; shift
	echo "== $label"
	"$BIN/wsedge" bench broadcast --label "$label" --quiet --json-file "$OUT/$label.json" "$@"
}

if [[ " $RUNS " == *" delivery "* ]]; then
	R=redis://127.0.0.1:$RPORT/0
	node mem memory
	node a "$R"
	node b "$R"
	COMMON=(--conns "$SUBS" --rate "$RATE" --size 64 --procs 2 --duration "$DURATION" --channel bench:x)
	bench "single-memory-$RATE" --url "$WS_mem" "${COMMON[@]}"
	bench "single-redis-$RATE" --url "$WS_a" "${COMMON[@]}"
	bench "cross-node-$RATE" --url "$WS_b" --publish-url "$WS_a" "${COMMON[@]}"
	stop_all_nodes
fi

if [[ " $RUNS " == *" throughput "* ]]; then
	R=redis://127.0.0.1:$RPORT/0
	node a "$R"; node b "$R"; node c "$R"; node d "$R"
	for rate in $TPUT_RATES; do
		bench "4nodes-1000ch-$rate" --url "$WS_a,$WS_b,$WS_c,$WS_d" --publish-url "$WS_a" \
			--conns 19000 --channels 1000 --rate "$rate" --publishers "$PUBLISHERS" --size 64 --procs 2 --duration "$DURATION"
	done
	stop_all_nodes
fi
"$BIN/wsedge" bench table "$OUT"/*.json
