package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsedge/wsedge/broker/redistest"
)

// wsClient is a protocol client that collects everything the server sends;
// replies and pushes are read from its log by polling with a deadline.
type wsClient struct {
	t   *testing.T
	ws  *websocket.Conn
	mu  sync.Mutex
	got []map[string]any
	err error
	id  int
}

func dialNode(t *testing.T, p *proc) *wsClient {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"wsedge.v1.json"}, HandshakeTimeout: 5 * time.Second}
	ws, _, err := d.Dial("ws://"+p.ws+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &wsClient{t: t, ws: ws}
	t.Cleanup(func() { ws.Close() })
	go func() {
		for {
			_, msg, err := ws.ReadMessage()
			var m map[string]any
			if err == nil && json.Unmarshal(msg, &m) != nil {
				err = fmt.Errorf("bad JSON %s", msg)
			}
			c.mu.Lock()
			if err != nil {
				c.err = err
				c.mu.Unlock()
				return
			}
			c.got = append(c.got, m)
			c.mu.Unlock()
		}
	}()
	return c
}

// call sends cmd (a JSON object without id) and waits for its reply.
func (c *wsClient) call(cmd string) map[string]any {
	c.t.Helper()
	c.mu.Lock()
	c.id++
	id := c.id
	c.mu.Unlock()
	if err := c.ws.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"id":%d,%s`, id, cmd[1:])); err != nil {
		c.t.Fatal(err)
	}
	var r map[string]any
	c.waitFor(10*time.Second, func(m map[string]any) bool {
		if m["id"] == float64(id) {
			r = m
			return true
		}
		return false
	})
	return r
}

// waitFor polls the log until keep matches a message.
func (c *wsClient) waitFor(d time.Duration, keep func(map[string]any) bool) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		c.mu.Lock()
		for _, m := range c.got {
			if keep(m) {
				c.mu.Unlock()
				return
			}
		}
		err := c.err
		c.mu.Unlock()
		if err != nil || time.Now().After(deadline) {
			c.t.Fatalf("message not received (connection: %v)", err)
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
}

// pubs returns the publications (and reset/lagged notices) received on ch.
func (c *wsClient) pubs(ch string) []map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []map[string]any
	for _, m := range c.got {
		if m["channel"] == ch && m["id"] == nil {
			out = append(out, m)
		}
		for _, k := range []string{"reset", "lagged"} {
			if n, ok := m[k].(map[string]any); ok && n["channel"] == ch {
				out = append(out, m)
			}
		}
	}
	return out
}

func waitReady(t *testing.T, want int, d time.Duration, nodes ...*proc) {
	t.Helper()
	deadline := time.Now().Add(d)
	for _, p := range nodes {
		for readyz(p) != want {
			if time.Now().After(deadline) {
				t.Fatalf("node %s: /readyz %d, want %d", p.ws, readyz(p), want)
			}
			time.Sleep(20 * time.Millisecond) // polling a readiness endpoint
		}
	}
}

// TestClusterThreeNodes: three wsedge processes on one redis-server, two
// subscribers and a publisher on each. Publications made concurrently on
// all three nodes reach every subscriber exactly once and in offset order.
// Then Redis is killed and restarted empty: every node resubscribes within
// 5 s, and a subscriber that stayed subscribed gets a reset push with the
// new stream's epoch followed by the cross-node publications of the new
// stream (before, they were dropped as "already delivered").
func TestClusterThreeNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server and three nodes")
	}
	rs := redistest.Start(t)
	var nodes []*proc
	for range 3 {
		nodes = append(nodes, startServe(t, "", "--broker", rs.URL(), "--command-rate", "0"))
	}
	const ch = "bench:tri" // no join/leave pushes in the bench namespace
	var subs []*wsClient
	for _, p := range nodes {
		for range 2 {
			c := dialNode(t, p)
			if r := c.call(`{"op":"subscribe","channel":"` + ch + `"}`); r["ok"] != true {
				t.Fatalf("subscribe: %v", r)
			}
			subs = append(subs, c)
		}
	}
	waitReady(t, 200, 10*time.Second, nodes...)
	const perNode = 30
	var wg sync.WaitGroup
	for i, p := range nodes {
		pub := dialNode(t, p)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range perNode {
				msg := fmt.Sprintf(`{"op":"publish","channel":"%s","data":"n%d-%d"}`, ch, i, j)
				if r := pub.call(msg); r["ok"] != true {
					t.Errorf("publish on node %d: %v", i, r)
					return
				}
			}
		}()
	}
	wg.Wait()
	for k, c := range subs {
		c.waitFor(10*time.Second, func(m map[string]any) bool { return m["offset"] == float64(3*perNode) })
		got := c.pubs(ch)
		if len(got) != 3*perNode {
			t.Fatalf("subscriber %d got %d pushes, want %d exactly once", k, len(got), 3*perNode)
		}
		for i, m := range got {
			if m["offset"] != float64(i+1) {
				t.Fatalf("subscriber %d push %d: %v, want offset %d", k, i, m, i+1)
			}
		}
	}

	rs.Kill()
	waitReady(t, http.StatusServiceUnavailable, 15*time.Second, nodes...)
	rs.Restart()
	restarted := time.Now()
	waitReady(t, 200, 15*time.Second, nodes...)
	// Publish on node a until a subscriber on node c hears the new stream.
	pub := dialNode(t, nodes[0])
	last := subs[5]
	var epoch any
	deadline := restarted.Add(5 * time.Second)
	for {
		r := pub.call(`{"op":"publish","channel":"` + ch + `","data":"after"}`)
		if res, ok := r["result"].(map[string]any); ok {
			epoch = res["epoch"]
			if n := len(last.pubs(ch)); n > 3*perNode {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no cross-node delivery within 5 s of the Redis restart (last reply %v)", r)
		}
		time.Sleep(20 * time.Millisecond) // publishing pace
	}
	t.Logf("first cross-node delivery %v after the Redis restart", time.Since(restarted).Round(time.Millisecond))
	for k, c := range subs {
		c.waitFor(5*time.Second, func(m map[string]any) bool { return m["data"] == "after" })
		got := c.pubs(ch)[3*perNode:]
		r, _ := got[0]["reset"].(map[string]any)
		if r == nil || r["epoch"] != epoch {
			t.Fatalf("subscriber %d: first push after the restart %v, want a reset to epoch %v", k, got[0], epoch)
		}
		next := r["offset"].(float64) + 1
		for _, m := range got[1:] {
			if m["offset"] != next || m["data"] != "after" {
				t.Fatalf("subscriber %d: %v after reset %v, want offset %v", k, m, r, next)
			}
			next++
		}
	}
}
