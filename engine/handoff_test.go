package engine

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/wsedge/wsedge/broker"
	"github.com/wsedge/wsedge/broker/redistest"
	"github.com/wsedge/wsedge/frame"
	"github.com/wsedge/wsedge/handoff"
)

// handoffPair starts an old server serving a handoff socket and returns it
// with a function that starts the new server taking over; the new one's
// Takeover.Run result arrives on the returned channel.
type takeResult struct {
	n   int
	err error
}

func startOld(t *testing.T, mutate func(*Config)) (*Server, string, chan struct{}) {
	t.Helper()
	old := startServer(t, mutate)
	path := filepath.Join(t.TempDir(), "handoff.sock")
	done := make(chan struct{})
	ln, err := old.ServeHandoff(path, func() { close(done) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return old, path, done
}

func startNew(t *testing.T, old *Server, path string, mutate func(*Config)) (*Server, chan takeResult) {
	t.Helper()
	res := make(chan takeResult, 1)
	var tk *Takeover
	s := startServerHook(t, func(c *Config) {
		if mutate != nil {
			mutate(c)
		}
		c.Listen = old.Addr()
	}, func(s *Server) {
		var err error
		if tk, err = s.DialTakeover(path); err != nil {
			t.Fatal(err)
		}
	})
	go func() {
		n, err := tk.Run()
		res <- takeResult{n, err}
	}()
	return s, res
}

func waitTake(t *testing.T, res chan takeResult) takeResult {
	t.Helper()
	select {
	case r := <-res:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("takeover did not end")
	}
	return takeResult{}
}

// TestHandoffEcho hands 5,000 echo connections over, some in the middle of a
// fragmented message and of a frame: each client then finishes its
// message and gets it back whole from the new process, and sees nothing
// else (no close, no ping).
func TestHandoffEcho(t *testing.T) {
	old, path, done := startOld(t, nil)
	n := 5000 // the count; the test process holds both ends and both servers
	if raceEnabled {
		n = 300
	}
	msg := bytes.Repeat([]byte("0123456789"), 20)
	clients := make([]*rawClient, n)
	var rest [][]byte
	for i := range clients {
		c := handshake(t, old.Addr())
		clients[i] = c
		var wire []byte
		switch i % 3 {
		case 0: // whole messages only
		case 1: // a fragmented message half received
			wire = append(masked(false, frame.OpText, msg[:50]), masked(true, frame.OpContinuation, msg[50:])...)
		case 2: // one frame cut in its payload
			wire = masked(true, frame.OpBinary, msg)
		}
		cut := len(wire) * 2 / 3
		c.send(wire[:cut])
		rest = append(rest, wire[cut:])
	}
	// Every cut message is in the server before the handoff starts.
	checkFor(t, 5*time.Second, func() error {
		old.metricsFlushed()
		if got := old.m.BytesIn.Get(); got < uint64(n/3*2*len(msg)*2/3) {
			return fmt.Errorf("%d bytes in", got)
		}
		return nil
	})
	neu, res := startNew(t, old, path, nil)
	r := waitTake(t, res)
	if r.err != nil || r.n != n {
		t.Fatalf("took %d of %d: %v", r.n, n, r.err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the old process did not finish")
	}
	if old.m.Open() != 0 || neu.m.Open() != int64(n) {
		t.Fatalf("open: old %d new %d", old.m.Open(), neu.m.Open())
	}
	for i, c := range clients {
		c.send(rest[i])
		switch i % 3 {
		case 1:
			c.expectFrame(frame.OpText, string(msg))
		case 2:
			c.expectFrame(frame.OpBinary, string(msg))
		}
		c.send(masked(true, frame.OpText, []byte(fmt.Sprint("after ", i))))
		c.expectFrame(frame.OpText, fmt.Sprint("after ", i))
	}
	// New connections reach the new process only.
	c := handshake(t, old.Addr())
	c.send(masked(true, frame.OpText, []byte("new")))
	c.expectFrame(frame.OpText, "new")
	if neu.m.Open() != int64(n+1) {
		t.Fatalf("new process holds %d", neu.m.Open())
	}
	_ = runtime.NumGoroutine
}

// handoffProto is the protocol-mode scenario: subscribers on a shared
// Redis broker, a publisher at ~1,000 msg/s throughout, and a handoff in
// the middle. stopAfter > 0 makes the new process fail after that many
// batches (it refuses the batch and goes away), as if it died.
func handoffProto(t *testing.T, n, stopAfter int) (old, neu *Server, subs []*pclient, taken int) {
	rd := redistest.Start(t)
	cfg := func(c *Config) {
		c.Echo = false
		c.CommandRate = 0
		c.Broker = rd.URL()
		c.Namespaces = []Namespace{{Name: "chat", HistorySize: 100_000, HistoryTTL: time.Minute, Presence: true, Publish: true}}
	}
	old, path, done := startOld(t, cfg)
	subs = make([]*pclient, n)
	pos := make([]uint64, n)
	for i := range subs {
		subs[i] = dialProto(t, old.Addr())
		res := subs[i].ok(`{"op":"subscribe","channel":"chat:room"}`)
		pos[i] = uint64(res["offset"].(float64))
	}
	// A protocol client whose command is half received when the switch
	// starts: the new process reads the rest and answers it.
	raw := dialRaw(t, old.Addr())
	raw.send([]byte(upgradeRequest("/ws", "Sec-WebSocket-Protocol: "+Subprotocol)))
	if resp := raw.readResponse(); resp.StatusCode != 101 {
		t.Fatalf("upgrade %d", resp.StatusCode)
	}
	half := masked(true, frame.OpText, []byte(`{"id":7,"op":"ping"}`))
	raw.send(half[:11])
	pub, err := broker.NewRedis(context.Background(), broker.RedisConfig{URL: rd.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	stop := make(chan struct{})
	published := make(chan uint64, 1)
	go func() {
		var last uint64
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				published <- last
				return
			case <-tick.C:
			}
			p, err := pub.Publish(context.Background(), "chat:room", []byte(fmt.Sprintf(`{"n":%d}`, last+1)),
				broker.PublishOptions{HistorySize: 100_000, HistoryTTL: time.Minute})
			if err == nil {
				last = p.Offset
			}
		}
	}()
	// Some publications before the switch.
	subs[0].waitPushes(50, isPub)

	var res chan takeResult
	if stopAfter > 0 {
		neu, res = startNewFailing(t, old, path, cfg, stopAfter)
	} else {
		neu, res = startNew(t, old, path, cfg)
	}
	r := waitTake(t, res)
	if stopAfter == 0 {
		if r.err != nil || r.n != n+1 {
			t.Fatalf("took %d of %d: %v", r.n, n+1, r.err)
		}
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("the old process did not finish")
		}
	} else if r.err == nil {
		t.Fatal("a failing takeover reported no error")
	}
	// Publications after the switch too.
	before := old.m.Publications.Get() + neu.m.Publications.Get()
	checkFor(t, 10*time.Second, func() error {
		if got := old.m.Publications.Get() + neu.m.Publications.Get(); got < before+200 {
			return fmt.Errorf("%d publications after the switch", got-before)
		}
		return nil
	})
	close(stop)
	top := <-published
	raw.send(half[11:])
	raw.expectFrame(frame.OpText, `{"id":7,"ok":true}`)
	// Every subscriber has every publication after its position, once,
	// in order, and nothing else.
	for i, c := range subs {
		got := c.waitPushes(int(top-pos[i]), isPub)
		for j, p := range got {
			if off := uint64(p["offset"].(float64)); off != pos[i]+uint64(j)+1 {
				t.Fatalf("client %d: push %d has offset %d, want %d", i, j, off, pos[i]+uint64(j)+1)
			}
		}
		c.mu.Lock()
		if len(c.pushes) != len(got) || c.closed != nil {
			t.Fatalf("client %d: %d pushes, %d publications; closed %v", i, len(c.pushes), len(got), c.closed)
		}
		c.mu.Unlock()
		// Commands still work, wherever the connection is.
		c.ok(`{"op":"presence_stats","channel":"chat:room"}`)
	}
	return old, neu, subs, r.n
}

func isPub(p map[string]any) bool {
	_, ok := p["offset"]
	return ok && p["data"] != nil
}

// TestHandoffProtocol: subscribers move while a publisher runs; each
// gets every publication exactly once, in order.
func TestHandoffProtocol(t *testing.T) {
	old, neu, _, _ := handoffProto(t, 40, 0)
	if old.m.Open() != 0 || neu.m.Open() != 41 {
		t.Fatalf("open: old %d new %d", old.m.Open(), neu.m.Open())
	}
}

// TestHandoffNewDies: the new process fails after its first batch; the
// old one resumes everything it did not see acknowledged, and every
// client, wherever it is, still gets every publication once, in order.
func TestHandoffNewDies(t *testing.T) {
	old, neu, _, taken := handoffProto(t, 40, 1)
	if taken == 0 || taken == 41 {
		t.Fatalf("took %d of 41, want some", taken)
	}
	if old.m.Open()+neu.m.Open() != 41 || old.m.Open() != int64(41-taken) {
		t.Fatalf("open: old %d new %d, %d taken", old.m.Open(), neu.m.Open(), taken)
	}
}

func startNewFailing(t *testing.T, old *Server, path string, mutate func(*Config), after int) (*Server, chan takeResult) {
	t.Helper()
	res := make(chan takeResult, 1)
	var tk *Takeover
	s := startServerHook(t, func(c *Config) {
		mutate(c)
		c.Listen = old.Addr()
	}, func(s *Server) {
		var err error
		if tk, err = s.DialTakeover(path); err != nil {
			t.Fatal(err)
		}
		tk.failAfter = after + 1
	})
	go func() {
		n, err := tk.Run()
		res <- takeResult{n, err}
	}()
	return s, res
}

// TestHandoffMemoryBroker: with the embedded memory broker history does not
// move (docs/DESIGN.md, "Handoff"): the new process's stream has another
// epoch, so a moved subscription gets a reset push to it (offset 0), then
// receives the new process's publications; nothing is misread as an
// older offset.
func TestHandoffMemoryBroker(t *testing.T) {
	cfg := func(c *Config) {
		c.Echo = false
		c.CommandRate = 0
	}
	old, path, done := startOld(t, cfg)
	sub := dialProto(t, old.Addr())
	first := sub.ok(`{"op":"subscribe","channel":"chat:room"}`)
	pub := dialProto(t, old.Addr())
	for range 3 {
		pub.ok(`{"op":"publish","channel":"chat:room","data":{}}`)
	}
	sub.waitPushes(3, isPub)
	_, res := startNew(t, old, path, cfg)
	if r := waitTake(t, res); r.err != nil || r.n != 2 {
		t.Fatalf("took %d: %v", r.n, r.err)
	}
	<-done
	reset := sub.waitPushes(1, func(p map[string]any) bool { return p["reset"] != nil })
	if r, _ := reset[0]["reset"].(map[string]any); r == nil || r["offset"] != float64(0) || r["epoch"] == first["epoch"] {
		t.Fatalf("reset push %v, want offset 0 in a new epoch (old %v)", reset[0], first["epoch"])
	}
	pub.ok(`{"op":"publish","channel":"chat:room","data":{"after":1}}`)
	got := sub.waitPushes(4, isPub)
	if got[3]["offset"] != float64(1) {
		t.Fatalf("first publication of the new process: %v", got[3])
	}
}

// TestHandoffQueuedOutput: a connection whose output the client has not
// read yet is not handed over until it has been written (so that nothing
// queued is lost); once the client reads, it moves and its stream goes on
// intact (a byte of the queue lost would break the frames that follow).
func TestHandoffQueuedOutput(t *testing.T) {
	old, path, done := startOld(t, nil)
	slow := handshake(t, old.Addr())
	big := bytes.Repeat([]byte("y"), 60_000)
	// Echoes pile up in gnet's outbound buffer: the client does not read
	// (the server stops reading it past --max-outbound-bytes, so the
	// writes may block: they go from a goroutine).
	const n = 80
	var wire []byte
	for range n {
		wire = append(wire, masked(true, frame.OpBinary, big)...)
	}
	go func() { _, _ = slow.nc.Write(wire) }()
	checkFor(t, 5*time.Second, func() error {
		var queued int
		for _, l := range *old.list.Load() {
			got := make(chan int)
			_ = l.el.Execute(context.Background(), runnable(func() {
				q := 0
				l.wheel.each(func(c *conn) { q += c.gc.OutboundBuffered() })
				got <- q
			}))
			queued += <-got
		}
		if queued == 0 {
			return fmt.Errorf("nothing queued yet")
		}
		return nil
	})
	plain := handshake(t, old.Addr())
	neu, res := startNew(t, old, path, nil)
	// The plain connection moves at once; the slow one waits for its reader.
	checkFor(t, 5*time.Second, func() error {
		if neu.m.Open() < 1 {
			return fmt.Errorf("nothing moved yet")
		}
		return nil
	})
	for range n {
		slow.expectFrame(frame.OpBinary, string(big))
	}
	r := waitTake(t, res)
	if r.err != nil || r.n != 2 {
		t.Fatalf("took %d of 2: %v", r.n, r.err)
	}
	<-done
	for _, c := range []*rawClient{slow, plain} {
		c.send(masked(true, frame.OpText, []byte("still here")))
		c.expectFrame(frame.OpText, "still here")
	}
}

// TestHandoffVersionRefused: a peer speaking another version of the state
// encoding is refused with a reason naming both versions; the running
// process keeps its connections and its handoff socket.
func TestHandoffVersionRefused(t *testing.T) {
	old, path, _ := startOld(t, nil)
	c := handshake(t, old.Addr())
	link, err := handoff.Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	hello := handoff.AppendHello(nil, handoff.Hello{Echo: true})
	hello[9]++ // another encoding version
	if err := link.Send(handoff.TypeHello, hello, nil); err != nil {
		t.Fatal(err)
	}
	typ, reason, _, err := link.Recv()
	if err != nil || typ != handoff.TypeRefuse || !bytes.Contains(reason, []byte(fmt.Sprintf("version %d, the peer speaks %d", handoff.Version, handoff.Version+1))) {
		t.Fatalf("answer %d %q %v", typ, reason, err)
	}
	link.Close()
	c.send(masked(true, frame.OpText, []byte("still")))
	c.expectFrame(frame.OpText, "still")
	// A peer of the same version then takes over.
	neu, res := startNew(t, old, path, nil)
	if r := waitTake(t, res); r.err != nil || r.n != 1 {
		t.Fatalf("took %d: %v", r.n, r.err)
	}
	c.send(masked(true, frame.OpText, []byte("moved")))
	c.expectFrame(frame.OpText, "moved")
	if neu.m.Open() != 1 {
		t.Fatalf("new process holds %d", neu.m.Open())
	}
}
