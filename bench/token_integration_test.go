package bench

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestTokensAgainstWsedge runs the bench with tokens against the real
// wsedge binary with authentication on: a token per connection in each
// place the server reads one, the subscribed pushes of the subs claim,
// and the refusals of a wrong key.
func TestTokensAgainstWsedge(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs wsedge")
	}
	bin, out := buildBinary(t, "..", "./cmd/wsedge", "wsedge")
	if bin == "" {
		t.Fatalf("wsedge does not build:\n%s", out)
	}
	secret := writeSecret(t, testSecret)
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	esPriv, esPub := writePEMKey(t, ek)
	srv := startServer(t, bin, "serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
		"--auth-secret-file", secret, "--auth-pem-files", esPub)
	url := "ws://" + srv.ws + "/ws"
	base := Defaults()
	base.URL, base.Duration, base.SetupTimeout = url, 700*time.Millisecond, 30*time.Second

	t.Run("idle subs", func(t *testing.T) {
		cfg := base
		cfg.Mode, cfg.Conns, cfg.Procs, cfg.ServerPID = ModeIdle, 60, 2, srv.pid
		cfg.Auth.Key, cfg.Auth.Channels, cfg.Auth.Subs = secret, []string{"chat:*"}, []string{"user:{sub}"}
		r := benchRun(t, cfg)
		s := r.Stats
		if s.Connected != 60 || s.Open != 60 || s.ConnectFailed != 0 || s.Dropped != 0 || s.Errors != 0 {
			t.Fatalf("idle: %+v", s)
		}
		// Every connection was subscribed to its own channel by its
		// token before the measured phase began.
		if s.Subscribed != 60 || s.ServerSubs != 60 {
			t.Fatalf("subscribed %d connections, %d pushes; want 60 and 60", s.Subscribed, s.ServerSubs)
		}
		if tk := r.Tokens; tk == nil || tk.Count != 60 || tk.Alg != "HS256" || tk.In != TokenInHeader || tk.Bytes < 60*100 {
			t.Fatalf("tokens: %+v", r.Tokens)
		}
	})
	t.Run("connect query", func(t *testing.T) {
		cfg := base
		cfg.Mode, cfg.Conns, cfg.Rate, cfg.ServerPID = ModeConnect, 8, 0, srv.pid
		cfg.Auth.Key, cfg.Auth.In = secret, TokenInQuery
		r := benchRun(t, cfg)
		s := r.Stats
		if s.Handshakes < 20 || s.ConnectFailed != 0 || s.Errors != 0 || r.Tokens == nil || r.Tokens.Count != 8 {
			t.Fatalf("connect: %+v tokens %+v", s, r.Tokens)
		}
		if r.Server == nil || r.Server.CPUPerHandshake <= 0 {
			t.Fatalf("no server CPU per handshake: %+v", r.Server)
		}
	})
	t.Run("connect ES256 subprotocol", func(t *testing.T) {
		cfg := base
		cfg.Mode, cfg.Conns, cfg.Rate = ModeConnect, 4, 0
		cfg.Auth.Key, cfg.Auth.In = esPriv, TokenInSubprotocol
		r := benchRun(t, cfg)
		if s := r.Stats; s.Handshakes < 10 || s.ConnectFailed != 0 || s.Errors != 0 || r.Tokens == nil || r.Tokens.Alg != "ES256" {
			t.Fatalf("connect: %+v tokens %+v", s, r.Tokens)
		}
	})
	t.Run("broadcast", func(t *testing.T) {
		cfg := base
		cfg.Mode, cfg.Conns, cfg.Procs, cfg.Rate, cfg.Size, cfg.PingRate = ModeBroadcast, 20, 2, 20, 64, 5
		cfg.Auth.Key, cfg.Auth.Channels, cfg.Auth.Publish = secret, []string{"bench:*"}, []string{"bench:*"}
		cfg.Auth.Subs = []string{"user:{sub}"}
		r := benchRun(t, cfg)
		s := r.Stats
		// 20 subscribers and the publisher each got their subscribed push.
		if s.Subscribed != 20 || s.ServerSubs != 21 || s.Errors != 0 || s.Dropped != 0 || r.Tokens.Count != 21 {
			t.Fatalf("broadcast: %+v tokens %+v", s, r.Tokens)
		}
		if r.Published < 5 || r.Missing != 0 || s.Unique != r.Expected || s.Pongs != s.Pings || s.Pings == 0 {
			t.Fatalf("published %d, missing %d, pings %d/%d", r.Published, r.Missing, s.Pongs, s.Pings)
		}
	})
	t.Run("refused", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			edit func(*Config)
		}{
			{"wrong key", func(c *Config) { c.Auth.Key = writeSecret(t, strings.Repeat("x", 40)) }},
			{"no token", func(c *Config) { c.Protocol = true }},
		} {
			cfg := base
			cfg.Mode, cfg.Conns, cfg.Duration = ModeIdle, 10, 100*time.Millisecond
			tc.edit(&cfg)
			r := benchRun(t, cfg)
			if s := r.Stats; s.Connected != 0 || s.ConnectFailed != 10 || !strings.Contains(s.LastError, "HTTP 401") {
				t.Fatalf("%s: %+v", tc.name, s)
			}
		}
	})
	t.Run("cli", func(t *testing.T) {
		cmd := exec.Command(bin, "bench", "idle", "--url", url, "--conns", "20", "--procs", "2", "--duration", "300ms",
			"--token-key", secret, "--token-subs", "user:{sub}", "--token-channels", "chat:*, bench:*", "--token-in", "subprotocol", "--json")
		b, err := cmd.Output()
		if err != nil {
			t.Fatalf("wsedge bench: %v\n%s", err, b)
		}
		rs, err := ReadResults(bytes.NewReader(b))
		if err != nil || len(rs) != 1 {
			t.Fatalf("reading --json output: %v (%d results)\n%s", err, len(rs), b)
		}
		r := rs[0]
		if r.Stats.Subscribed != 20 || r.Stats.ConnectFailed != 0 || r.Tokens == nil || r.Tokens.Count != 20 || r.Tokens.In != TokenInSubprotocol {
			t.Fatalf("cli result: %+v tokens %+v", r.Stats, r.Tokens)
		}
	})
}
