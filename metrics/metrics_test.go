package metrics

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAdmin(t *testing.T) {
	m := New()
	var ready atomic.Bool
	ready.Store(true)
	a, err := StartAdmin("127.0.0.1:0", m, ready.Load, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(t.Context())
	base := "http://" + a.Addr()
	m.AddOpen(3)
	m.MessagesIn.Add(7)
	tests := []struct {
		name string
		path string
		code int
		body string
	}{
		{name: "health", path: "/healthz", code: 200, body: "ok"},
		{name: "ready", path: "/readyz", code: 200, body: "ready"},
		{name: "gauge", path: "/metrics", code: 200, body: "wsedge_connections 3"},
		{name: "counter", path: "/metrics", code: 200, body: `wsedge_messages_total{dir="in"} 7`},
		{name: "process metrics", path: "/metrics", code: 200, body: "process_resident_memory_bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(t, base+tc.path)
			if code != tc.code || !strings.Contains(body, tc.body) {
				t.Fatalf("%s: %d %q, want %d containing %q", tc.path, code, body, tc.code, tc.body)
			}
		})
	}
	ready.Store(false)
	if code, _ := get(t, base+"/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz %d when not ready, want 503", code)
	}
}
