package engine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsedge/wsedge/auth"
	"github.com/wsedge/wsedge/broker"
)

// failingBroker fails the first fails History calls (the call that gives a
// subscription its position), like a broker that is down or whose queue
// is full during a connect burst.
type failingBroker struct {
	broker.Broker
	fails atomic.Int32
}

func (f *failingBroker) History(ctx context.Context, ch string, r broker.HistoryRequest) (broker.HistoryResult, error) {
	if f.fails.Add(-1) >= 0 {
		return broker.HistoryResult{}, errors.New("broker down")
	}
	return f.Broker.History(ctx, ch, r)
}

// TestTokenSubscriptionRetried: a subscription of the token's subs claim
// that the broker cannot make is tried again until it is made — before,
// it was logged and dropped, and the client (which may not subscribe to
// its personal channel itself) never got it.
func TestTokenSubscriptionRetried(t *testing.T) {
	secret := []byte(strings.Repeat("k", 48))
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := auth.HMACKey(secret, "")
	if err != nil {
		t.Fatal(err)
	}
	fb := &failingBroker{}
	fb.fails.Store(3)
	s := startServerHook(t, func(c *Config) {
		c.Echo = false
		c.InsecureNoAuth = false
		c.AuthSecretFile = path
		c.CommandRate = 0
	}, func(s *Server) {
		fb.Broker = s.broker
		s.broker = fb
	})
	tok, err := auth.Mint(key, auth.Claims{Sub: "alice", Subs: []string{"user:{sub}"}}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	alice := protoClientRaw(t, s.Addr(), tok)
	m := alice.next()
	sub, _ := m["subscribed"].(map[string]any)
	if sub == nil || sub["channel"] != "user:alice" {
		t.Fatalf("first push %v, want subscribed to user:alice after the broker recovered", m)
	}
	t.Logf("subscribed after %v and 3 failures", time.Since(start).Round(time.Millisecond))
	s.metricsFlushed()
	if n := s.m.ServerSubRetry.Get(); n != 3 {
		t.Fatalf("wsedge_token_subscription_retries_total = %d, want 3", n)
	}
	ns := s.ns["user"]
	if _, err := s.broker.Publish(t.Context(), "user:alice", []byte(`"hello"`),
		broker.PublishOptions{HistorySize: ns.HistorySize, HistoryTTL: ns.HistoryTTL}); err != nil {
		t.Fatal(err)
	}
	if m := alice.next(); m["data"] != "hello" {
		t.Fatalf("alice got %v, want the publication on her channel", m)
	}
}
