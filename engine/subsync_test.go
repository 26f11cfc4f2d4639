package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsedge/wsedge/broker"
	"github.com/wsedge/wsedge/frame"
)

// slowUnsubBroker delays Unsubscribe, widening the window in which another
// loop's Subscribe for the same channel can overtake it. With gate set,
// each Unsubscribe blocks until the gate is opened.
type slowUnsubBroker struct {
	broker.Broker
	delay   time.Duration
	gate    chan struct{}
	entered chan string
	subs    atomic.Int64 // Subscribe calls
	unsubs  atomic.Int64
}

func (b *slowUnsubBroker) Subscribe(ctx context.Context, ch string) error {
	b.subs.Add(1)
	return b.Broker.Subscribe(ctx, ch)
}

func (b *slowUnsubBroker) Unsubscribe(ctx context.Context, ch string) error {
	b.unsubs.Add(1)
	if b.entered != nil {
		b.entered <- ch
	}
	if b.gate != nil {
		<-b.gate
	}
	if b.delay > 0 {
		time.Sleep(b.delay) // a slow broker, not test synchronisation
	}
	return b.Broker.Unsubscribe(ctx, ch)
}

// TestBrokerSubsLateUnsubscribe is the lost-subscription race, made to
// happen on every run through real loops: the last subscriber on loop A
// leaves and A's broker Unsubscribe stalls; meanwhile a client on loop B
// subscribes. Before the fix B's Subscribe went through at once and A's
// late Unsubscribe then cancelled it: B got "ok" and never a publication.
func TestBrokerSubsLateUnsubscribe(t *testing.T) {
	var slow *slowUnsubBroker
	s := startServerHook(t, func(c *Config) {
		c.Echo = false
		c.Loops = 2
	}, func(s *Server) {
		slow = &slowUnsubBroker{Broker: s.broker, gate: make(chan struct{}), entered: make(chan string, 1)}
		s.broker = slow
	})
	a, b := clientsOnTwoLoops(t, s)
	const ch = "bench:race"
	a.send(masked(true, frame.OpText, []byte(`{"id":1,"op":"subscribe","channel":"bench:race"}`)))
	if _, _, p, err := a.readFrame(); err != nil || !containsOK(p) {
		t.Fatalf("subscribe on A: %s %v", p, err)
	}
	a.send(masked(true, frame.OpText, []byte(`{"id":2,"op":"unsubscribe","channel":"bench:race"}`)))
	<-slow.entered // A's loop is inside the broker's Unsubscribe
	b.send(masked(true, frame.OpText, []byte(`{"id":1,"op":"subscribe","channel":"bench:race"}`)))
	// Give B's Subscribe the chance to overtake; with the fix it waits
	// for A's reconcile instead, and no reply comes yet.
	replied := make(chan []byte, 1)
	go func() {
		_ = b.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _, p, _ := b.readFrame()
		replied <- p
	}()
	var reply []byte
	select {
	case reply = <-replied:
	case <-time.After(50 * time.Millisecond):
	}
	close(slow.gate)
	if reply == nil {
		reply = <-replied
	}
	if !containsOK(reply) {
		t.Fatalf("subscribe on B: %s", reply)
	}
	if _, _, p, err := a.readFrame(); err != nil || !containsOK(p) {
		t.Fatalf("unsubscribe on A: %s %v", p, err)
	}
	pub := dialProto(t, s.Addr())
	pub.ok(`{"op":"publish","channel":"bench:race","data":"after"}`)
	_ = b.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, p, err := b.readFrame()
	if err != nil || !strings.Contains(string(p), `"after"`) {
		t.Fatalf("B is subscribed but got no publication (%s, %v); node subscribed: %v", p, err, s.brokerSubscribed(ch))
	}
}

// clientsOnTwoLoops connects protocol clients until one sits on loop 0 and
// one on loop 1.
func clientsOnTwoLoops(t *testing.T, s *Server) (a, b *rawClient) {
	t.Helper()
	var clients [2]*rawClient
	for tries := 0; clients[0] == nil || clients[1] == nil; tries++ {
		if tries > 200 {
			t.Fatal("could not place a client on each loop")
		}
		c := protoRaw(t, s.Addr())
		if i := loopOf(s, c.nc.LocalAddr()); i >= 0 && clients[i] == nil {
			clients[i] = c
		} else {
			c.nc.Close()
		}
	}
	return clients[0], clients[1]
}

// loopOf reports the index of the loop that serves the client connection
// whose local address is addr, or -1.
func loopOf(s *Server, addr net.Addr) int {
	for _, l := range *s.list.Load() {
		found := make(chan bool, 1)
		_ = l.el.Execute(context.Background(), runnable(func() {
			ok := false
			l.wheel.each(func(c *conn) {
				if c.gc.RemoteAddr().String() == addr.String() {
					ok = true
				}
			})
			found <- ok
		}))
		if <-found {
			return l.idx
		}
	}
	return -1
}

// protoRaw upgrades a raw client with the protocol's subprotocol.
func protoRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	c := dialRaw(t, addr)
	c.send([]byte(upgradeRequest("/ws", "Sec-WebSocket-Protocol: "+Subprotocol)))
	if resp := c.readResponse(); resp.StatusCode != 101 {
		t.Fatalf("upgrade status %d", resp.StatusCode)
	}
	return c
}

// TestSubscribeChurnAcrossLoops churns subscribe/unsubscribe of one
// channel on two loops 100,000 times in all, with a broker whose
// Unsubscribe is slow, then checks that a publication reaches every
// connection subscribed at the end.
func TestSubscribeChurnAcrossLoops(t *testing.T) {
	var slow *slowUnsubBroker
	s := startServerHook(t, func(c *Config) {
		c.Echo = false
		c.Loops = 2
		c.CommandRate = 0
	}, func(s *Server) {
		slow = &slowUnsubBroker{Broker: s.broker, delay: 20 * time.Microsecond}
		s.broker = slow
	})
	a, b := clientsOnTwoLoops(t, s)
	clients := [2]*rawClient{a, b}
	const ch = "bench:churn"
	total := 100_000
	if raceEnabled {
		total = 20_000 // the detector makes each command ~10× slower
	}
	const batch = 250
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.nc.SetDeadline(time.Now().Add(2 * time.Minute))
			var buf []byte
			for done := 0; done < total/2; done += batch {
				buf = buf[:0]
				for i := range batch {
					op := "subscribe"
					if i%2 == 1 {
						op = "unsubscribe"
					}
					buf = frame.AppendClientFrame(buf, true, frame.OpText,
						fmt.Appendf(nil, `{"id":%d,"op":%q,"channel":%q}`, done+i+1, op, ch), [4]byte{9, 8, 7, 6})
				}
				if _, err := c.nc.Write(buf); err != nil {
					errs <- err
					return
				}
				for range batch {
					_, _, p, err := c.readFrame()
					if err != nil {
						errs <- err
						return
					}
					if !json.Valid(p) || !containsOK(p) {
						errs <- fmt.Errorf("reply %s", p)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if slow.unsubs.Load() == 0 {
		t.Fatal("the churn never took the node off the broker: the test did not exercise the race")
	}
	// Both end subscribed.
	for i, c := range clients {
		c.send(masked(true, frame.OpText, fmt.Appendf(nil, `{"id":%d,"op":"subscribe","channel":%q}`, 1<<40+i, ch)))
		if _, _, p, err := c.readFrame(); err != nil || !containsOK(p) {
			t.Fatalf("final subscribe: %s %v", p, err)
		}
	}
	pub := dialProto(t, s.Addr())
	pub.ok(`{"op":"publish","channel":"bench:churn","data":"final"}`)
	for i, c := range clients {
		_ = c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _, p, err := c.readFrame()
		if err != nil {
			t.Fatalf("client on loop %d got no publication: %v (subscribe/unsubscribe calls to the broker: %d/%d)",
				i, err, slow.subs.Load(), slow.unsubs.Load())
		}
		var m map[string]any
		if json.Unmarshal(p, &m) != nil || m["data"] != "final" {
			t.Fatalf("client on loop %d: %s", i, p)
		}
	}
	t.Logf("%d commands; broker saw %d subscribes and %d unsubscribes", total, slow.subs.Load(), slow.unsubs.Load())
}

func containsOK(p []byte) bool {
	var m map[string]any
	return json.Unmarshal(p, &m) == nil && m["ok"] == true
}
