#!/usr/bin/env bash
# One million connections as a real cluster (issue 16): its own
# redis-server (free port, nothing persisted), NODES `wsedge serve` nodes
# joined through it with token authentication (a generated HS256 secret),
# and `wsedge bench broadcast` over PROCS child processes and many 127.x
# source addresses. Every connection has a token of its own, is subscribed
# by the server to its personal channel (user:{sub}), subscribes to one of
# CHANNELS shared channels and to the everyone channel; during HOLD every
# shared channel gets a publish and everyone a broadcast every EVERY.
# Then every node is drained (SIGTERM) and the bench counts each client's
# disconnect push and close 1001. Loopback only; every process is bounded
# in time and everything started here stops on any exit.
#
# usage: bench/million.sh          (or `make million`)
# env:   CONNS=1000000  NODES=53  HOLD=5m  EVERY=10s  CHANNELS=100
#        PROCS=NODES (≥ NODES, ≤ 19,500 connections each)  SOURCES=250
#        DRAIN_GRACE=10s (the nodes' spread of close 1001)  DRAIN_WAIT=120s
#        SETUP_TIMEOUT=Ns (default: CONNS/1000 + 120 s, or 1.25 × CONNS/CONNECT_RATE + 120 s)
#        CONNECT_RATE=0 (cap on new connections/s; 0 = as fast as it goes)
#        APPLY_SYSCTL=1 raises the sysctls that are short (restored on exit)
#        FORCE=1 runs even when a check fails   CHECK_ONLY=1 checks and exits
#        OUT=dir (default bench/results/million)
#        NODE_FLAGS="..." extra `wsedge serve` flags   LOG_LEVEL=warn (the nodes')
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${CONNS:-1000000}
NODES=${NODES:-53}
HOLD=${HOLD:-5m}
EVERY=${EVERY:-10s}
CHANNELS=${CHANNELS:-100}
PROCS=${PROCS:-$NODES}
SOURCES=${SOURCES:-250}
DRAIN_GRACE=${DRAIN_GRACE:-10s}
DRAIN_WAIT=${DRAIN_WAIT:-120s}
CONNECT_RATE=${CONNECT_RATE:-0}
# Opening took ~1,000 connections/s here with the machine loaded (each
# costs three broker operations: the token's user:{sub} and two subscribes).
if (( CONNECT_RATE > 0 )); then
	SETUP_TIMEOUT=${SETUP_TIMEOUT:-$(( CONNS * 5 / 4 / CONNECT_RATE + 120 ))s}
else
	SETUP_TIMEOUT=${SETUP_TIMEOUT:-$(( CONNS / 1000 + 120 ))s}
fi
OUT=${OUT:-$PWD/bench/results/million}
NODE_FLAGS=${NODE_FLAGS:-}
LOG_LEVEL=${LOG_LEVEL:-warn} # info logs a line per connection closed: 1M lines at the drain
LABEL=${LABEL:-million-${NODES}n-${CONNS}c}
MAX_PER_NODE=19000

for c in jq redis-server redis-cli python3 go curl; do
	command -v "$c" >/dev/null || { echo "million.sh needs $c" >&2; exit 1; }
done
say() { printf '== %s\n' "$*"; }
die() { printf 'million.sh: %s\n' "$*" >&2; exit 1; }

# ---- shape -------------------------------------------------------------
PUBS=2 # the shared channels' publisher and the everyone publisher (on the first node)
PER_NODE=$(( (CONNS + NODES - 1) / NODES + PUBS ))
(( PER_NODE <= MAX_PER_NODE )) || die "$CONNS connections over $NODES nodes is $PER_NODE per node, over $MAX_PER_NODE (open-file limit $(ulimit -Hn)): use NODES=$(( (CONNS + MAX_PER_NODE - PUBS - 1) / (MAX_PER_NODE - PUBS) ))"
(( PROCS >= NODES )) || die "PROCS=$PROCS: use at least NODES=$NODES"
PER_PROC=$(( (CONNS + PROCS - 1) / PROCS ))
(( PER_PROC <= 19500 )) || die "$PER_PROC connections per bench process: raise PROCS to $(( (CONNS + 19499) / 19500 ))"
(( PROCS <= 64 )) || die "PROCS=$PROCS: the bench takes at most 64"

# ---- host checks -------------------------------------------------------
# What CONNS connections need, both ends on this machine: 2 sockets each.
# TCP memory: ~0.25 pages per socket measured at 380,000 sockets (issue 16:
# 92k pages), so the pressure threshold must stay above CONNS/2 pages with
# room for the broadcasts' buffers; kernel memory ~5.3 KB per socket.
sockets=$(( 2 * CONNS ))
need_files=$(( sockets + 50000 ))
need_tcp_pressure=$(( CONNS * 3 / 4 ))
need_tcp_min=$(( CONNS / 2 ))
need_tcp_max=$(( CONNS * 3 / 2 ))
need_conntrack=$(( CONNS + CONNS / 10 + 10000 ))
# Measured at 60,000 (small-scale validation): ~6.2 KB of slab per socket
# (12.4 KB per connection), 5.5 KB of node RSS and ~2.4 KB of bench RSS per
# connection, Redis ~0.4 KB: ≈ 20 KiB per connection in all.
need_mem_kb=$(( CONNS * 20 ))
declare -A WANT OLD
MISSING=()
sysget() { sysctl -n "$1" 2>/dev/null | tr '\t' ' ' | tr -s ' '; }
want() { # key value reason: records a sysctl that is short
	MISSING+=("$1=$2 ($3; now $(sysget "$1"))")
	WANT[$1]=$2
}
check_host() {
	MISSING=()
	ADVICE=()
	WANT=()
	local v
	v=$(sysget fs.file-max); (( v >= need_files )) || want fs.file-max "$need_files" "$sockets sockets + slack"
	v=$(sysget fs.nr_open); (( v >= 20000 )) || want fs.nr_open 1048576 "per-process file limit ceiling"
	read -r tmin tpress tmax <<<"$(sysget net.ipv4.tcp_mem)"
	if (( tpress < need_tcp_pressure || tmax < need_tcp_max )); then
		want net.ipv4.tcp_mem "$(( tmin > need_tcp_min ? tmin : need_tcp_min )) $(( tpress > need_tcp_pressure ? tpress : need_tcp_pressure )) $(( tmax > need_tcp_max ? tmax : need_tcp_max ))" \
			"TCP memory in pages: ~0.25 per socket, pressure above $need_tcp_pressure"
	fi
	if [[ -r /proc/sys/net/netfilter/nf_conntrack_max ]]; then
		v=$(sysget net.netfilter.nf_conntrack_max)
		if (( v < need_conntrack )); then
			# Loaded but tracking nothing (no netfilter rule asks for it):
			# loopback connections take no entry. Measured 0 during the
			# small-scale runs here; the result's conntrack_count says.
			if (( $(sysget net.netfilter.nf_conntrack_count) == 0 )); then
				ADVICE+=("nf_conntrack_max=$v < $need_conntrack, but conntrack tracks nothing now (count 0); if a rule starts tracking: sysctl -w net.netfilter.nf_conntrack_max=$need_conntrack")
			else
				want net.netfilter.nf_conntrack_max "$need_conntrack" "conntrack is tracking connections; each loopback connection would take an entry"
			fi
		fi
	fi
	v=$(sysget net.core.somaxconn); (( v >= 4096 )) || want net.core.somaxconn 4096 "accept backlog of the nodes during the connect burst"
	# Advice only: the bench keeps 256 handshakes in flight per loop, well
	# under the SYN backlog of 53 listeners, and SYN cookies cover overflow.
	v=$(sysget net.ipv4.tcp_max_syn_backlog); (( v >= 1024 )) || ADVICE+=("net.ipv4.tcp_max_syn_backlog=$v is low for a connect burst")
	local hard; hard=$(ulimit -Hn)
	(( hard >= PER_NODE + 200 )) || MISSING+=("RLIMIT_NOFILE hard $hard < $PER_NODE + 200 per node (not a sysctl: lower the per-node share with more NODES)")
	local avail; avail=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
	(( avail >= need_mem_kb )) || MISSING+=("memory: MemAvailable $(( avail >> 20 )) GiB < ~$(( need_mem_kb >> 20 )) GiB estimated for $CONNS connections (not settable here)")
}
restore_sysctl() {
	for k in "${!OLD[@]}"; do
		sysctl -q -w "$k=${OLD[$k]}" >/dev/null 2>&1 && echo "restored $k=${OLD[$k]}" || echo "could not restore $k=${OLD[$k]}" >&2
	done
	OLD=()
}

# ---- everything below is cleaned up on exit ---------------------------
WORK=$(mktemp -d)
PIDS=()
NODE_PIDS=()
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for _ in $(seq 50); do
		local alive=0
		for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
		(( alive )) || break
		sleep 0.2
	done
	for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	restore_sysctl
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
go build -o "$WORK/wsedge" ./cmd/wsedge
BIN=$WORK/wsedge

say "checks for $CONNS connections ($sockets sockets) on $NODES nodes, $PROCS bench processes"
if "$BIN" 2>&1 | grep -q '^  tune'; then
	say "wsedge tune check --target-conns $CONNS"
	"$BIN" tune check --target-conns "$CONNS" || MISSING_TUNE=1
fi
check_host
if (( ${#MISSING[@]} > 0 )); then
	echo "short for this run:"
	printf '  %s\n' "${MISSING[@]}"
	if (( ${#WANT[@]} > 0 )); then
		echo "to raise them (as root):"
		for k in "${!WANT[@]}"; do echo "  sysctl -w $k=\"${WANT[$k]}\""; done
	fi
	if [[ ${APPLY_SYSCTL:-0} == 1 ]]; then
		for k in "${!WANT[@]}"; do
			OLD[$k]=$(sysget "$k")
			sysctl -q -w "$k=${WANT[$k]}" || die "sysctl -w $k failed (root?)"
			echo "applied $k=${WANT[$k]} (was ${OLD[$k]}; restored on exit)"
		done
		check_host
	fi
	if (( ${#MISSING[@]} > 0 )) && [[ ${FORCE:-0} != 1 && ${CHECK_ONLY:-0} != 1 ]]; then
		printf 'still short:\n'; printf '  %s\n' "${MISSING[@]}"
		restore_sysctl
		die "not starting (APPLY_SYSCTL=1 raises the sysctls and restores them on exit; FORCE=1 runs anyway)"
	fi
else
	echo "all checks pass"
fi
(( ${#ADVICE[@]} == 0 )) || printf 'advice: %s\n' "${ADVICE[@]}"

if [[ ${CHECK_ONLY:-0} == 1 ]]; then
	echo "CHECK_ONLY=1: nothing started"
	exit 0
fi
if [[ ${MISSING_TUNE:-0} == 1 && ${FORCE:-0} != 1 ]]; then
	die "wsedge tune check failed (FORCE=1 runs anyway)"
fi
mkdir -p "$OUT"
rm -f "$OUT"/node*.log "$OUT"/redis.log
SECRET=$WORK/secret
( umask 077; head -c 48 /dev/urandom | base64 -w0 >"$SECRET" )

kernel_snapshot() { # label
	echo "-- $1: $(grep '^TCP:' /proc/net/sockstat); $(grep -E '^(Slab|SUnreclaim):' /proc/meminfo | tr -s ' ' | tr '\n' ' ')conntrack $(cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null || echo -)"
}
kernel_snapshot "before"

RPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
timeout --signal=TERM 2h redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no \
	--maxclients 10000 --logfile "$OUT/redis.log" &
PIDS+=($!)
for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
redis-cli -p "$RPORT" ping >/dev/null || die "redis-server did not start (see $OUT/redis.log)"
BROKER=redis://127.0.0.1:$RPORT/0

say "starting $NODES nodes on $BROKER (log level $LOG_LEVEL)"
# Ports are picked here (all bound at once, then released) because at log
# level warn a node does not log the ones it got; readiness is its /readyz.
mapfile -t PORTS < <(python3 -c "
import socket
ss=[socket.socket() for _ in range(2*$NODES)]
for s in ss: s.bind(('127.0.0.1',0))
for s in ss: print(s.getsockname()[1])
for s in ss: s.close()")
# A node is bounded too: it ends itself after twice the run's budget.
NODE_BOUND=$(( ${SETUP_TIMEOUT%s} * 2 + 3600 ))
URLS=()
METRICS=()
for i in $(seq "$NODES"); do
	ws=127.0.0.1:${PORTS[$(( 2 * i - 2 ))]}
	admin=127.0.0.1:${PORTS[$(( 2 * i - 1 ))]}
	# shellcheck disable=SC2086
	timeout --signal=KILL "$NODE_BOUND" "$BIN" serve --listen "$ws" --admin "$admin" --broker "$BROKER" \
		--auth-secret-file "$SECRET" --drain-grace "$DRAIN_GRACE" --max-conns "$(( MAX_PER_NODE + 500 ))" \
		--log-level "$LOG_LEVEL" $NODE_FLAGS 2>"$OUT/node$i.log" &
	PIDS+=($!)
	URLS+=("ws://$ws/ws")
	METRICS+=("http://$admin/metrics")
done
for i in $(seq "$NODES"); do
	admin=127.0.0.1:${PORTS[$(( 2 * i - 1 ))]}
	for _ in $(seq 600); do
		curl -fs -o /dev/null "http://$admin/readyz" && break
		kill -0 "${PIDS[$i]}" 2>/dev/null || break
		sleep 0.05
	done
	curl -fs -o /dev/null "http://$admin/readyz" || { cat "$OUT/node$i.log" >&2; die "node $i did not start"; }
done
# The real server pids (timeout's children).
for i in $(seq "$NODES"); do
	tp=${PIDS[$i]}
	np=$(pgrep -P "$tp" -x wsedge || true)
	[[ -n $np ]] || die "no wsedge process under timeout pid $tp"
	NODE_PIDS+=("$np")
done
join() { local IFS=,; echo "$*"; }
echo "nodes: ${#URLS[@]} ($(join "${NODE_PIDS[@]:0:4}")…)"

# ---- the run ------------------------------------------------------------
HOLD_S=$(python3 -c "import re,sys; m=re.fullmatch(r'(\d+)(ms|s|m|h)?','$HOLD'); v=int(m[1]); print({'ms':v/1000,'s':v,None:v,'m':v*60,'h':v*3600}[m[2]])")
BENCH_BOUND=$(python3 -c "print(int(${SETUP_TIMEOUT%s} + $HOLD_S + 2*30 + 2*${DRAIN_WAIT%s} + 120))")
CMD=("$BIN" bench broadcast --label "$LABEL" --quiet --json-file "$OUT/$LABEL.json"
	--url "$(join "${URLS[@]}")" --publish-url "${URLS[0]}"
	--conns "$CONNS" --channel bench:room --channels "$CHANNELS" --rate "$(python3 -c "print(1/${EVERY%s})")" --size 64
	--all-channel bench:all --all-every "$EVERY"
	--procs "$PROCS" --sources "$SOURCES" --connect-rate "$CONNECT_RATE"
	--duration "$HOLD" --drain 30s --setup-timeout "$SETUP_TIMEOUT"
	--token-key "$SECRET" --token-channels 'bench:*' --token-publish 'bench:*' --token-subs 'user:{sub}'
	--node-pids "$(join "${NODE_PIDS[@]}")" --node-metrics "$(join "${METRICS[@]}")"
	--drain-nodes --drain-wait "$DRAIN_WAIT")
say "bench (bounded to ${BENCH_BOUND}s): wsedge ${CMD[*]:1}" | sed "s#$WORK#\$TMP#g"
printf '%s\n' "wsedge ${CMD[*]:1}" | sed "s#$WORK#\$TMP#g" >"$OUT/command.txt"
# Redis's memory and clients every 5 s while the bench runs (its 1M
# personal channels are subscriptions there too).
( while sleep 5; do
	printf '%s %s %s\n' "$(date +%s)" "$(redis-cli -p "$RPORT" info memory 2>/dev/null | tr -d '\r' | awk -F: '/^used_memory:/ {print $2}')" \
		"$(redis-cli -p "$RPORT" info clients 2>/dev/null | tr -d '\r' | awk -F: '/^connected_clients:/ {print $2}')"
done ) >"$OUT/redis-memory.txt" 2>/dev/null &
PIDS+=($!)
start=$(date +%s)
set +e
timeout --signal=TERM --kill-after=30 "$BENCH_BOUND" "${CMD[@]}" | tee "$OUT/$LABEL.txt"
brc=${PIPESTATUS[0]}
set -e
echo "bench exited $brc after $(( $(date +%s) - start ))s"

# ---- after: the nodes should have drained and exited --------------------
left=0
for p in "${NODE_PIDS[@]}"; do
	for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
	kill -0 "$p" 2>/dev/null && left=$(( left + 1 ))
done
echo "nodes still running after the drain: $left of $NODES"
kernel_snapshot "after"
if [[ -s $OUT/redis-memory.txt ]]; then
	echo "redis used_memory peak $(awk '$2 > m {m = $2} END {printf "%.1f MiB", m / 1048576}' "$OUT/redis-memory.txt") (sampled every 5 s: $OUT/redis-memory.txt)"
fi
J=$OUT/$LABEL.json
if [[ -s $J ]]; then
	say "per node (pid, RSS start → ready → end, goroutines start/ready/end)"
	jq -r '.cluster.nodes[] | "  \(.pid)  \(.rss_start_bytes/1048576|floor) → \(.rss_ready_bytes/1048576|floor) → \(.rss_end_bytes/1048576|floor) MiB  goroutines \(.goroutines_start)/\(.goroutines_ready)/\(.goroutines_end)"' "$J"
	say "figures"
	jq -r '"  connections held     \(.stats.open // 0 | tostring) open at the end of the drain wait; \(.node_drain.held) at SIGTERM",
		"  opening              \(.opening.per_second|floor)/s upgrades over \(.opening.seconds*10|floor/10)s; hold began \(.opening.setup_s*10|floor/10)s after start with \(.opening.pending_at_start) owed",
		"  server RSS           \(.cluster.rss_end_bytes/1048576|floor) MiB total; \(.cluster.rss_per_conn_bytes|floor) B/conn grown, \(.cluster.rss_full_per_conn_bytes|floor) B/conn whole; goroutines constant: \(.cluster.goroutines_same)",
		"  kernel               TCP mem \(.kernel.start.tcp_mem_pages) → \(.kernel.end.tcp_mem_pages) pages; Slab \(.kernel.start.slab_bytes/1048576|floor) → \(.kernel.end.slab_bytes/1048576|floor) MiB (\((.kernel.end.slab_bytes-.kernel.start.slab_bytes)/((.kernel.end.tcp_inuse-.kernel.start.tcp_inuse)|if .>0 then . else 1 end)|floor) B per socket); conntrack \(.kernel.start.conntrack_count) → \(.kernel.end.conntrack_count)",
		"  everyone             \(.everyone.published) broadcasts: p50 \(.everyone.latency.p50_us/1000|floor) ms  p99 \(.everyone.latency.p99_us/1000|floor) ms  last delivery p50 \(.everyone.last_delivery_p50_us/1000|floor) ms max \(.everyone.last_delivery_max_us/1000|floor) ms; missing \(.everyone.missing) (\(.everyone.conns_missing) conns), duplicated \(.everyone.duplicates)",
		"  shared channels      \(.published) publishes; missing \(.missing); delivery p99 \(.latency.p99_us/1000|floor) ms",
		"  heartbeats           \(.stats.ping_frames // 0) ping frames answered, \(.stats.ping_pushes // 0) ping pushes; dropped \(.stats.dropped)",
		"  node drain           \(.stats.drain_pushes // 0) disconnect 4001, \(.stats.drain_clean // 0) closed 1001 after it, \(.stats.drain_other // 0) otherwise, \(.node_drain.left_open) left; \(.node_drain.seconds*10|floor/10)s",
		"  bench processes      \(.client_rss_bytes/1048576|floor) MiB RSS total, \(.client_rss_bytes/.procs/1048576|floor) MiB each, \(.client_rss_per_conn_bytes|floor) B/conn"' "$J"
	"$BIN" bench plot -o "$OUT/$LABEL-latency.svg" --title "$LABEL: delivery latency (shared channels and everyone)" "$J" || true
	"$BIN" bench plot --open -o "$OUT/$LABEL-open.svg" --title "$LABEL: connections open" "$J" || true
	echo "result: $J; plots: $OUT/$LABEL-latency.svg $OUT/$LABEL-open.svg"
fi
exit "$brc"
