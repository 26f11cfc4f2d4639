#!/usr/bin/env bash
# Hostile soak: a quiet run, then the same measured load with attackers
# beside it, each against a fresh `wsedge serve` built from this tree.
#
# usage: bench/hostile.sh            (from anywhere in the repository)
# env:   DURATION=10m    measured phase of each run
#        OUT=dir         JSON results and server logs; default bench/results/hostile
#        RUNS="quiet hostile"
#        PING_RATE=10    pings per second per measured subscriber (the issue's echo)
#        PUB_RATE=2      publishes per second to the 5,000 subscribers
#        SIZE=4096       publish data bytes: 8 KiB/s to each never-reader, so its queue
#                        passes a 64 KiB bound within HOLD (at 64 B it never would)
#        HOLD=30s        longest life of one attacker connection
#        SERVE_FLAGS     extra flags for wsedge serve
#        BOUND=1536MiB   the server's configured memory bound, printed beside its RSS
#                        peak (default: --max-conns 12000 × 2 × --max-outbound-bytes 64 KiB)
#        ABORT=4GiB      end a run early once the server's RSS passes this
#
# Prints each run's summary and writes $OUT/<run>.json (with the exact
# command) and $OUT/<run>.server.log.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/bench/results/hostile}
DURATION=${DURATION:-10m}
RUNS=${RUNS:-quiet hostile}
BOUND=${BOUND:-1536MiB}
ABORT=${ABORT:-4GiB}
PING_RATE=${PING_RATE:-10}
PUB_RATE=${PUB_RATE:-2}
SIZE=${SIZE:-4096}
HOLD=${HOLD:-30s}
command -v jq >/dev/null || { echo "hostile.sh needs jq" >&2; exit 1; }
mkdir -p "$OUT"
BIN=$(mktemp -d)
SPID=
cleanup() {
	if [[ -n $SPID ]]; then kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; fi
	rm -rf "$BIN"
}
trap cleanup EXIT
go build -o "$BIN/wsedge" ./cmd/wsedge

# 5,000 measured subscribers ping and receive the publishes.
MEASURED=(--conns 5000 --rate "$PUB_RATE" --size "$SIZE" --ping-rate "$PING_RATE" --procs 2 --duration "$DURATION" --drain 10s)
ATTACK=(--slowloris 2000 --no-read 1000 --history-flood 100 --oversize 5 --overflow 5 --churn 500 --attack-hold "$HOLD")

for run in $RUNS; do
	log="$OUT/$run.server.log"
	# shellcheck disable=SC2086
	"$BIN/wsedge" serve --listen 127.0.0.1:0 --admin 127.0.0.1:0 --drain-grace 1s --insecure-no-auth \
		--max-conns 12000 --max-outbound-bytes 65536 --socket-send-buffer 65536 ${SERVE_FLAGS:-} 2>"$log" &
	SPID=$!
	line=""
	for _ in $(seq 200); do
		line=$(grep -m1 '"msg":"listening"' "$log" || true)
		[[ -n $line ]] && break
		sleep 0.05
	done
	[[ -n $line ]] || { echo "wsedge did not start:" >&2; cat "$log" >&2; exit 1; }
	ws=$(jq -r .ws <<<"$line")
	admin=$(jq -r .admin <<<"$line")
	args=(broadcast --url "ws://$ws/ws" "${MEASURED[@]}" --server-pid "$SPID"
		--server-metrics "http://$admin/metrics" --server-rss-bound "$BOUND" --abort-rss "$ABORT" --label "$run")
	[[ $run == hostile ]] && args+=("${ATTACK[@]}")
	echo "$run: wsedge bench ${args[*]}" >&2
	"$BIN/wsedge" bench "${args[@]}" --json-file "$OUT/$run.json" --quiet
	kill "$SPID" 2>/dev/null || true
	wait "$SPID" 2>/dev/null || true
	SPID=
done
