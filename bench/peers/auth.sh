#!/usr/bin/env bash
# Figures of issue 9 (authentication), in one run on one machine:
#
# 1. Handshakes per second, --conns handshakes in flight (connect mode, each
#    connection reopened as soon as it closes), client on the same cores:
#    wsedge without auth, wsedge with a distinct HS256 token per connection,
#    the peers without auth, then wsedge with RS256 and ES256 tokens. Every
#    client offers the wsedge.v1.json subprotocol (a wsedge server without
#    --echo requires it; the peers accept it), so the requests differ only
#    by the token. The bench reads the server's CPU time from /proc and
#    reports it per handshake.
# 2. Server RSS per idle connection, 19,000 connections over 2 client
#    processes: wsedge --echo (no protocol, the issue-3 figure), protocol
#    without auth and no subscription, HS256 token without subscription,
#    HS256 token whose subs claim (user:{sub}) subscribes the connection at
#    open (the bench waits for every subscribed push before measuring).
#
# usage: bench/peers/auth.sh
# env:   OUT=dir          results (default bench/results/issue9)
#        DURATION=10s     measured phase of the handshake runs
#        INFLIGHT=10000   handshakes in flight
#        ROUNDS=3         passes over the handshake servers (interleaved)
#        IDLE=19000 HOLD=5s
#        PEERS="gobwas nbio gorilla node"
#        ONLY=connect|idle  one half
#        QUICK=1          small counts and 2 s runs: a smoke test of the script
#
# Writes $OUT/<label>.<test>[.<round>].json and $OUT/table.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${OUT:-$ROOT/bench/results/issue9}
DURATION=${DURATION:-10s}
INFLIGHT=${INFLIGHT:-10000}
ROUNDS=${ROUNDS:-3}
IDLE=${IDLE:-19000}
HOLD=${HOLD:-5s}
PEERS=${PEERS:-gobwas nbio gorilla node}
ONLY=${ONLY:-}
if [[ ${QUICK:-0} == 1 ]]; then
	DURATION=2s INFLIGHT=200 ROUNDS=1 IDLE=2000 HOLD=1s
fi
CHANNELS='chat:*,user:{sub}'

command -v jq >/dev/null || { echo "auth.sh needs jq (apt-get install jq)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "auth.sh needs openssl (keys for RS256 and ES256)" >&2; exit 1; }
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
if [[ $PEERS == *node* && ! -d bench/peers/node/node_modules/ws ]]; then
	(cd bench/peers/node && npm ci --no-audit --no-fund >&2)
fi

# Keys: an HS256 secret file (0600, as the server wants it), an RSA 2048 and
# a P-256 key pair. The bench signs with the private halves; the server
# verifies with the secret or the public halves.
K=$BIN/keys
mkdir -m 700 "$K"
(umask 077 && openssl rand -hex 32 >"$K/secret")
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$K/rs256.pem" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$K/es256.pem" 2>/dev/null
for a in rs256 es256; do openssl pkey -in "$K/$a.pem" -pubout -out "$K/$a.pub"; done

WSEDGE="$BIN/wsedge serve --listen 127.0.0.1:0 --admin 127.0.0.1:0 --drain-grace 1s"
server_cmd() { # label: the server command line
	case $1 in
	wsedge | wsedge-idle) echo "$WSEDGE --insecure-no-auth" ;;
	wsedge-echo) echo "$WSEDGE --echo" ;;
	wsedge-hs256*) echo "$WSEDGE --auth-secret-file $K/secret" ;;
	wsedge-rs256) echo "$WSEDGE --auth-pem-files $K/rs256.pub" ;;
	wsedge-es256) echo "$WSEDGE --auth-pem-files $K/es256.pub" ;;
	node) echo "node $ROOT/bench/peers/node/server.js --listen 127.0.0.1:0 --admin 127.0.0.1:0" ;;
	*) echo "$BIN/peer-$1 --listen 127.0.0.1:0 --admin 127.0.0.1:0" ;;
	esac
}

bench_args() { # label test: the client's auth arguments
	case $1 in
	wsedge-echo) ;;
	wsedge-hs256-sub) echo "--token-key $K/secret --token-channels $CHANNELS --token-subs user:{sub}" ;;
	wsedge-hs256*) echo "--token-key $K/secret --token-channels $CHANNELS" ;;
	wsedge-rs256) echo "--token-key $K/rs256.pem --token-channels $CHANNELS" ;;
	wsedge-es256) echo "--token-key $K/es256.pem --token-channels $CHANNELS" ;;
	*) echo "--protocol" ;;
	esac
}

STARTS=0
start() { # label: starts a fresh server, sets SPID, WS, ADMIN
	STARTS=$((STARTS + 1))
	local log="$BIN/$1.$STARTS.log" line=""
	# shellcheck disable=SC2046
	$(server_cmd "$1") 2>"$log" &
	SPID=$!
	for _ in $(seq 200); do
		line=$(grep -m1 '"msg":"listening"' "$log" 2>/dev/null || true)
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

run() { # label file bench-args...
	local label=$1 file=$2; shift 2
	local auth
	auth=$(bench_args "$label")
	# shellcheck disable=SC2086
	local shown="wsedge bench $* $auth"
	echo "  $label: $shown" >&2
	rm -f "$OUT/$file.json"
	# shellcheck disable=SC2086
	if ! "$BIN/wsedge" bench "$@" $auth --url "ws://$WS/ws" --server-pid "$SPID" \
		--server-metrics "http://$ADMIN/metrics" --label "$label" --json --quiet >"$OUT/$file.json.tmp"; then
		echo "    FAILED: no figure for $label" >&2
		rm -f "$OUT/$file.json.tmp"
		return 0
	fi
	# The command recorded is one a reader can paste (no temporary paths).
	jq --arg cmd "${shown//$K\//keys/} --url ws://<server>/ws --server-pid <pid> --server-metrics http://<admin>/metrics --label $label --json" \
		--arg srv "$(server_cmd "$label" | sed "s|$BIN/||g; s|$K/||g; s|$ROOT/||g")" \
		'.command = $cmd | .server_command = $srv' "$OUT/$file.json.tmp" >"$OUT/$file.json"
	rm -f "$OUT/$file.json.tmp"
	jq -r '"    \(.handshakes_per_sec // 0 | floor)/s  server CPU \(.server.cpu_per_handshake_us // 0 | .*10 | floor | ./10)µs/handshake  rss/conn \(.server.rss_per_conn_bytes|floor)  subscribed \(.stats.subscribed)  failed \(.stats.connect_failed) errors \(.stats.errors)  client CPU \(.client_cpu_percent|floor)%"' "$OUT/$file.json" >&2
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
BEGAN=$(date -u '+%Y-%m-%d %H:%M')
HS_SERVERS="wsedge wsedge-hs256 $PEERS wsedge-rs256 wsedge-es256"
if [[ $ONLY != idle ]]; then
	for round in $(seq "$ROUNDS"); do
		echo "== handshakes, round $round" >&2
		for s in $HS_SERVERS; do
			start "$s"
			run "$s" "$s.connect.$round" connect --conns "$INFLIGHT" --duration "$DURATION"
			stop
		done
	done
fi
IDLE_SERVERS="wsedge-echo wsedge-idle wsedge-hs256-nosub wsedge-hs256-sub"
if [[ $ONLY != connect ]]; then
	echo "== idle memory" >&2
	for s in $IDLE_SERVERS; do
		start "$s"
		run "$s" "$s.idle" idle --conns "$IDLE" --procs 2 --duration "$HOLD"
		stop
	done
fi

{
	echo "\`bench/peers/auth.sh\` (DURATION=$DURATION INFLIGHT=$INFLIGHT ROUNDS=$ROUNDS IDLE=$IDLE HOLD=$HOLD QUICK=${QUICK:-0})"
	echo "from $BEGAN to $(date -u '+%H:%M') UTC: $(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB RAM, kernel $(uname -r), $(go env GOVERSION);"
	echo "load average before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg). Server and client share the machine; a fresh server per run."
	if [[ $ONLY != idle ]]; then
		echo
		echo "Handshakes, $INFLIGHT in flight, $DURATION per run (median of the rounds; every round in brackets):"
		echo
		echo "| server | handshakes/s | server CPU per handshake | server CPU | client CPU | upgrade p50 / p99 | failed / errors |"
		echo "|---|---|---|---|---|---|---|"
		for s in $HS_SERVERS; do
			fs=()
			for round in $(seq "$ROUNDS"); do [[ -f $OUT/$s.connect.$round.json ]] && fs+=("$OUT/$s.connect.$round.json"); done
			[[ ${#fs[@]} -gt 0 ]] || continue
			jq -rs --arg s "$s" '
				def med(f): (map(f) | sort) as $v | $v[($v|length)/2|floor];
				def r0: . * 10 | round / 10;
				"| \($s) | **\(med(.handshakes_per_sec) | round)** (\(map(.handshakes_per_sec|round|tostring)|join(", "))) | **\(med(.server.cpu_per_handshake_us) | r0) µs** (\(map(.server.cpu_per_handshake_us|r0|tostring)|join(", "))) | \(med(.server.cpu_percent)|round)% | \(med(.client_cpu_percent)|round)% | \(med(.latency.p50_us)|round) µs / \(med(.latency.p99_us)|round) µs | \(map(.stats.connect_failed)|add) / \(map(.stats.errors)|add) |"' "${fs[@]}"
		done
	fi
	if [[ $ONLY != connect ]]; then
		echo
		echo "Idle connections, $IDLE over 2 client processes, held $HOLD:"
		echo
		echo "| server | RSS before → held | RSS per connection | subscribed (pushes) | tokens (client bytes each) | failed / dropped |"
		echo "|---|---|---|---|---|---|"
		for s in $IDLE_SERVERS; do
			f=$OUT/$s.idle.json
			[[ -f $f ]] || continue
			jq -r --arg s "$s" '
				def mib: . / 1048576 * 10 | round / 10 | tostring + " MiB";
				"| \($s) | \(.server.rss_before_bytes|mib) → \(.server.rss_after_bytes|mib) | **\(.server.rss_per_conn_bytes|round) B** | \(.stats.subscribed) (\(.stats.server_subs // 0)) | \(if .tokens then "\(.tokens.count) \(.tokens.alg) (\(.tokens.bytes / .tokens.count | round) B)" else "-" end) | \(.stats.connect_failed) / \(.stats.dropped) |"' "$f"
		done
	fi
	echo
	echo "Servers (paths of this run's build and keys left out):"
	echo
	echo '```'
	for s in $HS_SERVERS $IDLE_SERVERS; do
		f=$(ls "$OUT/$s".*.json 2>/dev/null | head -1 || true)
		[[ -n $f ]] && jq -r --arg s "$s" '"\(.server_command)   # \($s)"' "$f"
	done | awk '!seen[$0]++'
	echo '```'
	echo
	echo "Clients:"
	echo
	echo '```'
	for f in "$OUT"/*.json; do jq -r '.command' "$f"; done | awk '!seen[$0]++'
	echo '```'
} >"$OUT/table.md"
echo "wrote $OUT/table.md" >&2
cat "$OUT/table.md"
