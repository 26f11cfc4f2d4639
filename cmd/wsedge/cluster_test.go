package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsedge/wsedge/broker/redistest"
)

// TestClusterTwoNodes runs two wsedge processes joined by their own
// redis-server: a publication on one node reaches a subscriber on the
// other, and a client that reconnects to the other node recovers what it
// missed from the shared history. Killing Redis turns /readyz 503 and
// publishes into errors while local connections stay up; after a restart
// the nodes are ready again.
func TestClusterTwoNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server and two nodes")
	}
	rs := redistest.Start(t)
	a := startServe(t, "", "--broker", rs.URL(), "--command-rate", "0")
	b := startServe(t, "", "--broker", rs.URL(), "--command-rate", "0")
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
	call := func(ws *websocket.Conn, cmd string) map[string]any {
		t.Helper()
		if err := ws.WriteMessage(websocket.TextMessage, []byte(cmd)); err != nil {
			t.Fatal(err)
		}
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				t.Fatalf("%s: %v", cmd, err)
			}
			var m map[string]any
			if json.Unmarshal(msg, &m) != nil {
				t.Fatalf("bad JSON %s", msg)
			}
			if m["id"] != nil {
				return m
			}
		}
	}
	sub := dial(a)
	r := call(sub, `{"id":1,"op":"subscribe","channel":"chat:x"}`)
	res, _ := r["result"].(map[string]any)
	if res == nil {
		t.Fatalf("subscribe: %v", r)
	}
	epoch := res["epoch"].(string)
	pub := dial(b)
	for i := 1; i <= 3; i++ {
		if r := call(pub, `{"id":`+string(rune('0'+i))+`,"op":"publish","channel":"chat:x","data":`+string(rune('0'+i))+`}`); r["ok"] != true {
			t.Fatalf("publish on node b: %v", r)
		}
	}
	for i := 1; i <= 3; {
		_, msg, err := sub.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		_ = json.Unmarshal(msg, &m)
		if m["join"] != nil || m["leave"] != nil {
			continue // presence events of the chat namespace
		}
		if m["channel"] != "chat:x" || m["offset"] != float64(i) {
			t.Fatalf("push %d on node a: %s", i, msg)
		}
		i++
	}
	// The subscriber moves to node b, missing two publications.
	sub.Close()
	call(pub, `{"id":8,"op":"publish","channel":"chat:x","data":4}`)
	call(pub, `{"id":9,"op":"publish","channel":"chat:x","data":5}`)
	moved := dial(b)
	r = call(moved, `{"id":1,"op":"subscribe","channel":"chat:x","since":{"offset":3,"epoch":"`+epoch+`"}}`)
	res, _ = r["result"].(map[string]any)
	if res == nil || res["recovered"] != true || len(res["publications"].([]any)) != 2 {
		t.Fatalf("recovery on node b: %v", r)
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
	// Ready once each node's canary has come back through Redis.
	deadline := time.Now().Add(10 * time.Second)
	for ready(a) != 200 || ready(b) != 200 {
		if time.Now().After(deadline) {
			t.Fatalf("readyz %d %d before the outage", ready(a), ready(b))
		}
		time.Sleep(50 * time.Millisecond) // polling a readiness endpoint
	}
	rs.Kill()
	deadline = time.Now().Add(15 * time.Second)
	for ready(a) != http.StatusServiceUnavailable {
		if time.Now().After(deadline) {
			t.Fatal("node a still ready 15 s after Redis died")
		}
		time.Sleep(50 * time.Millisecond) // polling a readiness endpoint
	}
	if r := call(moved, `{"id":2,"op":"publish","channel":"chat:x","data":6}`); r["error"] == nil {
		t.Fatalf("publish with Redis down: %v, want an error", r)
	}
	if r := call(moved, `{"id":3,"op":"ping"}`); r["ok"] != true {
		t.Fatalf("local command with Redis down: %v", r)
	}
	rs.Restart()
	deadline = time.Now().Add(15 * time.Second)
	for ready(a) != 200 || ready(b) != 200 {
		if time.Now().After(deadline) {
			t.Fatal("nodes not ready 15 s after Redis came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := call(moved, `{"id":4,"op":"publish","channel":"chat:x","data":7}`); r["ok"] != true && !strings.Contains(r["error"].(map[string]any)["message"].(string), "unavailable") {
		t.Fatalf("publish after the restart: %v", r)
	}
}
