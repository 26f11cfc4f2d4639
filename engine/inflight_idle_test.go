package engine

import (
	"context"
	"testing"
	"time"

	"github.com/wsedge/wsedge/broker"
)

// stallBroker makes History (the subscribe's position) take d.
type stallBroker struct {
	broker.Broker
	d time.Duration
}

func (b *stallBroker) History(ctx context.Context, ch string, r broker.HistoryRequest) (broker.HistoryResult, error) {
	time.Sleep(b.d) // a slow broker, not test synchronisation
	return b.Broker.History(ctx, ch, r)
}

// TestBrokerWaitIsNotIdle: a connection is not read while its broker call
// is in flight, so its pongs wait in the socket; a broker slower than the
// idle timeout must not get it closed 4008 for silence (the million-
// connection run lost every connection that way when Redis fell behind).
func TestBrokerWaitIsNotIdle(t *testing.T) {
	s := startServerHook(t, func(c *Config) {
		c.Echo = false
		c.CommandRate = 0
		c.PingInterval = time.Second
		c.IdleTimeout = 2 * time.Second
	}, func(s *Server) {
		s.broker = &stallBroker{Broker: s.broker, d: 3500 * time.Millisecond}
	})
	c := dialProto(t, s.Addr()) // its reader answers pings
	res := c.ok(`{"op":"subscribe","channel":"chat:slow"}`)
	if res["epoch"] == nil {
		t.Fatalf("subscribe result %v", res)
	}
	c.ok(`{"op":"ping"}`)
	s.metricsFlushed()
	if n := s.m.IdleClosed.Get(); n != 0 {
		t.Fatalf("%d connections closed as idle while waiting on the broker", n)
	}
}
