package engine

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wsedge/wsedge/auth"
	"github.com/wsedge/wsedge/broker"
	"github.com/wsedge/wsedge/frame"
	"github.com/wsedge/wsedge/protocol"
)

// authServer starts a protocol server that requires tokens signed with a
// fresh HS256 secret, and returns a function minting them.
func authServer(t *testing.T, mutate func(*Config)) (*Server, func(auth.Claims, time.Duration) string) {
	t.Helper()
	secret := []byte(strings.Repeat("k", 48))
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := auth.HMACKey(secret, "")
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, func(c *Config) {
		c.Echo = false
		c.InsecureNoAuth = false
		c.AuthSecretFile = path
		c.CommandRate = 0
		if mutate != nil {
			mutate(c)
		}
	})
	return s, func(cl auth.Claims, ttl time.Duration) string {
		t.Helper()
		tok, err := auth.Mint(key, cl, ttl)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
}

// dialToken upgrades with the token in the given place ("header",
// "query", "subprotocol") and returns the client and the response.
func dialToken(t *testing.T, addr, where, tok string) (*rawClient, *http.Response) {
	t.Helper()
	c := dialRaw(t, addr)
	path, headers := "/ws", []string{"Sec-WebSocket-Protocol: " + Subprotocol}
	switch where {
	case "header":
		headers = append(headers, "Authorization: Bearer "+tok)
	case "query":
		path += "?token=" + tok
	case "subprotocol":
		headers[0] = "Sec-WebSocket-Protocol: " + Subprotocol + ", token." + tok
	}
	c.send([]byte(upgradeRequest(path, headers...)))
	return c, c.readResponse()
}

func mustUpgrade(t *testing.T, addr, tok string) *rawClient {
	t.Helper()
	c, resp := dialToken(t, addr, "header", tok)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %d", resp.StatusCode)
	}
	return c
}

// TestAuthHandshake: a token is required before the 101, from any of the
// three places, and every refusal is a 401 with its reason, counted.
func TestAuthHandshake(t *testing.T) {
	s, mint := authServer(t, func(c *Config) { c.AuthAudience = "wsedge" })
	good := auth.Claims{Sub: "alice", Channels: []string{"chat:*"}, Audience: "wsedge"}
	for _, where := range []string{"header", "query", "subprotocol"} {
		c, resp := dialToken(t, s.Addr(), where, mint(good, time.Minute))
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("%s: status %d", where, resp.StatusCode)
		}
		// The token entry is never echoed: only the protocol is.
		if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != Subprotocol {
			t.Fatalf("%s: Sec-WebSocket-Protocol %q", where, got)
		}
		c.nc.Close()
	}

	other, _ := auth.HMACKey([]byte(strings.Repeat("x", 48)), "")
	forged, _ := auth.Mint(other, good, time.Minute)
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	_ = edPub
	edKey, _ := auth.NewKey(edPriv, "")
	wrongAlg, _ := auth.Mint(edKey, good, time.Minute)
	cases := []struct {
		name, tok, reason string
	}{
		{"missing", "", "missing"},
		{"garbage", "not.a.jwt", "malformed"},
		{"forged", forged, "bad_signature"},
		{"alg none", "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6OTk5OTk5OTk5OSwiYXVkIjoid3NlZGdlIn0.", "alg_none"},
		{"other algorithm", wrongAlg, "alg_mismatch"},
		{"expired", mint(auth.Claims{Sub: "alice", Audience: "wsedge", IssuedAt: time.Now().Add(-time.Hour)}, time.Minute), "expired"},
		{"not yet valid", mint(auth.Claims{Sub: "alice", Audience: "wsedge", NotBefore: time.Now().Add(time.Hour)}, 2*time.Hour), "not_yet_valid"},
		{"audience", mint(auth.Claims{Sub: "alice", Audience: "other"}, time.Minute), "audience"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, resp := dialToken(t, s.Addr(), "header", tc.tok)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401", resp.StatusCode)
			}
			c.expectEOF()
			checkFor(t, 2*time.Second, func() error {
				if got := counterValue(s, `wsedge_auth_refused_total{reason="`+tc.reason+`"}`); got < 1 {
					return errf("wsedge_auth_refused_total{reason=%q} = %v", tc.reason, got)
				}
				return nil
			})
		})
	}
	s.metricsFlushed()
	if got := s.m.Rejected("auth").Get(); got != uint64(len(cases)) {
		t.Fatalf(`rejected_total{reason="auth"} = %d, want %d`, got, len(cases))
	}
}

// counterValue reads one series from the server's metric set.
func counterValue(s *Server, series string) float64 {
	var b strings.Builder
	s.m.Set.WritePrometheus(&b)
	for _, line := range strings.Split(b.String(), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return -1
}

// TestAuthNothingBeforeAuth: a client that sends frames right behind a
// request with a bad token gets the 401 and nothing else.
func TestAuthNothingBeforeAuth(t *testing.T) {
	s, _ := authServer(t, nil)
	c := dialRaw(t, s.Addr())
	req := upgradeRequest("/ws", "Sec-WebSocket-Protocol: "+Subprotocol, "Authorization: Bearer bad.token.here")
	frames := masked(true, frame.OpText, []byte(`{"id":1,"op":"publish","channel":"chat:x","data":1}`))
	c.send(append([]byte(req), frames...))
	resp := c.readResponse()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d", resp.StatusCode)
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, err := io.ReadAll(c.br)
	if len(rest) != 0 {
		t.Fatalf("after the 401: %q (%v)", rest, err)
	}
	s.metricsFlushed()
	if s.m.Commands.Get() != 0 || s.m.Publications.Get() != 0 {
		t.Fatalf("commands %d, publications %d processed before authentication", s.m.Commands.Get(), s.m.Publications.Get())
	}
}

// TestAuthPermissions checks each op against the token's claims: denied is
// a 403 reply and the connection stays.
func TestAuthPermissions(t *testing.T) {
	s, mint := authServer(t, nil)
	alice := protoClientRaw(t, s.Addr(), mint(auth.Claims{Sub: "alice",
		Channels: []string{"chat:*", "user:{sub}"}, Publish: []string{"chat:open"}}, time.Minute))
	cases := []struct {
		cmd  string
		code int // 0: ok
	}{
		{`{"op":"subscribe","channel":"chat:room"}`, 0},
		{`{"op":"subscribe","channel":"chat-admin:x"}`, 404}, // unknown namespace first
		{`{"op":"subscribe","channel":"user:alice"}`, 0},
		{`{"op":"subscribe","channel":"user:bob"}`, 403},
		{`{"op":"subscribe","channel":"bench:x"}`, 403},
		{`{"op":"publish","channel":"chat:open","data":1}`, 0},
		{`{"op":"publish","channel":"chat:room","data":1}`, 403},
		{`{"op":"history","channel":"chat:room"}`, 0},
		{`{"op":"history","channel":"bench:x"}`, 403},
		{`{"op":"presence","channel":"chat:room"}`, 0},
		{`{"op":"presence_stats","channel":"bench:x"}`, 403},
	}
	for i, tc := range cases {
		m := alice.call(i+1, tc.cmd)
		if tc.code == 0 {
			if m["ok"] != true {
				t.Fatalf("%s: %v", tc.cmd, m)
			}
			continue
		}
		e, _ := m["error"].(map[string]any)
		if e == nil || e["code"] != float64(tc.code) {
			t.Fatalf("%s: %v, want error %d", tc.cmd, m, tc.code)
		}
	}
	// Denied channels never reach alice: bob publishes on user:bob and
	// bench:x, then on chat:room, which she may read.
	bob := protoClientRaw(t, s.Addr(), mint(auth.Claims{Sub: "bob",
		Publish: []string{"user:bob", "bench:*", "chat:*"}}, time.Minute))
	for i, ch := range []string{"bench:x", "chat:room"} {
		if m := bob.call(i+1, `{"op":"publish","channel":"`+ch+`","data":"`+ch+`"}`); m["ok"] != true {
			t.Fatalf("bob publish %s: %v", ch, m)
		}
	}
	// The user namespace takes no client publishes, whatever the token.
	if m := bob.call(9, `{"op":"publish","channel":"user:bob","data":1}`); m["error"] == nil {
		t.Fatalf("client publish to user:bob: %v", m)
	}
	m := alice.next()
	if m["channel"] != "chat:room" {
		t.Fatalf("alice's first push: %v", m)
	}
}

// TestAuthTokenSubs: the token's subs claim subscribes the connection at
// open; it is told with a subscribed push and receives its channel.
func TestAuthTokenSubs(t *testing.T) {
	s, mint := authServer(t, nil)
	alice := protoClientRaw(t, s.Addr(), mint(auth.Claims{Sub: "alice", Subs: []string{"user:{sub}"},
		Info: json.RawMessage(`{"name":"Alice"}`)}, time.Minute))
	m := alice.next()
	sub, _ := m["subscribed"].(map[string]any)
	if sub == nil || sub["channel"] != "user:alice" || sub["epoch"] == nil {
		t.Fatalf("first push %v, want subscribed to user:alice", m)
	}
	// Personal channels take publishes from the backend, not clients.
	ns := s.ns["user"]
	if _, err := s.broker.Publish(ctx, "user:alice", []byte(`"hello"`),
		broker.PublishOptions{HistorySize: ns.HistorySize, HistoryTTL: ns.HistoryTTL}); err != nil {
		t.Fatal(err)
	}
	if m := alice.next(); m["data"] != "hello" || m["offset"] != float64(1) {
		t.Fatalf("alice got %v", m)
	}
}

// TestAuthExpiry: at expiry the server asks for a new token; a client that
// sends one stays, one that does not is disconnected with 4004 / 1008.
func TestAuthExpiry(t *testing.T) {
	s, mint := authServer(t, func(c *Config) { c.RefreshWindow = 500 * time.Millisecond })
	claims := auth.Claims{Sub: "alice", Channels: []string{"chat:*"}}
	// JWT expiry has a resolution of one second.
	short := func() string { return mint(claims, 1500*time.Millisecond) }

	t.Run("refreshed", func(t *testing.T) {
		c := protoClientRaw(t, s.Addr(), short())
		if m := c.next(); m["refresh"] == nil {
			t.Fatalf("push %v, want refresh", m)
		}
		if r := c.call(1, `{"op":"refresh","token":"`+mint(claims, time.Hour)+`"}`); r["ok"] != true {
			t.Fatalf("refresh: %v", r)
		}
		// Well past the window it still works.
		deadline := time.Now().Add(time.Second)
		for i := 2; time.Now().Before(deadline); i++ {
			if r := c.call(i, `{"op":"ping"}`); r["ok"] != true {
				t.Fatalf("after refresh: %v", r)
			}
		}
		other := mint(auth.Claims{Sub: "mallory"}, time.Hour)
		if r := c.call(99, `{"op":"refresh","token":"`+other+`"}`); r["error"] == nil {
			t.Fatalf("refresh for another user accepted: %v", r)
		}
	})
	t.Run("not refreshed", func(t *testing.T) {
		c := protoClientRaw(t, s.Addr(), short())
		if m := c.next(); m["refresh"] == nil {
			t.Fatalf("push %v, want refresh", m)
		}
		m := c.next()
		d, _ := m["disconnect"].(map[string]any)
		if d == nil || d["code"] != float64(protocol.DisconnectTokenExpired) || d["reconnect"] != true {
			t.Fatalf("push %v, want disconnect 4004", m)
		}
		_, op, p, err := c.rc.readFrame()
		if err != nil || op != frame.OpClose || frame.CloseCode(binary.BigEndian.Uint16(p)) != frame.ClosePolicyViolation {
			t.Fatalf("close frame %v %x %v, want 1008", op, p, err)
		}
		checkFor(t, 2*time.Second, func() error {
			s.metricsFlushed()
			if s.m.AuthExpired.Get() != 1 {
				return errf("auth_expired_total = %d", s.m.AuthExpired.Get())
			}
			return nil
		})
	})
}

// TestAuthMaxConnsPerUser: the third connection of one user is refused
// with 429; another user is not affected; a closed one frees its slot.
func TestAuthMaxConnsPerUser(t *testing.T) {
	s, mint := authServer(t, func(c *Config) { c.MaxConnsPerUser = 2 })
	tok := mint(auth.Claims{Sub: "alice"}, time.Minute)
	a := mustUpgrade(t, s.Addr(), tok)
	mustUpgrade(t, s.Addr(), tok)
	if _, resp := dialToken(t, s.Addr(), "header", tok); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third connection: %d, want 429", resp.StatusCode)
	}
	mustUpgrade(t, s.Addr(), mint(auth.Claims{Sub: "bob"}, time.Minute))
	a.nc.Close()
	checkFor(t, 5*time.Second, func() error {
		c, resp := dialToken(t, s.Addr(), "header", tok)
		c.nc.Close()
		if resp.StatusCode != http.StatusSwitchingProtocols {
			return errf("after a close: %d", resp.StatusCode)
		}
		return nil
	})
}

// aclient is a raw protocol client that reads replies and pushes in order.
type aclient struct {
	t  *testing.T
	rc *rawClient
}

func protoClientRaw(t *testing.T, addr, tok string) *aclient {
	t.Helper()
	return &aclient{t: t, rc: mustUpgrade(t, addr, tok)}
}

// next reads the next text message as JSON.
func (c *aclient) next() map[string]any {
	c.t.Helper()
	_ = c.rc.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, op, p, err := c.rc.readFrame()
		if err != nil {
			c.t.Fatalf("read: %v", err)
		}
		if op != frame.OpText {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(p, &m); err != nil {
			c.t.Fatalf("bad JSON %q", p)
		}
		return m
	}
}

// call sends cmd with id and returns its reply, skipping pushes.
func (c *aclient) call(id int, cmd string) map[string]any {
	c.t.Helper()
	cmd = fmt.Sprintf(`{"id":%d,%s`, id, cmd[1:])
	c.rc.send(masked(true, frame.OpText, []byte(cmd)))
	for {
		m := c.next()
		if m["id"] == float64(id) {
			return m
		}
	}
}
