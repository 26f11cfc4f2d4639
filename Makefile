# wsedge — build, run and test targets. `make test` is what CI runs.
GO      ?= go
BIN     ?= bin/wsedge
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
FUZZTIME ?= 60s
# Tools installed with `go install` (staticcheck, govulncheck) live here.
export PATH := $(PATH):$(shell $(GO) env GOPATH)/bin

.PHONY: build run test race fuzz fuzz-short bench lint autobahn clean browser-deps

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/wsedge

# Runs the server on the built-in default configuration (ws 127.0.0.1:8080/ws,
# admin 127.0.0.1:9090).
run:
	$(GO) run ./cmd/wsedge serve

# The full test suite, as CI runs it: vet, gofmt, the tests with the race
# detector, the tests again without it (allocation counts and the timing of
# load tests only hold there, so those skip themselves under -race), and a
# short run of every fuzz target.
test: lint-basic browser-deps
	$(GO) test -race -count=1 -timeout 20m ./...
	$(GO) test -count=1 -timeout 20m ./...
	$(MAKE) fuzz-short

# The browser test drives Debian's chromium with playwright-core; it skips
# without chromium or node, and needs its locked npm packages otherwise.
# The permessage-deflate interop test needs Node's ws (testdata/deflate).
browser-deps:
	@if command -v npm >/dev/null && [ ! -d cmd/wsedge/testdata/browser/node_modules ]; then \
		cd cmd/wsedge/testdata/browser && npm ci --no-audit --no-fund; fi
	@if command -v npm >/dev/null && [ ! -d cmd/wsedge/testdata/deflate/node_modules ]; then \
		cd cmd/wsedge/testdata/deflate && npm ci --no-audit --no-fund; fi

race:
	$(GO) test -race -count=1 ./...

# Fuzz targets: 50,000 inputs each in CI (fuzz-short), $(FUZZTIME) each here.
FUZZ_TARGETS = ./frame:FuzzFrame ./frame:FuzzInflate ./engine:FuzzHandshake ./protocol:FuzzProtocol ./auth:FuzzToken ./client:FuzzClientRead ./metrics:FuzzProcStats ./tuning:FuzzProfile ./ingest:FuzzIngest
FUZZ_TARGETS += ./handoff:FuzzDecode ./frame:FuzzParserState ./auth:FuzzIdentityDecode
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$name ($$pkg) for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	done

# A count, not a duration: go1.26's fuzzing coordinator can report a
# spurious "context deadline exceeded" failure when a -fuzztime duration
# expires while a worker is mid-run (go.dev/issue/75804, fixed in Go 1.27).
# 50,000 inputs take a few seconds to ~15 s per target here.
fuzz-short:
	$(MAKE) fuzz FUZZTIME=50000x

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

lint-basic:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^bench/peers/')); \
		if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

lint: lint-basic
	@if command -v staticcheck >/dev/null; then staticcheck ./...; else echo "staticcheck not installed: skipped"; fi
	@if command -v govulncheck >/dev/null; then govulncheck ./...; else echo "govulncheck not installed: skipped"; fi

# RFC 6455 and RFC 7692 conformance with the Autobahn fuzzingclient (see
# ../shared/autobahn): sections 1-7, 9, 10 (~30 s), then 12 and 13, the 216
# permessage-deflate cases, in four clients at once against the one server
# (one Python client alone needs over 40 minutes here; four take about 20).
AUTOBAHN_DEFLATE = "12.1.*,12.2.*,12.3.*" "12.4.*,12.5.*,13.1.*" "13.2.*,13.3.*,13.4.*" "13.5.*,13.6.*,13.7.*"
autobahn: build
	@$(BIN) serve --echo --max-message 16777216 --listen 127.0.0.1:9001 --admin "" & pid=$$!; \
		sleep 0.5; bash ../shared/autobahn/run.sh ws://127.0.0.1:9001/ws "1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*"; \
		out=$$(mktemp -d); i=0; pids=; \
		for c in $(AUTOBAHN_DEFLATE); do i=$$((i+1)); \
			AUTOBAHN_TIMEOUT=$${AUTOBAHN_TIMEOUT:-3600} bash ../shared/autobahn/run.sh ws://127.0.0.1:9001/ws "$$c" >$$out/$$i.log 2>&1 & pids="$$pids $$!"; \
		done; wait $$pids; cat $$out/*.log; rm -rf $$out; \
		kill $$pid

clean:
	rm -rf bin

# Side-by-side matrix of wsedge against the peer servers in bench/peers (one
# server at a time; takes several minutes). Writes bench/peers/results/table.md.
.PHONY: bench-peers
bench-peers:
	bench/peers/run.sh

# Cluster figures (BENCHMARKS.md, issue 10): cross-node delivery beside
# single-node, 4-node throughput, and fault recovery times, each against
# its own redis-server. Several minutes; keep the machine otherwise quiet.
.PHONY: cluster-figures
cluster-figures:
	bench/cluster.sh
	WSEDGE_FIGURES=1 $(GO) test -count=1 -v -run TestClusterFaultFigures ./cmd/wsedge/ | grep FIGURE

# One million connections as a cluster (issue 16): its own redis-server,
# NODES=53 nodes, CONNS=1000000 tokened connections, HOLD=5m with everyone
# broadcasts, then a drain of every node. Checks the sysctls first and says
# what is short (APPLY_SYSCTL=1 raises them, restored on exit). Needs a
# quiet machine; small-scale check: make million NODES=3 CONNS=30000 HOLD=60s
.PHONY: million
million:
	bench/million.sh
