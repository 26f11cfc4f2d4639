package engine

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// pclient is a wsedge.v1.json test client: a gorilla connection plus a
// reader goroutine that sorts replies by id and collects pushes.
type pclient struct {
	t      testing.TB
	ws     *websocket.Conn
	mu     sync.Mutex
	nextID uint64
	reply  map[uint64]map[string]any
	pushes []map[string]any
	closed error
}

func dialProto(t testing.TB, addr string) *pclient {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{Subprotocol}}
	ws, resp, err := d.Dial("ws://"+addr+"/ws", nil)
	if err != nil {
		t.Fatalf("dial: %v %v", err, resp)
	}
	if ws.Subprotocol() != Subprotocol {
		t.Fatalf("subprotocol %q", ws.Subprotocol())
	}
	c := &pclient{t: t, ws: ws, reply: map[uint64]map[string]any{}}
	go c.read()
	t.Cleanup(func() { ws.Close() })
	return c
}

func (c *pclient) read() {
	for {
		_, b, err := c.ws.ReadMessage()
		c.mu.Lock()
		if err != nil {
			c.closed = err
			c.mu.Unlock()
			return
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			c.closed = fmt.Errorf("server sent invalid JSON %q: %v", b, err)
			c.mu.Unlock()
			return
		}
		if id, ok := m["id"].(float64); ok {
			c.reply[uint64(id)] = m
		} else {
			c.pushes = append(c.pushes, m)
		}
		c.mu.Unlock()
	}
}

// call sends a command (without its id) and waits for its reply.
func (c *pclient) call(cmd string) map[string]any {
	c.t.Helper()
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	c.mu.Unlock()
	msg := fmt.Sprintf(`{"id":%d,%s`, id, strings.TrimPrefix(cmd, "{"))
	if err := c.ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		c.t.Fatal(err)
	}
	var r map[string]any
	checkFor(c.t, 5*time.Second, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if r = c.reply[id]; r == nil {
			if c.closed != nil {
				return fmt.Errorf("connection closed waiting for reply %d: %v", id, c.closed)
			}
			return fmt.Errorf("no reply to %s", msg)
		}
		return nil
	})
	return r
}

// ok calls and fails the test on an error reply; it returns the result.
func (c *pclient) ok(cmd string) map[string]any {
	c.t.Helper()
	r := c.call(cmd)
	if r["ok"] != true {
		c.t.Fatalf("%s: %v", cmd, r)
	}
	res, _ := r["result"].(map[string]any)
	return res
}

// errCode calls and returns the error code of the reply (0 if ok).
func (c *pclient) errCode(cmd string) int {
	c.t.Helper()
	r := c.call(cmd)
	e, _ := r["error"].(map[string]any)
	if e == nil {
		return 0
	}
	return int(e["code"].(float64))
}

// waitPushes waits until n pushes matched by keep arrived and returns them.
func (c *pclient) waitPushes(n int, keep func(map[string]any) bool) []map[string]any {
	c.t.Helper()
	var got []map[string]any
	checkFor(c.t, 10*time.Second, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		got = got[:0]
		for _, p := range c.pushes {
			if keep(p) {
				got = append(got, p)
			}
		}
		if len(got) < n {
			return fmt.Errorf("%d of %d pushes (closed: %v)", len(got), n, c.closed)
		}
		return nil
	})
	return got
}

func onChannel(ch string) func(map[string]any) bool {
	return func(p map[string]any) bool { return p["channel"] == ch }
}

// protoServer starts a protocol server. The per-connection command rate is
// off unless mutate sets it: several tests publish thousands of commands a
// second from one connection (TestCommandRate covers the limit).
func protoServer(t testing.TB, mutate func(*Config)) *Server {
	return startServer(t, func(c *Config) {
		c.Echo = false
		c.CommandRate = 0
		if mutate != nil {
			mutate(c)
		}
	})
}

func TestSubscribePublish(t *testing.T) {
	s := protoServer(t, nil)
	sub := dialProto(t, s.Addr())
	pub := dialProto(t, s.Addr())
	res := sub.ok(`{"op":"subscribe","channel":"chat:room1"}`)
	if res["offset"] != float64(0) || res["epoch"] == "" {
		t.Fatalf("subscribe result %v, want offset 0 and an epoch", res)
	}
	for i := 1; i <= 3; i++ {
		res := pub.ok(fmt.Sprintf(`{"op":"publish","channel":"chat:room1","data":{"n":%d}}`, i))
		if res["offset"] != float64(i) {
			t.Fatalf("publish %d: result %v", i, res)
		}
	}
	got := sub.waitPushes(3, onChannel("chat:room1"))
	for i, p := range got {
		if p["offset"] != float64(i+1) || p["data"].(map[string]any)["n"] != float64(i+1) {
			t.Fatalf("push %d: %v", i, p)
		}
	}
	sub.ok(`{"op":"unsubscribe","channel":"chat:room1"}`)
	pub.ok(`{"op":"publish","channel":"chat:room1","data":"after"}`)
	sub.ok(`{"op":"ping"}`) // a round trip after the publish
	if n := len(sub.waitPushes(0, onChannel("chat:room1"))); n != 3 {
		t.Fatalf("%d pushes after unsubscribe, want 3", n)
	}
}

func TestCommandErrors(t *testing.T) {
	s := protoServer(t, nil)
	c := dialProto(t, s.Addr())
	tests := []struct {
		name string
		cmd  string
		code int
	}{
		{name: "unknown op", cmd: `{"op":"dance"}`, code: 400},
		{name: "missing channel", cmd: `{"op":"subscribe"}`, code: 400},
		{name: "bad channel", cmd: `{"op":"subscribe","channel":"no-namespace"}`, code: 400},
		{name: "unknown namespace", cmd: `{"op":"subscribe","channel":"nope:x"}`, code: 404},
		{name: "publish not allowed", cmd: `{"op":"publish","channel":"user:42","data":1}`, code: 403},
		{name: "presence disabled", cmd: `{"op":"presence","channel":"bench:x"}`, code: 403},
		{name: "not subscribed", cmd: `{"op":"unsubscribe","channel":"chat:x"}`, code: 409},
		{name: "history limit over max", cmd: `{"op":"history","channel":"chat:x","limit":100000}`, code: 413},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c.t = t
			if got := c.errCode(tc.cmd); got != tc.code {
				t.Fatalf("code %d, want %d", got, tc.code)
			}
		})
	}
	c.t = t
	c.ok(`{"op":"subscribe","channel":"chat:x"}`)
	if got := c.errCode(`{"op":"subscribe","channel":"chat:x"}`); got != 409 {
		t.Fatalf("second subscribe: %d, want 409", got)
	}
	// Bad JSON: the reply has id 0 and the connection stays.
	if err := c.ws.WriteMessage(websocket.TextMessage, []byte(`{"id":`)); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.reply[0] == nil {
			return fmt.Errorf("no reply to bad JSON")
		}
		return nil
	})
	c.ok(`{"op":"ping"}`)
}

func TestNoSubprotocolRefused(t *testing.T) {
	s := protoServer(t, nil)
	_, resp, err := websocket.DefaultDialer.Dial("ws://"+s.Addr()+"/ws", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("dial without subprotocol: %v %v, want 400", err, resp)
	}
}

func TestRecovery(t *testing.T) {
	s := protoServer(t, nil)
	a := dialProto(t, s.Addr())
	pub := dialProto(t, s.Addr())
	pos := a.ok(`{"op":"subscribe","channel":"chat:r"}`)
	pub.ok(`{"op":"publish","channel":"chat:r","data":"one"}`)
	a.waitPushes(1, onChannel("chat:r"))
	a.ws.Close()
	for _, d := range []string{"two", "three", "four"} {
		pub.ok(`{"op":"publish","channel":"chat:r","data":"` + d + `"}`)
	}
	b := dialProto(t, s.Addr())
	epoch := pos["epoch"].(string)
	res := b.ok(`{"op":"subscribe","channel":"chat:r","since":{"offset":1,"epoch":"` + epoch + `"}}`)
	pubs, _ := res["publications"].([]any)
	if res["recovered"] != true || len(pubs) != 3 || res["offset"] != float64(4) {
		t.Fatalf("recovery result %v, want 3 publications recovered", res)
	}
	for i, p := range pubs {
		if p.(map[string]any)["offset"] != float64(i+2) {
			t.Fatalf("recovered publication %d: %v", i, p)
		}
	}
	// Live publications follow without duplicates.
	pub.ok(`{"op":"publish","channel":"chat:r","data":"five"}`)
	got := b.waitPushes(1, onChannel("chat:r"))
	if len(got) != 1 || got[0]["offset"] != float64(5) {
		t.Fatalf("pushes after recovery %v, want only offset 5", got)
	}
	c := dialProto(t, s.Addr())
	res = c.ok(`{"op":"subscribe","channel":"chat:r","since":{"offset":1,"epoch":"other"}}`)
	if res["recovered"] != false {
		t.Fatalf("wrong epoch: %v, want recovered false", res)
	}
	hist := c.ok(`{"op":"history","channel":"chat:r","limit":2}`)
	if hp, _ := hist["publications"].([]any); len(hp) != 2 || hp[1].(map[string]any)["data"] != "five" {
		t.Fatalf("history %v", hist)
	}
}

func TestPresenceJoinLeave(t *testing.T) {
	s := protoServer(t, nil)
	a := dialProto(t, s.Addr())
	b := dialProto(t, s.Addr())
	a.ok(`{"op":"subscribe","channel":"chat:p"}`)
	b.ok(`{"op":"subscribe","channel":"chat:p"}`)
	a.waitPushes(1, func(p map[string]any) bool {
		return p["join"] != nil && p["join"].(map[string]any)["channel"] == "chat:p"
	})
	st := a.ok(`{"op":"presence_stats","channel":"chat:p"}`)
	if st["clients"] != float64(2) {
		t.Fatalf("presence_stats %v, want 2 clients", st)
	}
	members := a.ok(`{"op":"presence","channel":"chat:p"}`)
	if cl, _ := members["clients"].([]any); len(cl) != 2 {
		t.Fatalf("presence %v", members)
	}
	b.ws.Close()
	checkFor(t, 5*time.Second, func() error {
		st := a.ok(`{"op":"presence_stats","channel":"chat:p"}`)
		if st["clients"] != float64(1) {
			return fmt.Errorf("presence_stats %v after a disconnect, want 1 client", st)
		}
		return nil
	})
	a.waitPushes(1, func(p map[string]any) bool { return p["leave"] != nil })
}

// TestFanOutOrder has subscribers on every loop receive every publication
// of several concurrent publishers, per channel in offset order without gaps.
func TestFanOutOrder(t *testing.T) {
	s := protoServer(t, func(c *Config) { c.Loops = 2 })
	const subs, pubs, n = 20, 3, 200
	var clients []*pclient
	for range subs {
		c := dialProto(t, s.Addr())
		for p := range pubs {
			c.ok(fmt.Sprintf(`{"op":"subscribe","channel":"bench:o%d"}`, p))
		}
		clients = append(clients, c)
	}
	var wg sync.WaitGroup
	for p := range pubs {
		pc := dialProto(t, s.Addr())
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				msg := fmt.Sprintf(`{"id":%d,"op":"publish","channel":"bench:o%d","data":%d}`, i+1, p, i)
				if err := pc.ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for ci, c := range clients {
		for p := range pubs {
			got := c.waitPushes(n, onChannel(fmt.Sprintf("bench:o%d", p)))
			if len(got) != n {
				t.Fatalf("client %d channel %d: %d pushes, want %d", ci, p, len(got), n)
			}
			for i, m := range got {
				if m["offset"] != float64(i+1) {
					t.Fatalf("client %d channel %d: push %d has offset %v", ci, p, i, m["offset"])
				}
			}
		}
	}
}

// TestAppPing: protocol clients that stay silent get an application-level
// ping push with each WebSocket ping, for browsers that cannot see pings.
func TestAppPing(t *testing.T) {
	s := protoServer(t, func(c *Config) {
		c.PingInterval = time.Second
		c.IdleTimeout = 3 * time.Second
	})
	c := dialProto(t, s.Addr())
	c.ws.SetPingHandler(func(string) error { return nil }) // hear pings, answer nothing
	got := c.waitPushes(1, func(p map[string]any) bool { return p["ping"] != nil })
	if len(got) == 0 {
		t.Fatal("no ping push")
	}
}

// TestPresenceMassDisconnect: presence stays exact when many subscribers
// leave at once.
func TestPresenceMassDisconnect(t *testing.T) {
	s := protoServer(t, nil)
	const n, gone = 120, 90
	var clients []*pclient
	for range n {
		c := dialProto(t, s.Addr())
		c.ok(`{"op":"subscribe","channel":"chat:mass"}`)
		clients = append(clients, c)
	}
	if st := clients[0].ok(`{"op":"presence_stats","channel":"chat:mass"}`); st["clients"] != float64(n) {
		t.Fatalf("presence_stats %v, want %d clients", st, n)
	}
	for _, c := range clients[n-gone:] {
		c.ws.Close()
	}
	checkFor(t, 10*time.Second, func() error {
		st := clients[0].ok(`{"op":"presence_stats","channel":"chat:mass"}`)
		if st["clients"] != float64(n-gone) {
			return fmt.Errorf("presence_stats %v after %d disconnects, want %d clients", st, gone, n-gone)
		}
		return nil
	})
	members := clients[0].ok(`{"op":"presence","channel":"chat:mass"}`)
	if cl, _ := members["clients"].([]any); len(cl) != n-gone {
		t.Fatalf("presence lists %d clients, want %d", len(cl), n-gone)
	}
}

// TestFlushInterval: with a flush interval, publications wait for the
// loop's next write round (or tick) and still all arrive, in order.
func TestFlushInterval(t *testing.T) {
	s := protoServer(t, func(c *Config) { c.FlushInterval = 200 * time.Millisecond })
	sub := dialProto(t, s.Addr())
	pub := dialProto(t, s.Addr())
	sub.ok(`{"op":"subscribe","channel":"bench:fi"}`)
	for i := range 50 {
		pub.send(fmt.Sprintf(`{"id":%d,"op":"publish","channel":"bench:fi","data":%d}`, 100+i, i))
	}
	got := sub.waitPushes(50, onChannel("bench:fi"))
	for i, p := range got {
		if p["data"] != float64(i) {
			t.Fatalf("push %d carries %v", i, p["data"])
		}
	}
}
