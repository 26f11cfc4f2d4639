// Package metrics owns wsedge's VictoriaMetrics set and the admin HTTP
// server: /metrics (Prometheus text), /healthz and /readyz. ops.go adds
// the metrics that explain the counters (close codes, latency histograms,
// per-loop and broker gauges); host.go reads the kernel's side of the
// connections (/proc/net/sockstat, /proc/meminfo, open fds) at scrape
// time. docs/METRICS.md lists every metric.
//
// A Metrics value is created once at startup and its counters are cached as
// pointers by the engine; counters and histograms are safe for concurrent
// use from any goroutine, and gauge callbacks run on the admin goroutine.
// The admin server runs its own net/http goroutines, which are few and
// independent of the number of WebSocket connections.
package metrics
