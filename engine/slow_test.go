package engine

import (
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/wsedge/wsedge/frame"
)

// slowClient subscribes over a raw socket with a tiny receive buffer and
// then never reads again.
func slowClient(t *testing.T, addr, channel string) net.Conn {
	t.Helper()
	c := dialRaw(t, addr)
	_ = c.nc.(*net.TCPConn).SetReadBuffer(4096)
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
			// one flush (maxBytes) per connection.
			bound := uint64(slow) * 2 * maxBytes
			if grew := peak - min(peak, before.HeapInuse); grew > bound+(64<<20) {
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
