#!/usr/bin/env bash
# Side-by-side matrix: the same wsedge bench runs against wsedge and every
# peer server, one server at a time, each test on a fresh server process.
#
# usage: bench/peers/run.sh [server...]   (default: wsedge gorilla nbio gobwas node)
# env:   OUT=dir       results (JSON per run, table.md, plots); default bench/peers/results
#        DURATION=10s  measured phase of the echo, broadcast and connect runs
#        HOLD=5s       how long idle runs hold their connections
#        QUICK=1       small counts and 2s runs: a smoke test of the script
#
# Writes $OUT/<server>.<test>.json, $OUT/table.md (markdown with machine, date
# and every command) and $OUT/echo.svg|png, $OUT/broadcast.svg|png.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${OUT:-$ROOT/bench/peers/results}
DURATION=${DURATION:-10s}
HOLD=${HOLD:-5s}
SERVERS=${*:-wsedge gorilla nbio gobwas node}

IDLE1=10000 IDLE2=19000 ECHO_CONNS=1000 CLOSED_CONNS=100 SUBS=10000 SUBS_SMALL=1000 INFLIGHT=64
if [[ ${QUICK:-0} == 1 ]]; then
	IDLE1=1000 IDLE2=2000 ECHO_CONNS=100 CLOSED_CONNS=20 SUBS=500 SUBS_SMALL=100 INFLIGHT=16 DURATION=2s HOLD=1s
fi

command -v jq >/dev/null || { echo "run.sh needs jq (apt-get install jq)" >&2; exit 1; }
mkdir -p "$OUT"
BIN=$(mktemp -d)
SPID=
cleanup() {
	if [[ -n $SPID ]]; then kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; fi
	rm -rf "$BIN"
}
trap cleanup EXIT

echo "building wsedge and the peers" >&2
go build -o "$BIN/wsedge" ./cmd/wsedge
(cd bench/peers && for p in gorilla nbio gobwas; do go build -o "$BIN/peer-$p" "./cmd/$p"; done)
if [[ $SERVERS == *node* && ! -d bench/peers/node/node_modules/ws ]]; then
	(cd bench/peers/node && npm ci --no-audit --no-fund >&2)
fi

server_cmd() { # name [--echo]
	local name=$1; shift
	case $name in
	wsedge) echo "$BIN/wsedge serve --listen 127.0.0.1:0 --admin 127.0.0.1:0 --drain-grace 1s --insecure-no-auth $*" ;;
	node) echo "node $ROOT/bench/peers/node/server.js --listen 127.0.0.1:0 --admin 127.0.0.1:0 $*" ;;
	*) echo "$BIN/peer-$name --listen 127.0.0.1:0 --admin 127.0.0.1:0 $*" ;;
	esac
}

STARTS=0
start() { # name [--echo]: starts a server, sets SPID, WS, ADMIN
	STARTS=$((STARTS + 1))
	local log="$BIN/$1.$STARTS.log" line=""
	# shellcheck disable=SC2046
	$(server_cmd "$@") 2>"$log" &
	SPID=$!
	for _ in $(seq 200); do
		line=$(grep -m1 '"msg":"listening"' "$log" || true)
		[[ -n $line ]] && break
		sleep 0.05
	done
	[[ -n $line ]] || { echo "$1 did not start:" >&2; cat "$log" >&2; exit 1; }
	WS=$(jq -r .ws <<<"$line")
	ADMIN=$(jq -r .admin <<<"$line")
}

stop() {
	kill "$SPID" 2>/dev/null || true
	wait "$SPID" 2>/dev/null || true
	SPID=
}

run() { # server test bench-args...
	local name=$1 test=$2; shift 2
	echo "  $name $test: wsedge bench $*" >&2
	rm -f "$OUT/$name.$test.json"
	if ! "$BIN/wsedge" bench "$@" --url "ws://$WS/ws" --server-pid "$SPID" \
		--server-metrics "http://$ADMIN/metrics" --label "$name" --json --quiet >"$OUT/$name.$test.json.tmp"; then
		echo "    FAILED: no figure for $name $test" >&2
		rm -f "$OUT/$name.$test.json.tmp"
		return 0
	fi
	# The command recorded is the one a reader can paste (no temp paths).
	jq --arg cmd "wsedge bench $* --url ws://<server>/ws --server-pid <pid> --server-metrics http://<admin>/metrics --label $name --json" \
		'.command = $cmd' "$OUT/$name.$test.json.tmp" >"$OUT/$name.$test.json"
	rm -f "$OUT/$name.$test.json.tmp"
	jq -r '"    p50 \(.latency.p50_us)µs p99 \(.latency.p99_us)µs  msg/s \(.msg_per_sec|floor)  rss/conn \(.server.rss_per_conn_bytes|floor)  failed \(.stats.connect_failed) dropped \(.stats.dropped) errors \(.stats.errors) missing \(.missing)"' "$OUT/$name.$test.json" >&2
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for s in $SERVERS; do
	echo "== $s" >&2
	start "$s" --echo
	run "$s" idle1 idle --conns "$IDLE1" --procs 1 --duration "$HOLD"
	stop
	start "$s" --echo
	run "$s" idle2 idle --conns "$IDLE2" --procs 2 --duration "$HOLD"
	stop
	start "$s" --echo
	run "$s" echo echo --conns "$ECHO_CONNS" --rate 10 --size 1024 --duration "$DURATION"
	run "$s" closed echo --conns "$CLOSED_CONNS" --rate 0 --size 1024 --duration "$DURATION"
	run "$s" connect connect --conns "$INFLIGHT" --duration "$DURATION"
	stop
	start "$s"
	run "$s" broadcast broadcast --conns "$SUBS" --procs 1 --rate 10 --size 64 --duration "$DURATION"
	stop
	start "$s"
	run "$s" broadcast-small broadcast --conns "$SUBS_SMALL" --procs 1 --rate 10 --size 64 --duration "$DURATION"
	stop
done

files=()
for s in $SERVERS; do
	for t in idle1 idle2 echo closed broadcast-small broadcast connect; do
		[[ -f $OUT/$s.$t.json ]] && files+=("$OUT/$s.$t.json")
	done
done
{
	echo "Side-by-side run of \`bench/peers/run.sh $SERVERS\` (DURATION=$DURATION HOLD=$HOLD QUICK=${QUICK:-0})"
	echo "on $(date -u '+%Y-%m-%d %H:%M UTC'): $(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB RAM, kernel $(uname -r);"
	echo "load average before the run: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg)."
	echo "Server and clients share the machine; each test ran against a fresh server process."
	echo
	"$BIN/wsedge" bench table "${files[@]}"
} >"$OUT/table.md"
echo_files=() bc_files=()
for s in $SERVERS; do
	[[ -f $OUT/$s.echo.json ]] && echo_files+=("$OUT/$s.echo.json")
	[[ -f $OUT/$s.broadcast.json ]] && bc_files+=("$OUT/$s.broadcast.json")
done
for ext in svg png; do
	[[ ${#echo_files[@]} -gt 0 ]] && "$BIN/wsedge" bench plot -o "$OUT/echo.$ext" \
		-title "Echo round trip, $ECHO_CONNS conns × 10 msg/s × 1 KiB" "${echo_files[@]}" || true
	[[ ${#bc_files[@]} -gt 0 ]] && "$BIN/wsedge" bench plot -o "$OUT/broadcast.$ext" \
		-title "Broadcast delivery, $SUBS subscribers × 10 msg/s × 64 B" "${bc_files[@]}" || true
done
echo "wrote $OUT/table.md" >&2
cat "$OUT/table.md"
