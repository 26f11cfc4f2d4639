package engine

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsedge/wsedge/frame"
)

// slowClient subscribes over a raw socket with a tiny receive buffer and
// then never reads again.
func slowClient(t *testing.T, addr, channel string) net.Conn {
	t.Helper()
	// The receive buffer is set before connecting, so the window is small
	// from the start; shrinking it later can stall the connection.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
	}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
	c := &rawClient{t: t, nc: nc, br: bufio.NewReaderSize(nc, 512)}
	c.send([]byte(upgradeRequest("/ws", "Sec-WebSocket-Protocol: "+Subprotocol)))
	if resp := c.readResponse(); resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	c.send(masked(true, frame.OpText, []byte(`{"id":1,"op":"subscribe","channel":"`+channel+`"}`)))
	_, _, reply, err := c.readFrame()
	if err != nil || !strings.Contains(string(reply), `"ok":true`) {
		t.Fatalf("subscribe reply %q %v", reply, err)
	}
	return c.nc
}

// TestSlowConsumers: subscribers that never read while a publisher pushes
// must not grow the server's memory past the configured bound, must be
// handled by the policy and counted, and must not disturb the others, who
// receive every publication in order.
func TestSlowConsumers(t *testing.T) {
	if testing.Short() {
		t.Skip("pushes a few hundred MB through loopback")
	}
	for _, policy := range []string{"close", "lag"} {
		t.Run(policy, func(t *testing.T) {
			const (
				slow     = 200
				good     = 5
				n        = 6000
				maxBytes = 32 << 10
			)
			s := protoServer(t, func(c *Config) {
				c.Loops = 2
				c.MaxOutboundBytes = maxBytes
				c.SlowConsumer = policy
				c.CloseTimeout = 500 * time.Millisecond
			})
			var before runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			for range slow {
				slowClient(t, s.Addr(), "bench:slow")
			}
			var goods []*pclient
			for range good {
				c := dialProto(t, s.Addr())
				c.ok(`{"op":"subscribe","channel":"bench:slow"}`)
				goods = append(goods, c)
			}
			pub := dialProto(t, s.Addr())
			payload := strings.Repeat("x", 1000)
			var peak uint64
			for i := range n {
				pub.send(fmt.Sprintf(`{"id":%d,"op":"publish","channel":"bench:slow","data":"%s"}`, i+1, payload))
				if i%500 == 0 {
					// Let the fan-out keep up so the check below measures
					// queues, not the publisher's backlog.
					pub.call(`{"op":"ping"}`)
					// What the server holds (queued frames are live), not
					// garbage: other tests' leftovers in this process
					// allocate meanwhile and made the raw heap flaky.
					runtime.GC()
					var ms runtime.MemStats
					runtime.ReadMemStats(&ms)
					peak = max(peak, ms.HeapInuse)
				}
			}
			for ci, c := range goods {
				got := c.waitPushes(n, onChannel("bench:slow"))
				for i, m := range got {
					if m["offset"] != float64(i+1) {
						t.Fatalf("good client %d: push %d has offset %v", ci, i, m["offset"])
					}
				}
			}
			// Queues hold references to shared frames; gnet holds at most
			// one flush (maxBytes) per connection. The bound is checked
			// without -race (make test runs the suite both ways): the race
			// detector's allocations and a whole package's leftovers made
			// the heap of the -race run too noisy to bound.
			bound := uint64(slow) * 2 * maxBytes
			if grew := peak - min(peak, before.HeapInuse); !raceEnabled && grew > bound+(64<<20) {
				t.Fatalf("heap grew by %d MB with %d slow consumers, bound %d MB", grew>>20, slow, bound>>20)
			}
			s.metricsFlushed()
			switch policy {
			case "close":
				checkFor(t, 10*time.Second, func() error {
					s.metricsFlushed()
					if got := s.m.SlowClosed.Get(); got != slow {
						return fmt.Errorf("slow-consumer closes %d, want %d", got, slow)
					}
					return nil
				})
			case "lag":
				if s.m.LagDropped.Get() == 0 {
					t.Fatal("no frames counted as dropped under the lag policy")
				}
				if s.m.SlowClosed.Get() != 0 {
					t.Fatalf("%d closes under the lag policy", s.m.SlowClosed.Get())
				}
			}
		})
	}
}

// send writes one raw command without waiting for its reply.
func (c *pclient) send(msg string) {
	c.t.Helper()
	if err := c.ws.WriteMessage(1, []byte(msg)); err != nil {
		c.t.Fatal(err)
	}
}

// TestLagNotice: under the lag policy a subscriber whose queue overflowed
// gets, once it reads again, every publication up to the gap in order, then
// a lagged push naming the last offset it got, then live publications.
func TestLagNotice(t *testing.T) {
	s := protoServer(t, func(c *Config) {
		c.MaxOutboundBytes = 16 << 10
		c.SlowConsumer = "lag"
	})
	nc := slowClient(t, s.Addr(), "bench:lag")
	pub := dialProto(t, s.Addr())
	payload := strings.Repeat("y", 1000)
	start := time.Now()
	for i := 0; ; i++ {
		pub.send(fmt.Sprintf(`{"id":%d,"op":"publish","channel":"bench:lag","data":"%s"}`, 1000+i, payload))
		if i%100 == 99 {
			pub.call(`{"op":"ping"}`)
			s.metricsFlushed()
			if s.m.LagDropped.Get() > 0 {
				break
			}
		}
		if i > 100000 {
			t.Fatal("no lag after 100,000 publications")
		}
	}
	t.Logf("lagging after %v", time.Since(start))
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	c := &rawClient{t: t, nc: nc, br: bufioReader(nc)}
	var last float64
	for {
		_, op, p, err := c.readFrame()
		if err != nil {
			t.Fatalf("after offset %v: %v", last, err)
		}
		if op != frame.OpText {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(p, &m); err != nil {
			t.Fatalf("bad JSON %q", p)
		}
		if lag, ok := m["lagged"].(map[string]any); ok {
			if lag["channel"] != "bench:lag" || lag["offset"] != last {
				t.Fatalf("lagged push %v after offset %v", lag, last)
			}
			break
		}
		if m["offset"] != last+1 {
			t.Fatalf("push with offset %v after %v", m["offset"], last)
		}
		last = m["offset"].(float64)
	}
	pub.ok(`{"op":"publish","channel":"bench:lag","data":"live"}`)
	for {
		_, _, p, err := c.readFrame()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(p), `"live"`) {
			return
		}
	}
}

func bufioReader(nc net.Conn) *bufio.Reader { return bufio.NewReaderSize(nc, 64<<10) }

// TestSocketSendBuffer: --socket-send-buffer caps SO_SNDBUF of every
// accepted connection (Linux reports twice the value set).
func TestSocketSendBuffer(t *testing.T) {
	s := startServer(t, func(c *Config) { c.SocketSendBuffer = 16 << 10 })
	handshake(t, s.Addr())
	got := make(chan int, 1)
	for _, l := range *s.list.Load() {
		_ = l.el.Execute(t.Context(), runnable(func() {
			l.wheel.each(func(c *conn) {
				v, err := syscall.GetsockoptInt(c.gc.Fd(), syscall.SOL_SOCKET, syscall.SO_SNDBUF)
				if err != nil {
					t.Error(err)
				}
				got <- v
			})
		}))
	}
	select {
	case v := <-got:
		if v != 2*(16<<10) {
			t.Fatalf("SO_SNDBUF %d, want %d", v, 2*(16<<10))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no connection found on any loop")
	}
}
