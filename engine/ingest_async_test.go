package engine

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/wsedge/wsedge/ingest"
)

// TestIngestAsyncBroker: with a broker whose calls take 0–2 ms (so they
// run on the broker side's workers), pipelined ingest publishes are acked
// in order with consecutive offsets, a retried key is answered from the
// window, presence and publish-many work, and the subscriber receives
// everything in order.
func TestIngestAsyncBroker(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ingest.sock")
	s := startServerHook(t, func(c *Config) {
		c.Echo = false
		c.CommandRate = 0
		c.Ingest.Listen = "unix://" + path
	}, func(s *Server) {
		d := &delayBroker{Broker: s.broker, pm: s.presence, max: 2 * time.Millisecond}
		s.broker, s.presence = d, d
	})
	if s.bside == nil {
		t.Fatal("the delaying broker did not make the broker side")
	}
	sub := dialProto(t, s.Addr())
	sub.ok(`{"op":"subscribe","channel":"chat:async"}`)
	cl, err := ingest.Dial(t.Context(), "unix://"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const n = 300
	calls := make([]*ingest.Call, n)
	for i := range n {
		key := []byte(fmt.Sprintf("k%d", i))
		if calls[i], err = cl.PublishAsync(t.Context(), "chat:async", fmt.Appendf(nil, `%d`, i), key); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for i, c := range calls {
		if c.Err != nil || c.Offset != uint64(i+1) {
			t.Fatalf("call %d: offset %d, %v", i, c.Offset, c.Err)
		}
	}
	retry, err := cl.PublishAsync(t.Context(), "chat:async", []byte(`0`), []byte("k0"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Wait(ctx, retry); err != nil || !retry.Duplicate || retry.Offset != 1 {
		t.Fatalf("retry: offset %d duplicate %v %v", retry.Offset, retry.Duplicate, err)
	}
	if k, err := cl.PublishMany(ctx, []string{"chat:async", "chat:other"}, []byte(`"many"`)); err != nil || k != 2 {
		t.Fatalf("publish-many: %d %v", k, err)
	}
	if m, err := cl.Presence(ctx, "chat:async"); err != nil || len(m) != 1 {
		t.Fatalf("presence: %v %v", m, err)
	}
	got := sub.waitPushes(n+1, onChannel("chat:async"))
	for i, p := range got[:n] {
		if p["data"] != float64(i) {
			t.Fatalf("push %d: %v", i, p)
		}
	}
	if got[n]["data"] != "many" {
		t.Fatalf("last push %v", got[n])
	}
}
