package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsedge/wsedge/frame"
)

// rssBytes reads a process's resident set size from /proc.
func rssBytes(t *testing.T, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read status: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// metricValue reads one series from the server's /metrics.
func metricValue(t *testing.T, admin, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("/metrics has no %s", series)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// dialNeverReading opens a TCP connection with a small receive buffer (set
// before connect, so the window is small from the start), upgrades it and
// returns it; the caller never reads from it.
func dialNeverReading(t *testing.T, addr string, subprotocol bool) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	req := "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	if subprotocol {
		req += "Sec-WebSocket-Protocol: wsedge.v1.json\r\n"
	}
	if _, err := nc.Write([]byte(req + "\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	if br.Buffered() > 0 {
		t.Fatalf("%d bytes behind the 101", br.Buffered())
	}
	return nc
}

// TestNeverReadingFloodBounded is the reproduction: a connection
// that never reads sends requests whose replies are large. The server must
// stop reading it once its unsent replies pass --max-outbound-bytes, close
// it (1008) after --outbound-timeout, keep its own memory small, and serve
// everybody else as if nothing happened.
func TestNeverReadingFloodBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("floods a real server for several seconds")
	}
	const maxRSS = 64 << 20
	cases := []struct {
		name    string
		args    []string
		prepare func(t *testing.T, p *proc)
		request func(i int) []byte
		count   int
	}{{
		// 100 publications of 60 KB make each history reply 6 MB
		// before it is cut to the outbound bound.
		name: "history",
		args: []string{"--command-rate", "0"},
		prepare: func(t *testing.T, p *proc) {
			d := websocket.Dialer{Subprotocols: []string{"wsedge.v1.json"}}
			ws, _, err := d.Dial("ws://"+p.ws+"/ws", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer ws.Close()
			data := `"` + strings.Repeat("h", 60_000) + `"`
			for i := range 100 {
				msg := fmt.Sprintf(`{"id":%d,"op":"publish","channel":"chat:x","data":%s}`, i+1, data)
				if err := ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
					t.Fatal(err)
				}
				if _, reply, err := ws.ReadMessage(); err != nil || !bytes.Contains(reply, []byte(`"ok":true`)) {
					t.Fatalf("publish %d: %s %v", i, reply, err)
				}
			}
		},
		request: func(i int) []byte {
			return []byte(fmt.Sprintf(`{"id":%d,"op":"history","channel":"chat:x","limit":100}`, i+1))
		},
		count: 100_000,
	}, {
		// Echoes of 60 KB messages, in echo mode.
		name: "echo",
		args: []string{"--echo"},
		request: func(int) []byte {
			return bytes.Repeat([]byte("e"), 60_000)
		},
		count: 20_000,
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := startServe(t, "", append([]string{"--outbound-timeout", "2s", "--close-timeout", "500ms"}, tc.args...)...)
			if tc.prepare != nil {
				tc.prepare(t, p)
			}
			pid := p.cmd.Process.Pid
			before := rssBytes(t, pid)

			flood := dialNeverReading(t, p.ws, tc.name != "echo")
			var sent atomic.Int64
			floodDone := make(chan error, 1)
			go func() {
				_ = flood.SetWriteDeadline(time.Now().Add(60 * time.Second))
				var buf []byte
				for i := range tc.count {
					buf = frame.AppendClientFrame(buf[:0], true, frame.OpText, tc.request(i), [4]byte{1, 2, 3, 4})
					if _, err := flood.Write(buf); err != nil {
						floodDone <- err
						return
					}
					sent.Add(1)
				}
				floodDone <- nil
			}()

			// A normal client keeps working the whole time.
			d := websocket.Dialer{}
			if tc.name != "echo" {
				d.Subprotocols = []string{"wsedge.v1.json"}
			}
			normal, _, err := d.Dial("ws://"+p.ws+"/ws", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer normal.Close()
			var peak int64
			rounds := 0
			deadline := time.Now().Add(45 * time.Second)
		wait:
			for {
				select {
				case err := <-floodDone:
					if err == nil {
						t.Fatalf("all %d requests were taken by a server that should have stopped reading", tc.count)
					}
					break wait
				default:
				}
				if time.Now().After(deadline) {
					t.Fatalf("flood still running after 45 s (%d sent)", sent.Load())
				}
				msg := fmt.Sprintf(`{"id":%d,"op":"ping"}`, rounds+1)
				_ = normal.SetReadDeadline(time.Now().Add(2 * time.Second))
				_ = normal.SetWriteDeadline(time.Now().Add(2 * time.Second))
				if err := normal.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
					t.Fatalf("normal client write after %d rounds: %v", rounds, err)
				}
				if _, reply, err := normal.ReadMessage(); err != nil {
					t.Fatalf("normal client after %d rounds: %v", rounds, err)
				} else if tc.name != "echo" && !bytes.Contains(reply, []byte(`"ok":true`)) {
					t.Fatalf("normal client reply %s", reply)
				}
				rounds++
				peak = max(peak, rssBytes(t, pid))
			}
			t.Logf("%d of %d requests written before the server stopped reading and closed; RSS %d MiB before, peak %d MiB; %d normal round trips",
				sent.Load(), tc.count, before>>20, peak>>20, rounds)
			if peak > maxRSS {
				t.Fatalf("server RSS peaked at %d MiB, want under %d MiB", peak>>20, maxRSS>>20)
			}
			if got := metricValue(t, p.admin, `wsedge_read_paused_total`); got < 1 {
				t.Fatalf("wsedge_read_paused_total = %v, want >= 1", got)
			}
			if got := metricValue(t, p.admin, `wsedge_limited_total{reason="outbound_close"}`); got != 1 {
				t.Fatalf(`wsedge_limited_total{reason="outbound_close"} = %v, want 1`, got)
			}
		})
	}
}

// TestHandshakeFlood: 20,000 connection attempts in a burst from one
// address, against a server with a per-address handshake rate. The server
// stays up, answers every attempt with 101 or 429 (never a reset or a
// hang), admits about what the rate allows, and serves normally afterwards.
func TestHandshakeFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("20,000 connections")
	}
	p := startServe(t, "", "--echo", "--handshake-rate-per-ip", "2000", "--handshake-burst-per-ip", "100")
	const attempts, workers = 20_000, 64
	var upgraded, limited, other atomic.Int64
	req := []byte("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	start := time.Now()
	done := make(chan struct{})
	var next atomic.Int64
	for range workers {
		go func() {
			defer func() { done <- struct{}{} }()
			for next.Add(1) <= attempts {
				c, err := net.DialTimeout("tcp", p.ws, 5*time.Second)
				if err != nil {
					other.Add(1)
					continue
				}
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Write(req); err != nil {
					other.Add(1)
					c.Close()
					continue
				}
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				switch {
				case err != nil:
					other.Add(1)
				case resp.StatusCode == http.StatusSwitchingProtocols:
					upgraded.Add(1)
				case resp.StatusCode == http.StatusTooManyRequests:
					limited.Add(1)
				default:
					other.Add(1)
				}
				c.Close()
			}
		}()
	}
	for range workers {
		<-done
	}
	took := time.Since(start)
	t.Logf("%d attempts in %v: %d upgraded, %d refused 429, %d other", attempts, took.Round(time.Millisecond),
		upgraded.Load(), limited.Load(), other.Load())
	if other.Load() != 0 {
		t.Fatalf("%d attempts got neither 101 nor 429", other.Load())
	}
	// The bucket admits its burst plus the rate over the run (with slack
	// for the time the last answers took).
	if max := int64(100 + 2000*took.Seconds()*1.1 + 50); upgraded.Load() > max || upgraded.Load() < 100 {
		t.Fatalf("%d upgraded in %v, want between the burst (100) and %d", upgraded.Load(), took, max)
	}
	if got := metricValue(t, p.admin, `wsedge_rejected_total{reason="ip_rate"}`); int64(got) != limited.Load() {
		t.Fatalf(`rejected_total{reason="ip_rate"} = %v, clients saw %d`, got, limited.Load())
	}
	// Still serving, once the bucket has refilled (poll, bounded).
	deadline := time.Now().Add(5 * time.Second)
	for {
		ws, resp, err := websocket.DefaultDialer.Dial("ws://"+p.ws+"/ws", nil)
		if err == nil {
			err = ws.WriteMessage(websocket.TextMessage, []byte("after"))
			if err == nil {
				var msg []byte
				_, msg, err = ws.ReadMessage()
				if err == nil && string(msg) != "after" {
					err = fmt.Errorf("echo %q", msg)
				}
			}
			ws.Close()
			if err != nil {
				t.Fatal(err)
			}
			break
		}
		if resp == nil || resp.StatusCode != http.StatusTooManyRequests || time.Now().After(deadline) {
			t.Fatalf("after the flood: %v %v", resp, err)
		}
		time.Sleep(20 * time.Millisecond) // the bucket refills with time: poll
	}
}
