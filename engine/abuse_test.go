package engine

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsedge/wsedge/frame"
	"github.com/wsedge/wsedge/metrics"
	"github.com/wsedge/wsedge/protocol"
)

// End-to-end tests of the limits on what a hostile client can make the
// server do or hold: command rate, subscriptions, binary frames and
// silence in protocol mode, handshake refusals and their accounting,
// per-address limits, slowloris, inbox back-pressure and history cuts.

// cmd sends one protocol command.
func (c *rawClient) cmd(format string, args ...any) {
	c.t.Helper()
	c.send(masked(true, frame.OpText, fmt.Appendf(nil, format, args...)))
}

// readMsg reads the next frame, which must be a JSON text message, and
// returns it decoded and as sent.
func (c *rawClient) readMsg() (map[string]any, []byte) {
	c.t.Helper()
	_, op, p, err := c.readFrame()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	var m map[string]any
	if op != frame.OpText || json.Unmarshal(p, &m) != nil {
		c.t.Fatalf("frame op %v %q, want a JSON text message", op, trim(p))
	}
	return m, p
}

// reply reads messages until one with an id, skipping pushes, and checks
// that it answers id.
func (c *rawClient) reply(id int) (map[string]any, []byte) {
	c.t.Helper()
	for {
		m, p := c.readMsg()
		if got, ok := m["id"].(float64); ok {
			if got != float64(id) {
				c.t.Fatalf("reply %s, want the reply to %d", trim(p), id)
			}
			return m, p
		}
	}
}

// errorOf returns the code and message of an error reply (0 for success).
func errorOf(m map[string]any) (int, string) {
	e, _ := m["error"].(map[string]any)
	if e == nil {
		return 0, ""
	}
	code, _ := e["code"].(float64)
	msg, _ := e["message"].(string)
	return int(code), msg
}

// expectDisconnect reads the disconnect push that precedes a close.
func (c *rawClient) expectDisconnect(code protocol.DisconnectCode, reconnect bool) {
	c.t.Helper()
	m, p := c.readMsg()
	d, _ := m["disconnect"].(map[string]any)
	if d == nil || d["code"] != float64(code) || d["reconnect"] != reconnect {
		c.t.Fatalf("got %s, want a disconnect push with code %d, reconnect %v", p, code, reconnect)
	}
}

// pings is n ping commands with ids from first on, for one write.
func pings(first, n int) []byte {
	var b []byte
	for i := range n {
		b = append(b, masked(true, frame.OpText, fmt.Appendf(nil, `{"id":%d,"op":"ping"}`, first+i))...)
	}
	return b
}

// TestCommandRate: past --command-burst a command is answered 429 and the
// connection stays; a client that backs off is served again; one that
// keeps sending far past the rate gets disconnect 4006 and close 1008.
func TestCommandRate(t *testing.T) {
	s := protoServer(t, func(c *Config) {
		c.CommandRate = 100
		c.CommandBurst = 10
		c.CloseTimeout = 500 * time.Millisecond
	})
	// Each burst goes in one write, so the loop reads it in one turn
	// and its clock does not refill the bucket between commands.
	expectBurst := func(c *rawClient) {
		t.Helper()
		for i := range 20 {
			m, p := c.readMsg()
			code, msg := errorOf(m)
			switch {
			case i < 10 && (m["ok"] != true || m["id"] != float64(i+1)):
				t.Fatalf("reply %d: %s, want ok to id %d", i, p, i+1)
			case i >= 10 && (code != int(protocol.CodeRateLimited) || msg != protocol.MsgRateLimited):
				t.Fatalf("reply %d: %s, want error 429 %q", i, p, protocol.MsgRateLimited)
			}
		}
	}
	c := protoRaw(t, s.Addr())
	c.send(pings(1, 20))
	expectBurst(c)
	if got := s.m.Limited(metrics.LimitCommandRate).Get(); got != 10 {
		t.Fatalf(`wsedge_limited_total{reason="command_rate"} = %d, want 10`, got)
	}
	// 20 commands against a burst of 10 leave a debt that two wheel
	// ticks at 100/s repay; the loop's clock may trail the server's by
	// a tick or two.
	since := s.tickNow()
	checkFor(t, 5*time.Second, func() error {
		if s.tickNow() < since+5 {
			return errf("waiting for the bucket to refill")
		}
		return nil
	})
	c.cmd(`{"id":100,"op":"ping"}`)
	if m, p := c.reply(100); m["ok"] != true {
		t.Fatalf("ping after backing off: %s", p)
	}

	abuser := protoRaw(t, s.Addr())
	abuser.send(pings(1, 40))
	expectBurst(abuser)
	abuser.expectDisconnect(protocol.DisconnectRateLimited, true)
	abuser.expectClose(frame.ClosePolicyViolation)
	if got := s.m.Limited(metrics.LimitCommandRate).Get(); got != 20 {
		t.Fatalf(`wsedge_limited_total{reason="command_rate"} = %d, want 20`, got)
	}
	if got := s.m.Limited(metrics.LimitRateClose).Get(); got != 1 {
		t.Fatalf(`wsedge_limited_total{reason="command_rate_close"} = %d, want 1`, got)
	}
	// The well-behaved client is untouched.
	c.cmd(`{"id":101,"op":"ping"}`)
	if m, p := c.reply(101); m["ok"] != true {
		t.Fatalf("ping: %s", p)
	}
}

// TestMaxSubsPerConn: the subscription over --max-subs-per-conn is
// refused 413 and holds nothing; a freed place can be used again.
func TestMaxSubsPerConn(t *testing.T) {
	s := protoServer(t, func(c *Config) { c.MaxSubsPerConn = 3 })
	c := dialProto(t, s.Addr())
	pub := dialProto(t, s.Addr())
	for i := range 3 {
		c.ok(fmt.Sprintf(`{"op":"subscribe","channel":"bench:m%d"}`, i))
	}
	r := c.call(`{"op":"subscribe","channel":"bench:m3"}`)
	if code, msg := errorOf(r); code != int(protocol.CodeTooLarge) || msg != protocol.MsgTooManySubs {
		t.Fatalf("fourth subscribe: %v, want 413 %q", r, protocol.MsgTooManySubs)
	}
	if got := s.m.Limited(metrics.LimitSubs).Get(); got != 1 {
		t.Fatalf(`wsedge_limited_total{reason="subs_per_conn"} = %d, want 1`, got)
	}
	// At the cap a duplicate is still a conflict, not a refusal.
	if code := c.errCode(`{"op":"subscribe","channel":"bench:m1"}`); code != int(protocol.CodeConflict) {
		t.Fatalf("duplicate at the cap: %d, want 409", code)
	}
	if code := c.errCode(`{"op":"unsubscribe","channel":"bench:m3"}`); code != int(protocol.CodeConflict) {
		t.Fatalf("unsubscribe of the refused channel: %d, want 409", code)
	}
	c.ok(`{"op":"unsubscribe","channel":"bench:m1"}`)
	c.ok(`{"op":"subscribe","channel":"bench:m3"}`)
	if code := c.errCode(`{"op":"subscribe","channel":"bench:m1"}`); code != int(protocol.CodeTooLarge) {
		t.Fatalf("subscribe over the cap again: %d, want 413", code)
	}
	for _, ch := range []string{"bench:m1", "bench:m3"} {
		pub.ok(`{"op":"publish","channel":"` + ch + `","data":"` + ch + `"}`)
	}
	// One publisher's pushes reach a loop in order: the one on bench:m1
	// would come first.
	got := c.waitPushes(1, onChannel("bench:m3"))
	if n := len(c.waitPushes(0, onChannel("bench:m1"))); n != 0 || got[0]["data"] != "bench:m3" {
		t.Fatalf("%d pushes on the channel left, %v on the one taken", n, got)
	}
}

// TestSubsSortedChurn subscribes and unsubscribes channels with random
// names in random order and checks every answer against a model: the
// connection's sorted list must find each subscription by name (ok, or
// 409 for a duplicate or a missing one), and deliver exactly to the
// channels it holds at the end.
func TestSubsSortedChurn(t *testing.T) {
	s := protoServer(t, func(c *Config) { c.MaxSubsPerConn = 200 })
	rng := rand.New(rand.NewPCG(1, 2))
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789_-."
	var names []string
	seen := map[string]bool{}
	for len(names) < 150 {
		b := make([]byte, 1+rng.IntN(24))
		for i := range b {
			b[i] = letters[rng.IntN(len(letters))]
		}
		if n := "bench:" + string(b); !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	c := protoRaw(t, s.Addr())
	subscribed := map[string]bool{}
	id := 0
	ops := 4000
	if raceEnabled {
		ops = 1500
	}
	for done := 0; done < ops; done += 200 {
		var buf []byte
		var want []int
		for range 200 {
			id++
			name := names[rng.IntN(len(names))]
			sub := rng.IntN(2) == 0
			op, code := "unsubscribe", int(protocol.CodeConflict)
			if sub {
				op = "subscribe"
			}
			if sub != subscribed[name] {
				code = 0
				subscribed[name] = sub
			}
			buf = append(buf, masked(true, frame.OpText, fmt.Appendf(nil, `{"id":%d,"op":%q,"channel":%q}`, id, op, name))...)
			want = append(want, code)
		}
		c.send(buf)
		for i, code := range want {
			m, p := c.reply(id - len(want) + 1 + i)
			if got, _ := errorOf(m); got != code {
				t.Fatalf("command %d: %s, want code %d", id-len(want)+1+i, p, code)
			}
		}
	}
	var held []string
	for _, n := range names {
		if subscribed[n] {
			held = append(held, n)
		}
	}
	t.Logf("%d commands, %d of %d channels held at the end", id, len(held), len(names))
	// The pushes of one publisher reach the subscriber's loop in order,
	// so the marker channel's push comes after all the others.
	const marker = "bench:~marker"
	id++
	c.cmd(`{"id":%d,"op":"subscribe","channel":%q}`, id, marker)
	if m, p := c.reply(id); m["ok"] != true {
		t.Fatalf("subscribe marker: %s", p)
	}
	pub := dialProto(t, s.Addr())
	for _, n := range append(slices.Clone(names), marker) {
		pub.ok(fmt.Sprintf(`{"op":"publish","channel":%q,"data":1}`, n))
	}
	var got []string
	for {
		m, p := c.readMsg()
		ch, _ := m["channel"].(string)
		if ch == "" {
			t.Fatalf("unexpected message %s", p)
		}
		if ch == marker {
			break
		}
		got = append(got, ch)
	}
	slices.Sort(got)
	slices.Sort(held)
	if !slices.Equal(got, held) {
		t.Fatalf("pushes on %d channels %v, want the %d held %v", len(got), got, len(held), held)
	}
	// Unsubscribe everything in another random order; each works once.
	rng.Shuffle(len(held), func(i, j int) { held[i], held[j] = held[j], held[i] })
	for _, n := range held {
		for _, code := range []int{0, int(protocol.CodeConflict)} {
			id++
			c.cmd(`{"id":%d,"op":"unsubscribe","channel":%q}`, id, n)
			m, p := c.reply(id)
			if got, _ := errorOf(m); got != code {
				t.Fatalf("unsubscribe %s: %s, want code %d", n, p, code)
			}
		}
	}
}

// TestBinaryInProtocolMode: wsedge.v1.json is text only; a binary frame
// gets disconnect 4002 (no reconnect) and close 1003.
func TestBinaryInProtocolMode(t *testing.T) {
	s := protoServer(t, func(c *Config) { c.CloseTimeout = 5 * time.Second })
	c := protoRaw(t, s.Addr())
	c.cmd(`{"id":1,"op":"ping"}`)
	if m, p := c.reply(1); m["ok"] != true {
		t.Fatalf("ping: %s", p)
	}
	c.send(masked(true, frame.OpBinary, []byte(`{"id":2,"op":"ping"}`)))
	c.expectDisconnect(protocol.DisconnectBadProtocol, false)
	// A command after the binary frame is ignored (the connection is
	// closing); our close reply ends it at once, not at the close timeout.
	c.send(masked(true, frame.OpText, []byte(`{"id":3,"op":"ping"}`)))
	start := time.Now()
	for {
		_, op, p, err := c.readFrame()
		if err != nil {
			t.Fatal(err)
		}
		if op == frame.OpClose {
			if code := frame.CloseCode(binary.BigEndian.Uint16(p)); code != frame.CloseUnsupported {
				t.Fatalf("close %d, want 1003", code)
			}
			break
		}
		t.Fatalf("frame after the disconnect push: %q", p)
	}
	c.send(closeFrame(frame.CloseUnsupported, ""))
	c.expectEOF()
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("closed %v after our close reply; the close timeout is 5s", d)
	}
}

// TestIdleTimeoutProtocol: a protocol client that never answers gets the
// application ping push with the WebSocket ping, then at the idle timeout
// a disconnect push 4008 and close 4008 (docs/PROTOCOL.md).
func TestIdleTimeoutProtocol(t *testing.T) {
	s := protoServer(t, func(c *Config) {
		c.PingInterval = time.Second
		c.IdleTimeout = 2 * time.Second
	})
	c := protoRaw(t, s.Addr())
	start := time.Now()
	if m, p := c.readMsg(); m["ping"] == nil || len(m) != 1 {
		t.Fatalf("first message %s, want the ping push", p)
	}
	if d := time.Since(start); d < 800*time.Millisecond {
		t.Fatalf("ping push after %v, interval 1s", d)
	}
	c.expectFrame(frame.OpPing, "")
	c.expectDisconnect(protocol.DisconnectNoPong, true)
	c.expectClose(closeNoPong)
	if d := time.Since(start); d < 1800*time.Millisecond || d > 5*time.Second {
		t.Fatalf("idle close after %v, timeout 2s", d)
	}
	checkFor(t, 2*time.Second, func() error {
		s.metricsFlushed()
		if got := s.m.IdleClosed.Get(); got != 1 {
			return errf("idle closes = %d, want 1", got)
		}
		return nil
	})
}

// TestDrainEndsOnCloseReply: a connection the server closes (here by a
// drain) is gone as soon as the client answers the close frame, not at
// the close timeout, so a drain of few connections ends early.
func TestDrainEndsOnCloseReply(t *testing.T) {
	s := startServer(t, func(c *Config) {
		c.CloseTimeout = 5 * time.Second
		c.DrainGrace = 10 * time.Second
	})
	c := handshake(t, s.Addr())
	drained := make(chan struct{})
	go func() { s.Drain(); close(drained) }()
	if p := c.expectFrameOp(frame.OpClose); len(p) < 2 || frame.CloseCode(binary.BigEndian.Uint16(p)) != frame.CloseGoingAway {
		t.Fatalf("close payload %q, want code 1001", p)
	}
	c.send(closeFrame(frame.CloseGoingAway, ""))
	_ = c.nc.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.br.ReadByte(); err != io.EOF {
		t.Fatalf("after the client's close frame: %v, want EOF within 2 s (close timeout 5 s)", err)
	}
	select {
	case <-drained:
	case <-time.After(2 * time.Second):
		t.Fatal("drain still running 2 s after its only client left")
	}
}

// expectFrameOp reads the next frame and checks its opcode.
func (c *rawClient) expectFrameOp(op frame.OpCode) []byte {
	c.t.Helper()
	_, got, p, err := c.readFrame()
	if err != nil || got != op {
		c.t.Fatalf("frame op %v %q (%v), want op %v", got, trim(p), err, op)
	}
	return p
}

// TestHandshakeAccounting: every accepted socket ends in exactly one of
// ok, failed, timeout and aborted; each refusal is counted and logged at
// debug under its reason.
func TestHandshakeAccounting(t *testing.T) {
	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := startServerLog(t, func(c *Config) {
		c.Echo = false
		c.CommandRate = 0
		c.AllowedOrigins = []string{"https://ok.example"}
		c.HandshakeTimeout = 500 * time.Millisecond
	}, log)
	proto := "Sec-WebSocket-Protocol: " + Subprotocol
	okReq := upgradeRequest("/ws", proto)
	refusals := []struct {
		req    string
		status int
		reason metrics.RejectReason
	}{
		{upgradeRequest("/nope", proto), http.StatusNotFound, metrics.RejectNotFound},
		{strings.Replace(okReq, "GET", "POST", 1), http.StatusMethodNotAllowed, metrics.RejectMethod},
		{strings.Replace(okReq, "Version: 13", "Version: 12", 1), http.StatusUpgradeRequired, metrics.RejectVersion},
		{upgradeRequest("/ws"), http.StatusBadRequest, metrics.RejectSubprotocol},
		{upgradeRequest("/ws", proto, "Origin: https://evil.example"), http.StatusForbidden, metrics.RejectOrigin},
		{upgradeRequest("/ws", proto, "X-Pad: "+strings.Repeat("a", 9000)), http.StatusRequestHeaderFieldsTooLarge, metrics.RejectHeaderTooLong},
		{"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", http.StatusBadRequest, metrics.RejectBadRequest},
	}
	const oks = 3
	for range oks {
		protoRaw(t, s.Addr())
	}
	for _, r := range refusals {
		c := dialRaw(t, s.Addr())
		c.send([]byte(r.req))
		if resp := c.readResponse(); resp.StatusCode != r.status {
			t.Fatalf("%s: status %d, want %d", r.reason, resp.StatusCode, r.status)
		}
		c.expectEOF()
	}
	slow := dialRaw(t, s.Addr())
	slow.send([]byte("GET /ws HTTP/1.1\r\n"))
	slow.expectEOF()
	// The client goes away mid-request, once the server has accepted it.
	before := s.m.Accepted.Get()
	gone := dialRaw(t, s.Addr())
	gone.send([]byte("GET /ws HTTP/1.1\r\nHost: x\r\n"))
	checkFor(t, 5*time.Second, func() error {
		if s.m.Accepted.Get() == before {
			return errf("not accepted yet")
		}
		return nil
	})
	gone.nc.Close()

	m := s.m
	checkFor(t, 5*time.Second, func() error {
		s.metricsFlushed()
		got := [4]uint64{m.Handshakes.Get(), m.HandshakeFailed.Get(), m.HandshakeTimeout.Get(), m.HandshakeAborted.Get()}
		want := [4]uint64{oks, uint64(len(refusals)), 1, 1}
		if got != want {
			return errf("handshakes ok/failed/timeout/aborted = %v, want %v", got, want)
		}
		if a := m.Accepted.Get(); a != got[0]+got[1]+got[2]+got[3] {
			return errf("accepted %d, handshake results %v", a, got)
		}
		return nil
	})
	var wantReasons []string
	for _, r := range refusals {
		if got := m.Rejected(r.reason).Get(); got != 1 {
			t.Errorf(`wsedge_rejected_total{reason=%q} = %d, want 1`, r.reason, got)
		}
		wantReasons = append(wantReasons, string(r.reason))
	}
	for _, r := range []metrics.RejectReason{metrics.RejectFDCeiling, metrics.RejectMaxConns, metrics.RejectDraining,
		metrics.RejectIPConns, metrics.RejectIPRate, metrics.RejectIPTableFull} {
		if got := m.Rejected(r).Get(); got != 0 {
			t.Errorf(`wsedge_rejected_total{reason=%q} = %d, want 0`, r, got)
		}
	}
	var gotReasons []string
	for _, l := range logs.lines("handshake refused") {
		if l["level"] != "DEBUG" || l["remote"] == nil {
			t.Errorf("refusal log line %v, want level DEBUG and the remote address", l)
		}
		r, _ := l["reason"].(string)
		gotReasons = append(gotReasons, r)
	}
	slices.Sort(gotReasons)
	slices.Sort(wantReasons)
	if !slices.Equal(gotReasons, wantReasons) {
		t.Fatalf("refusals logged with reasons %v, want %v", gotReasons, wantReasons)
	}
}

// upgradeFrom dials addr from the loopback address local ("" for any),
// sends an upgrade request and returns the response status and client.
func upgradeFrom(t *testing.T, addr, local string) (int, *rawClient) {
	t.Helper()
	c := dialFrom(t, addr, local)
	c.send([]byte(upgradeRequest("/ws")))
	return c.readResponse().StatusCode, c
}

func dialFrom(t *testing.T, addr, local string) *rawClient {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawClient{t: t, nc: nc, br: bufio.NewReaderSize(nc, 512)}
}

// TestPerAddressLimits: --max-conns-per-ip and --handshake-rate-per-ip
// refuse with HTTP 429 before the upgrade, per client address.
func TestPerAddressLimits(t *testing.T) {
	t.Run("conns", func(t *testing.T) {
		s := startServer(t, func(c *Config) { c.MaxConnsPerIP = 3 })
		var held []*rawClient
		for _, ip := range []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"} {
			for i := range 3 {
				status, c := upgradeFrom(t, s.Addr(), ip)
				if status != http.StatusSwitchingProtocols {
					t.Fatalf("%s connection %d: status %d", ip, i+1, status)
				}
				held = append(held, c)
			}
			// The refusal comes at accept: no request needed.
			over := dialFrom(t, s.Addr(), ip)
			if resp := over.readResponse(); resp.StatusCode != http.StatusTooManyRequests {
				t.Fatalf("%s connection 4: status %d, want 429", ip, resp.StatusCode)
			}
			over.expectEOF()
		}
		if got := s.m.Rejected(metrics.RejectIPConns).Get(); got != 3 {
			t.Fatalf(`wsedge_rejected_total{reason="ip_conns"} = %d, want 3`, got)
		}
		// Held connections still work.
		held[0].send(masked(true, frame.OpText, []byte("still here")))
		held[0].expectFrame(frame.OpText, "still here")
		// A slot frees when the server has seen the close.
		held[1].nc.Close()
		checkFor(t, 5*time.Second, func() error {
			if status, c := upgradeFrom(t, s.Addr(), "127.0.0.1"); status != http.StatusSwitchingProtocols {
				c.nc.Close()
				return errf("status %d after closing one of three", status)
			}
			return nil
		})
		if status, _ := upgradeFrom(t, s.Addr(), "127.0.0.1"); status != http.StatusTooManyRequests {
			t.Fatalf("status %d with three open again, want 429", status)
		}
	})
	t.Run("rate", func(t *testing.T) {
		s := startServer(t, func(c *Config) {
			c.HandshakeRatePerIP = 5
			c.HandshakeBurstPerIP = 5
		})
		burst := func(ip string) (ok, refused int) {
			for range 20 {
				status, c := upgradeFrom(t, s.Addr(), ip)
				switch status {
				case http.StatusSwitchingProtocols:
					ok++
				case http.StatusTooManyRequests:
					refused++
				default:
					t.Fatalf("status %d", status)
				}
				c.nc.Close()
			}
			return ok, refused
		}
		start := time.Now()
		ok, refused := burst("127.0.0.1")
		// A burst of 5, then 5 a second.
		if allowed := 5 + int(time.Since(start).Seconds()*5); ok < 5 || ok > allowed || refused == 0 {
			t.Fatalf("%d upgraded and %d refused of 20 in %v, want 5 to %d upgraded", ok, refused, time.Since(start), allowed)
		}
		if got := s.m.Rejected(metrics.RejectIPRate).Get(); got != uint64(refused) {
			t.Fatalf(`wsedge_rejected_total{reason="ip_rate"} = %d, want %d`, got, refused)
		}
		// Another address has its own bucket.
		if status, _ := upgradeFrom(t, s.Addr(), "127.0.0.2"); status != http.StatusSwitchingProtocols {
			t.Fatalf("first connection from 127.0.0.2: status %d", status)
		}
	})
}

// peerClosed reports, without blocking, whether the peer closed nc.
func peerClosed(t *testing.T, rc syscall.RawConn) bool {
	var closed bool
	var buf [64]byte
	err := rc.Control(func(fd uintptr) {
		n, _, err := unix.Recvfrom(int(fd), buf[:], unix.MSG_DONTWAIT)
		closed = (n == 0 && err == nil) || errors.Is(err, unix.ECONNRESET)
		if n > 0 {
			t.Errorf("server sent %q to a client that never finished its request", buf[:n])
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return closed
}

// echoOnce upgrades, echoes one message and closes.
func echoOnce(addr string) error {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Write([]byte(upgradeRequest("/ws"))); err != nil {
		return err
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	if _, err := nc.Write(masked(true, frame.OpText, []byte("hello"))); err != nil {
		return err
	}
	got := make([]byte, 7)
	if _, err := io.ReadFull(br, got); err != nil {
		return err
	}
	if string(got) != "\x81\x05hello" {
		return fmt.Errorf("echo %q", got)
	}
	return nil
}

// TestSlowloris: clients that send their upgrade request a byte every
// 200 ms are all closed at the handshake deadline, and other clients are
// served meanwhile.
func TestSlowloris(t *testing.T) {
	const slow, normal, workers = 200, 50, 5
	const hsTimeout = time.Second
	s := startServer(t, func(c *Config) { c.HandshakeTimeout = hsTimeout })
	req := []byte(upgradeRequest("/ws"))
	type loris struct {
		nc             net.Conn
		rc             syscall.RawConn
		opened, closed time.Time
		sent           int
	}
	lorises := make([]*loris, slow)
	for i := range lorises {
		opened := time.Now()
		nc, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		rc, err := nc.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		lorises[i] = &loris{nc: nc, rc: rc, opened: opened}
	}

	errs := make(chan error, normal)
	var wg sync.WaitGroup
	var normalEnd time.Time
	var endMu sync.Mutex
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range normal / workers {
				if err := echoOnce(s.Addr()); err != nil {
					errs <- err
				}
			}
			endMu.Lock()
			if now := time.Now(); now.After(normalEnd) {
				normalEnd = now
			}
			endMu.Unlock()
		}()
	}

	// One goroutine drives every slow client: a byte each per 200 ms,
	// and between bytes a look at which ones the server has closed.
	open := slow
	var firstClosed time.Time
	next := time.Now()
	deadline := time.Now().Add(hsTimeout + 5*time.Second)
	for open > 0 {
		now := time.Now()
		if now.After(deadline) {
			t.Fatalf("%d of %d slow clients still open %v after the handshake timeout", open, slow, 5*time.Second)
		}
		if !now.Before(next) {
			for _, l := range lorises {
				if l.closed.IsZero() {
					_, _ = l.nc.Write(req[l.sent : l.sent+1]) // fails once the server has closed
					l.sent++
				}
			}
			next = next.Add(200 * time.Millisecond)
		}
		for _, l := range lorises {
			if l.closed.IsZero() && peerClosed(t, l.rc) {
				l.closed = time.Now()
				open--
				if firstClosed.IsZero() {
					firstClosed = l.closed
				}
			}
		}
		time.Sleep(10 * time.Millisecond) // the slow clients' pace, not a synchronisation
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("normal client: %v", err)
	}
	if t.Failed() {
		t.FailNow()
	}
	if !normalEnd.Before(firstClosed) {
		t.Fatalf("the normal clients finished %v after the first slow client was closed", normalEnd.Sub(firstClosed))
	}
	var longest time.Duration
	for i, l := range lorises {
		lived := l.closed.Sub(l.opened)
		if lived < hsTimeout-300*time.Millisecond {
			t.Fatalf("slow client %d closed after %v, before the %v handshake timeout", i, lived, hsTimeout)
		}
		if l.sent >= len(req) {
			t.Fatalf("slow client %d sent its whole request", i)
		}
		longest = max(longest, lived)
	}
	t.Logf("%d normal clients served while %d slow ones waited; the last slow one lived %v", normal, slow, longest)
	checkFor(t, 5*time.Second, func() error {
		s.metricsFlushed()
		if got := s.m.HandshakeTimeout.Get(); got < slow {
			return errf(`wsedge_handshakes_total{result="timeout"} = %d, want >= %d`, got, slow)
		}
		return nil
	})
}

// TestPublishOverloaded: a publish to a channel with a subscriber on a
// loop whose inbox is over its bound is refused 503 "overloaded", and so
// is a subscribe that would push a join there; a full inbox on another
// loop does not matter, and publishing works again once the inbox drains.
func TestPublishOverloaded(t *testing.T) {
	s := protoServer(t, func(c *Config) { c.Loops = 2 })
	// Connect until both loops exist; the first client subscribes.
	var sub *pclient
	subLoop := -1
	for seen, tries := map[int]bool{}, 0; len(seen) < 2; tries++ {
		if tries > 100 {
			t.Fatal("could not place a client on each loop")
		}
		c := dialProto(t, s.Addr())
		c.ok(`{"op":"ping"}`) // the server has opened it
		i := loopOf(s, c.ws.LocalAddr())
		if i < 0 {
			t.Fatal("client on no loop")
		}
		if sub == nil {
			sub, subLoop = c, i
		}
		seen[i] = true
	}
	sub.ok(`{"op":"subscribe","channel":"chat:o"}`)
	pub := dialProto(t, s.Addr())
	loops := *s.byIdx.Load()
	fill := func(l *loop, on bool) {
		if on {
			l.inboxBytes.Add(inboxMaxBytes)
		} else {
			l.inboxBytes.Add(-inboxMaxBytes)
		}
	}
	other := loops[1-subLoop]
	fill(other, true)
	pub.ok(`{"op":"publish","channel":"chat:o","data":1}`)
	fill(other, false)

	fill(loops[subLoop], true)
	r := pub.call(`{"op":"publish","channel":"chat:o","data":2}`)
	if code, msg := errorOf(r); code != int(protocol.CodeUnavailable) || msg != protocol.MsgOverloaded {
		t.Fatalf("publish to an overloaded loop: %v, want 503 %q", r, protocol.MsgOverloaded)
	}
	r = pub.call(`{"op":"subscribe","channel":"chat:o"}`)
	if code, msg := errorOf(r); code != int(protocol.CodeUnavailable) || msg != protocol.MsgOverloaded {
		t.Fatalf("subscribe with a join to an overloaded loop: %v, want 503 %q", r, protocol.MsgOverloaded)
	}
	pub.ok(`{"op":"publish","channel":"chat:elsewhere","data":3}`) // no subscriber there
	if got := s.m.OverloadRefused.Get(); got != 2 {
		t.Fatalf("wsedge_overloaded_total = %d, want 2", got)
	}
	fill(loops[subLoop], false)
	pub.ok(`{"op":"publish","channel":"chat:o","data":4}`)
	got := sub.waitPushes(2, onChannel("chat:o"))
	if len(got) != 2 || got[0]["data"] != float64(1) || got[1]["data"] != float64(4) {
		t.Fatalf("subscriber got %v, want data 1 and 4", got)
	}
}

// TestHistoryCut: history and recovery replies are cut to the outbound
// bound: the newest publications that fit for a plain history, the
// oldest with since (recovered false), offsets contiguous.
func TestHistoryCut(t *testing.T) {
	const bound, size, n = 64 << 10, 10_000, 20
	s := protoServer(t, func(c *Config) { c.MaxOutboundBytes = bound })
	c := protoRaw(t, s.Addr())
	data := `"` + strings.Repeat("h", size) + `"`
	for i := range n {
		c.cmd(`{"id":%d,"op":"publish","channel":"chat:cut","data":%s}`, i+1, data)
		if m, p := c.reply(i + 1); m["ok"] != true {
			t.Fatalf("publish %d: %s", i+1, trim(p))
		}
	}
	// list checks a reply's publications: contiguous offsets from first,
	// fewer than all of them but as many as the bound holds, the reply
	// within the bound and one publication.
	list := func(m map[string]any, raw []byte, first float64) (res map[string]any, last float64) {
		t.Helper()
		res, _ = m["result"].(map[string]any)
		pubs, _ := res["publications"].([]any)
		if len(pubs) == 0 || len(pubs) >= n || (len(pubs)+1)*size <= bound {
			t.Fatalf("%d publications of %d bytes in a reply bounded at %d", len(pubs), size, bound)
		}
		if first < 0 {
			first = float64(n - len(pubs) + 1)
		}
		for i, p := range pubs {
			p := p.(map[string]any)
			if p["offset"] != first+float64(i) || len(p["data"].(string)) != size {
				t.Fatalf("publication %d: offset %v, want %v", i, p["offset"], first+float64(i))
			}
		}
		if len(raw) > bound+size+pubItemOverhead {
			t.Fatalf("reply of %d bytes, bound %d", len(raw), bound)
		}
		return res, first + float64(len(pubs)-1)
	}
	c.cmd(`{"id":100,"op":"history","channel":"chat:cut","limit":%d}`, n)
	m, raw := c.reply(100)
	res, last := list(m, raw, -1)
	if last != n || res["offset"] != float64(n) {
		t.Fatalf("history ends at %v, position %v; want both %d", last, res["offset"], n)
	}
	epoch, _ := res["epoch"].(string)
	c.cmd(`{"id":101,"op":"history","channel":"chat:cut","since":{"offset":0,"epoch":%q}}`, epoch)
	m, raw = c.reply(101)
	if res, _ = list(m, raw, 1); res["recovered"] != false {
		t.Fatalf("history since 0 cut: recovered %v, want false", res["recovered"])
	}
	c.cmd(`{"id":102,"op":"subscribe","channel":"chat:cut","since":{"offset":0,"epoch":%q}}`, epoch)
	m, raw = c.reply(102)
	if res, _ = list(m, raw, 1); res["recovered"] != false {
		t.Fatalf("recovery cut: recovered %v, want false", res["recovered"])
	}
	if got := s.m.Limited(metrics.LimitReplyCut).Get(); got != 3 {
		t.Fatalf(`wsedge_limited_total{reason="reply_cut"} = %d, want 3`, got)
	}
	// A reply within the bound is not cut.
	c.cmd(`{"id":103,"op":"history","channel":"chat:cut","limit":3}`)
	m, _ = c.reply(103)
	if pubs, _ := m["result"].(map[string]any)["publications"].([]any); len(pubs) != 3 {
		t.Fatalf("history limit 3: %d publications", len(pubs))
	}
	if got := s.m.Limited(metrics.LimitReplyCut).Get(); got != 3 {
		t.Fatalf(`wsedge_limited_total{reason="reply_cut"} = %d after an uncut reply, want 3`, got)
	}
}
