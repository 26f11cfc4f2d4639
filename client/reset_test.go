package client

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/wsedge/wsedge/broker/redistest"
	"github.com/wsedge/wsedge/engine"
)

// TestStreamReset: Redis loses the channel's history (FLUSHALL) while the
// client stays subscribed. The server's reset push moves the subscription
// to the new epoch and OnUnrecovered tells the application; the new
// stream's publications (offsets from 1 again) reach the handler — a
// client comparing offsets alone would drop them as already seen.
func TestStreamReset(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server")
	}
	rs := redistest.Start(t)
	srv := startTestServer(t, func(c *engine.Config) { c.Broker = rs.URL() })
	rec := &recorder{}
	c := dialT(t, srv.URL(), WithBackoff(fastBackoff))
	defer c.Close()
	ch := testNamespace + ":reset"
	ctx := context.Background()
	sub, err := c.Subscribe(ctx, ch, rec.onPub, OnUnrecovered(rec.onUnrecovered))
	if err != nil {
		t.Fatal(err)
	}
	first := sub.Position().Epoch
	publish := func(from, to int) {
		for i := from; i <= to; i++ {
			if _, err := c.Publish(ctx, ch, []byte(strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
		checkFor(t, 10*time.Second, func() error {
			if n := rec.count(); n < to {
				return fmt.Errorf("%d of %d publications", n, to)
			}
			return nil
		})
	}
	publish(1, 3)
	if _, err := rs.Do("FLUSHALL"); err != nil {
		t.Fatal(err)
	}
	publish(4, 6)
	rec.checkSequenceData(t, 6)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.unrecovered) != 1 || rec.unrecovered[0].Epoch == first || rec.unrecovered[0].Offset != 0 {
		t.Fatalf("OnUnrecovered calls %v, want one at offset 0 of a new epoch (old %s)", rec.unrecovered, first)
	}
	for i, p := range rec.pubs[3:] {
		if p.Offset != uint64(i+1) || p.Epoch != rec.unrecovered[0].Epoch {
			t.Fatalf("publication %d of the new stream: offset %d epoch %s", i+1, p.Offset, p.Epoch)
		}
	}
}
