package engine

import (
	"hash/maphash"
	"strings"
	"sync"
)

// brokerSubs keeps the node's broker subscriptions equal to what the hub
// says: the node is subscribed to a channel exactly when some loop has a
// local subscriber. Loops report their transitions (Hub.Add and Hub.Remove)
// in any order from several goroutines; each report reconciles the channel
// under its stripe's mutex, reading the hub's current state rather than
// trusting the transition, so the last reconcile of a channel always sees
// the last change and a late Unsubscribe can no longer cancel another
// loop's Subscribe.
//
// Ownership: shared by every loop; safe for concurrent use. The broker is
// called with the stripe's mutex held, which serialises a channel's broker
// calls; with the memory broker they take well under a microsecond. A
// broker whose calls can block (Redis) must run them off the loops (see
// DESIGN.md, "Broker subscriptions").
type brokerSubs struct {
	seed    maphash.Seed
	stripes [brokerSubStripes]brokerSubStripe
}

const brokerSubStripes = 64

type brokerSubStripe struct {
	mu sync.Mutex
	on map[string]struct{} // channels the broker is subscribed to
	_  [cacheLinePad]byte
}

const cacheLinePad = 48

func newBrokerSubs() *brokerSubs {
	b := &brokerSubs{seed: maphash.MakeSeed()}
	for i := range b.stripes {
		b.stripes[i].on = make(map[string]struct{})
	}
	return b
}

// sync makes the broker's subscription to channel match the hub. It
// returns the broker's error when a needed Subscribe failed (the caller
// undoes its own subscriber and reconciles again).
func (s *Server) syncBroker(channel string) error {
	st := &s.bsubs.stripes[maphash.String(s.bsubs.seed, channel)%brokerSubStripes]
	st.mu.Lock()
	defer st.mu.Unlock()
	set := s.hub.Shards(channel)
	want := set.Next(0) >= 0
	_, have := st.on[channel]
	switch {
	case want && !have:
		if err := s.broker.Subscribe(ctx, channel); err != nil {
			return err
		}
		st.on[strings.Clone(channel)] = struct{}{}
	case !want && have:
		delete(st.on, channel)
		if err := s.broker.Unsubscribe(ctx, channel); err != nil {
			s.log.Warn("broker unsubscribe", "channel", channel, "err", err)
		}
	}
	return nil
}

// brokerSubscribed reports whether the node holds a broker subscription to
// channel, for tests and metrics.
func (s *Server) brokerSubscribed(channel string) bool {
	st := &s.bsubs.stripes[maphash.String(s.bsubs.seed, channel)%brokerSubStripes]
	st.mu.Lock()
	defer st.mu.Unlock()
	_, ok := st.on[channel]
	return ok
}
