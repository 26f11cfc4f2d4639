package metrics

import (
	"strings"
	"sync/atomic"
	"testing"
)

// TestMetadata: /metrics declares every wsedge_ family once, with
// # HELP and # TYPE lines before its first sample, as Prometheus-format
// parsers expect.
func TestMetadata(t *testing.T) {
	m := New()
	var ready atomic.Bool
	a, err := StartAdmin("127.0.0.1:0", m, ready.Load, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(t.Context())
	m.Accepted.Inc()
	m.Rejected(RejectOrigin).Inc()
	m.Limited(LimitSubs).Inc()
	m.AddOpen(2)
	code, body := get(t, "http://"+a.Addr()+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	help := map[string]int{}
	typ := map[string]string{}
	typeCount := map[string]int{}
	samples := map[string]int{}
	for i, line := range strings.Split(body, "\n") {
		switch {
		case strings.HasPrefix(line, "# HELP "):
			f := strings.Fields(line)
			help[f[2]]++
		case strings.HasPrefix(line, "# TYPE "):
			f := strings.Fields(line)
			if len(f) != 4 {
				t.Fatalf("line %d %q: want # TYPE name type", i+1, line)
			}
			typ[f[2]] = f[3]
			typeCount[f[2]]++
		case strings.HasPrefix(line, "wsedge_") || strings.HasPrefix(line, "process_"):
			family, _, _ := strings.Cut(line, " ")
			family, _, _ = strings.Cut(family, "{")
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(family, suffix); ok && typ[base] == "histogram" {
					family = base
				}
			}
			if help[family] == 0 || typ[family] == "" {
				t.Fatalf("line %d %q: sample before its family's # HELP and # TYPE", i+1, line)
			}
			samples[family]++
		}
	}
	for family := range samples {
		if help[family] != 1 || typeCount[family] != 1 {
			t.Errorf("%s: %d # HELP and %d # TYPE lines, want one each", family, help[family], typeCount[family])
		}
	}
	for family, want := range map[string]string{
		"wsedge_accepted_total":   "counter",
		"wsedge_handshakes_total": "counter",
		"wsedge_rejected_total":   "counter",
		"wsedge_limited_total":    "counter",
		"wsedge_overloaded_total": "counter",
		"wsedge_connections":      "gauge",

		"wsedge_closes_total":                 "counter",
		"wsedge_publish_write_seconds":        "histogram",
		"wsedge_broker_call_seconds":          "histogram",
		"wsedge_broker_errors_total":          "counter",
		"wsedge_kernel_tcp_sockets":           "gauge",
		"wsedge_kernel_slab_bytes":            "gauge",
		"wsedge_kernel_bytes_per_connection":  "gauge",
		"wsedge_process_bytes_per_connection": "gauge",
		"process_open_fds":                    "gauge",
		"process_max_fds":                     "gauge",
	} {
		if typ[family] != want {
			t.Errorf("%s: # TYPE %q, want %q", family, typ[family], want)
		}
	}
	if want := `wsedge_rejected_total{reason="origin"} 1`; !strings.Contains(body, want) {
		t.Errorf("/metrics lacks %q", want)
	}
}
