package brokertest

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/wsedge/wsedge/broker"
)

// testResubscribe flips a subscription off and on without waiting in
// between, as the engine does when a channel's last local subscriber
// leaves and a new one arrives: the subscription ends up on, and each
// publication is delivered once.
func testResubscribe(t *testing.T, b broker.Broker) {
	c := newCollector()
	b.SetHandler(c.handle)
	ctx := context.Background()
	ch := channel("resubscribe")
	for round := 1; round <= 3; round++ {
		for i := 0; i < 5; i++ {
			if err := b.Subscribe(ctx, ch); err != nil {
				t.Fatal(err)
			}
			if err := b.Unsubscribe(ctx, ch); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
		pos, err := b.Publish(ctx, ch, payload(round), keep)
		if err != nil {
			t.Fatal(err)
		}
		if pos.Offset != uint64(round) {
			t.Fatalf("round %d: offset %d", round, pos.Offset)
		}
		pubs := c.waitCount(t, ch, round)
		if err := checkPubs(pubs, pos.Epoch, 1, uint64(round)); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
}

// testManyChannels subscribes hundreds of channels from many goroutines
// at once, the way a reconnecting crowd does; each then delivers its
// publication once.
func testManyChannels(t *testing.T, b broker.Broker) {
	const channels, goroutines = 500, 16
	c := newCollector()
	b.SetHandler(c.handle)
	ctx := context.Background()
	chs := make([]string, channels)
	for i := range chs {
		chs[i] = channel("many" + strconv.Itoa(i))
	}
	var next atomic.Int64
	runParallel(t, goroutines, func(int) error {
		for i := next.Add(1) - 1; i < channels; i = next.Add(1) - 1 {
			if err := b.Subscribe(ctx, chs[i]); err != nil {
				return fmt.Errorf("subscribe %s: %w", chs[i], err)
			}
		}
		return nil
	})
	for _, ch := range chs {
		publishN(t, b, ch, 1, keep)
	}
	for _, ch := range chs {
		pubs := c.waitCount(t, ch, 1)
		if len(pubs) != 1 || pubs[0].Offset != 1 {
			t.Fatalf("%s: deliveries %v, want offset 1 once", ch, offsets(pubs))
		}
	}
}
