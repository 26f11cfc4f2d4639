package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/wsedge/wsedge/auth"
	"github.com/wsedge/wsedge/engine"
)

func TestBackoff(t *testing.T) {
	b := DefaultBackoff()
	for _, tc := range []struct {
		attempt int
		ceiling time.Duration
	}{
		{0, 500 * time.Millisecond},
		{1, time.Second},
		{2, 2 * time.Second},
		{5, 16 * time.Second},
		{6, 20 * time.Second},
		{1000, 20 * time.Second}, // no overflow
	} {
		if got := b.Ceiling(tc.attempt); got != tc.ceiling {
			t.Errorf("ceiling of attempt %d: %v, want %v", tc.attempt, got, tc.ceiling)
		}
		if got := b.Delay(tc.attempt, 0); got != 0 {
			t.Errorf("attempt %d, u=0: %v, want 0 (full jitter)", tc.attempt, got)
		}
		if got := b.Delay(tc.attempt, 0.999999999); got > tc.ceiling || got < tc.ceiling*99/100 {
			t.Errorf("attempt %d, u→1: %v, want just under %v", tc.attempt, got, tc.ceiling)
		}
		if got := b.Delay(tc.attempt, 0.5); got < tc.ceiling*49/100 || got > tc.ceiling*51/100 {
			t.Errorf("attempt %d, u=0.5: %v, want half of %v", tc.attempt, got, tc.ceiling)
		}
	}
	for _, bad := range []Backoff{{}, {Min: time.Second, Max: time.Millisecond, Factor: 2}, {Min: 1, Max: 2, Factor: 0.5}} {
		if bad.validate() == nil {
			t.Errorf("%+v validated", bad)
		}
	}
}

// TestStatesAndBackoffWhileDown: against a port where nothing listens the
// client goes connecting → disconnected again and again, each wait drawn
// under the growing ceiling; Close from there ends in closed with no
// goroutine left.
func TestStatesAndBackoffWhileDown(t *testing.T) {
	srv := startTestServer(t, nil)
	rec := &recorder{}
	bo := Backoff{Min: 10 * time.Millisecond, Max: 80 * time.Millisecond, Factor: 2}
	c := dialT(t, srv.URL(), WithBackoff(bo), WithHealthyAfter(time.Hour), WithStateHandler(rec.onState), withRand(func() float64 { return 0.75 }))
	srv.Stop()
	checkFor(t, 10*time.Second, func() error {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		fails := 0
		for _, s := range rec.states {
			if s.To == StateDisconnected && s.Reason == "dial failed" {
				fails++
			}
		}
		if fails < 5 {
			return errors.New("fewer than 5 failed attempts")
		}
		return nil
	})
	c.Close()
	assertNoGoroutines(t)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	want := []State{StateConnecting, StateConnected, StateDisconnected}
	for i, s := range want {
		if rec.states[i].To != s {
			t.Fatalf("transition %d to %v, want %v (%+v)", i, rec.states[i].To, s, rec.states)
		}
	}
	attempt := 0
	for i, s := range rec.states {
		if i > 0 && s.From != rec.states[i-1].To {
			t.Fatalf("transition %d from %v, the previous went to %v", i, s.From, rec.states[i-1].To)
		}
		if s.To == StateDisconnected && s.Reason == "dial failed" {
			// The first failed dial follows the lost connection's attempt 0.
			attempt++
			if want := bo.Delay(attempt, 0.75); s.Delay != want {
				t.Fatalf("failed attempt %d waits %v, want %v", attempt, s.Delay, want)
			}
		}
	}
	if last := rec.states[len(rec.states)-1]; last.To != StateClosed || !errors.Is(last.Err, ErrClosed) {
		t.Fatalf("last transition %+v, want closed", last)
	}
}

// TestRefusedAndBadInput: a refused token ends Dial with ErrRefused; bad
// channels and data never reach the server; a full offline queue and a
// disabled one are errors to the caller; a command without reply times out.
func TestRefusedAndBadInput(t *testing.T) {
	dir := t.TempDir()
	secret := make([]byte, 48)
	for i := range secret {
		secret[i] = byte(i*7 + 1)
	}
	path := filepath.Join(dir, "secret")
	if err := os.WriteFile(path, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startTestServer(t, func(c *engine.Config) { c.InsecureNoAuth, c.AuthSecretFile = false, path })
	ctx := context.Background()
	if _, err := Dial(ctx, srv.URL(), WithBackoff(fastBackoff)); !errors.Is(err, ErrRefused) {
		t.Fatalf("dial without a token: %v, want ErrRefused", err)
	}
	key, err := auth.HMACKey(secret, "")
	if err != nil {
		t.Fatal(err)
	}
	tokens := 0
	getToken := func(context.Context) (string, error) {
		tokens++
		return auth.Mint(key, auth.Claims{Sub: "ann", Channels: []string{"t:*"}, Publish: []string{"t:*"}}, time.Minute)
	}
	px := startProxy(t, srv.cfg.Listen)
	c := dialT(t, "ws://"+px.Addr()+"/ws", WithToken(getToken), WithBackoff(fastBackoff),
		WithCommandTimeout(300*time.Millisecond), WithOfflineQueue(2), WithReadTimeout(time.Hour))
	if _, err := c.Publish(ctx, "nonamespace", []byte("1")); !errors.Is(err, ErrBadChannel) {
		t.Fatalf("bad channel: %v", err)
	}
	if _, err := c.Publish(ctx, "t:x", []byte("{oops")); !errors.Is(err, ErrBadData) {
		t.Fatalf("bad data: %v", err)
	}
	if _, err := c.Subscribe(ctx, "chat:x", func(Publication) {}); err == nil {
		t.Fatal("subscribe to a channel the token does not allow succeeded")
	} else if e := (*Error)(nil); !errors.As(err, &e) || e.Code != 403 {
		t.Fatalf("subscribe chat:x: %v, want a 403 error", err)
	}
	if p, err := c.Publish(ctx, "t:x", []byte(`{"a":1}`)); err != nil || p.Offset != 1 || p.Epoch == "" {
		t.Fatalf("publish: %v %v", p, err)
	}
	// A stalled path: the publish gets no reply within the command timeout.
	px.Stall()
	start := time.Now()
	if _, err := c.Publish(ctx, "t:x", []byte("2")); !errors.Is(err, ErrTimeout) {
		t.Fatalf("publish through a stall: %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("timeout took %v", d)
	}
	px.Resume()
	// Offline: the queue holds two, the third is refused at once.
	srv.Stop()
	checkFor(t, 5*time.Second, func() error {
		if c.State() == StateConnected {
			return errors.New("still connected")
		}
		return nil
	})
	errs := make(chan error, 2)
	for range 2 {
		go func() { _, err := c.Publish(ctx, "t:x", []byte("3")); errs <- err }()
	}
	checkFor(t, 2*time.Second, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if len(c.queue) != 2 {
			return errors.New("queue not filled")
		}
		return nil
	})
	if _, err := c.Publish(ctx, "t:x", []byte("4")); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("third offline publish: %v, want ErrQueueFull", err)
	}
	for range 2 {
		if err := <-errs; !errors.Is(err, ErrTimeout) {
			t.Fatalf("queued publish with the server down: %v, want ErrTimeout", err)
		}
	}
	c.mu.Lock()
	n := len(c.queue)
	c.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d timed-out publishes left in the queue", n)
	}
	c.Close()
	if _, err := c.Publish(ctx, "t:x", []byte("5")); !errors.Is(err, ErrClosed) {
		t.Fatalf("publish after Close: %v", err)
	}
	if tokens < 1 {
		t.Fatal("the token callback was never called")
	}
	assertNoGoroutines(t)
}

// TestTokenSubs: a channel the server subscribed by itself (the token's
// subs claim) and that the application then subscribes to answers 409; the
// client takes the position of the subscribed push and fills what it
// dropped from history, then after a cut recovers the same way.
func TestTokenSubs(t *testing.T) {
	secret := make([]byte, 48)
	for i := range secret {
		secret[i] = byte(i*5 + 3)
	}
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startTestServer(t, func(c *engine.Config) { c.InsecureNoAuth, c.AuthSecretFile = false, path })
	key, err := auth.HMACKey(secret, "")
	if err != nil {
		t.Fatal(err)
	}
	tok := func(sub string, subs ...string) Option {
		return WithToken(func(context.Context) (string, error) {
			return auth.Mint(key, auth.Claims{Sub: sub, Channels: []string{"t:*"}, Publish: []string{"t:*"}, Subs: subs}, time.Minute)
		})
	}
	px := startProxy(t, srv.cfg.Listen)
	rec := &recorder{}
	sub := dialT(t, "ws://"+px.Addr()+"/ws", tok("alice", "t:alice"), WithBackoff(fastBackoff))
	pub := dialT(t, srv.URL(), tok("bob"))
	ctx := context.Background()
	publish := func(from, to int) {
		t.Helper()
		for i := from; i <= to; i++ {
			if _, err := pub.Publish(ctx, "t:alice", []byte(strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(1, 3) // pushed on the server's own subscription, before ours
	if _, err := sub.Subscribe(ctx, "t:alice", rec.onPub, OnUnrecovered(rec.onUnrecovered)); err != nil {
		t.Fatal(err)
	}
	publish(4, 5)
	checkFor(t, 10*time.Second, func() error {
		if n := rec.count(); n < 5 {
			return fmt.Errorf("%d of 5", n)
		}
		return nil
	})
	px.Cut()
	publish(6, 8)
	checkFor(t, 10*time.Second, func() error {
		if n := rec.count(); n < 8 {
			return fmt.Errorf("%d of 8", n)
		}
		return nil
	})
	rec.checkSequence(t, 8)
	sub.Close()
	pub.Close()
	assertNoGoroutines(t)
}
