package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsedge/wsedge/broker/redistest"
)

// TestSentinelFailoverTwoNodes runs two wsedge processes on
// --broker redis+sentinel://: when the master is SIGKILLed, /readyz turns
// 503, Sentinel promotes the replica, both nodes turn ready again on
// their own, and a subscriber on one node gets the next publication made
// on the other, announced by a reset push (the stream starts a new epoch
// on the promoted replica, which may lack the old master's last
// publications).
func TestSentinelFailoverTwoNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a master, a replica, a Sentinel and two nodes")
	}
	h := redistest.StartSentinel(t)
	a := startServe(t, "", "--broker", h.URL(), "--command-rate", "0")
	b := startServe(t, "", "--broker", h.URL(), "--command-rate", "0")
	dial := func(p *proc) *websocket.Conn {
		t.Helper()
		d := websocket.Dialer{Subprotocols: []string{"wsedge.v1.json"}, HandshakeTimeout: 5 * time.Second}
		ws, _, err := d.Dial("ws://"+p.ws+"/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ws.Close() })
		_ = ws.SetReadDeadline(time.Now().Add(20 * time.Second))
		return ws
	}
	// next reads the next message that is not a presence event.
	next := func(ws *websocket.Conn) map[string]any {
		t.Helper()
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if json.Unmarshal(msg, &m) != nil {
				t.Fatalf("bad JSON %s", msg)
			}
			if m["join"] == nil && m["leave"] == nil {
				return m
			}
		}
	}
	id := 0
	call := func(ws *websocket.Conn, cmd string) map[string]any {
		t.Helper()
		id++
		if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"id":`+strconv.Itoa(id)+`,`+cmd+`}`)); err != nil {
			t.Fatal(err)
		}
		for {
			if m := next(ws); m["id"] != nil {
				return m
			}
		}
	}
	ready := func(p *proc) int {
		resp, err := http.Get("http://" + p.admin + "/readyz")
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	waitReady := func(want int, timeout time.Duration) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for ready(a) != want || ready(b) != want {
			if time.Now().After(deadline) {
				t.Fatalf("readyz %d %d, want %d within %v", ready(a), ready(b), want, timeout)
			}
			time.Sleep(50 * time.Millisecond) // polling a readiness endpoint
		}
	}

	sub, pub := dial(a), dial(b)
	r := call(sub, `"op":"subscribe","channel":"chat:f"`)
	res, _ := r["result"].(map[string]any)
	if res == nil {
		t.Fatalf("subscribe: %v", r)
	}
	epoch := res["epoch"].(string)
	if r := call(pub, `"op":"publish","channel":"chat:f","data":1`); r["ok"] != true {
		t.Fatalf("publish on node b: %v", r)
	}
	if m := next(sub); m["channel"] != "chat:f" || m["offset"] != float64(1) {
		t.Fatalf("push on node a: %v", m)
	}
	waitReady(200, 10*time.Second)

	h.Master.Kill()
	killed := time.Now()
	deadline := time.Now().Add(15 * time.Second)
	for ready(a) != http.StatusServiceUnavailable {
		if time.Now().After(deadline) {
			t.Fatal("node a still ready 15 s after the master died")
		}
		time.Sleep(50 * time.Millisecond) // polling a readiness endpoint
	}
	waitReady(200, 20*time.Second)
	if addr, err := h.MasterAddr(); err != nil || addr != h.Replica.Addr() {
		t.Fatalf("nodes ready, Sentinel names master %q (%v), want the replica %s", addr, err, h.Replica.Addr())
	}
	t.Logf("both nodes ready %v after the kill", time.Since(killed))

	r = call(pub, `"op":"publish","channel":"chat:f","data":2`)
	if r["ok"] != true {
		t.Fatalf("publish after the failover: %v", r)
	}
	m := next(sub)
	reset, _ := m["reset"].(map[string]any)
	if reset == nil || reset["channel"] != "chat:f" || reset["epoch"] == epoch || reset["offset"] != float64(0) {
		t.Fatalf("first message after the failover %v, want a reset to offset 0 of a new epoch", m)
	}
	if m := next(sub); m["channel"] != "chat:f" || m["offset"] != float64(1) || m["data"] != float64(2) {
		t.Fatalf("push after the failover: %v", m)
	}
}
