// Package metrics owns wsedge's VictoriaMetrics set and the admin HTTP
// server: /metrics (Prometheus text), /healthz and /readyz.
//
// A Metrics value is created once at startup and its counters are cached as
// pointers by the engine; counters are safe for concurrent use from any
// goroutine. The admin server runs its own net/http goroutines, which are few
// and independent of the number of WebSocket connections.
package metrics
