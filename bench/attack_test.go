package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsedge/wsedge/frame"
)

func TestRespScanChunked(t *testing.T) {
	// What a server sends an attacker, cut at every point: the outcome and
	// the status never depend on how the bytes arrive.
	resp101 := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
	big := bytes.Repeat([]byte("y"), 70_000)                                       // 64-bit length form
	frames := frame.AppendFrame(nil, frame.OpText, bytes.Repeat([]byte("a"), 200)) // 16-bit form
	frames = frame.AppendFrame(frames, frame.OpBinary, big)
	frames = frame.AppendFrame(frames, frame.OpPing, []byte("p"))
	for _, tc := range []struct {
		name, stream string
		status       int
		want         string
	}{
		{"close after frames", resp101 + string(frame.AppendClose(frames, frame.CloseTooLarge, "too big")), 101, "close 1009"},
		{"close without code", resp101 + string(frame.AppendFrame(nil, frame.OpClose, nil)), 101, "close 1005"},
		{"refused", "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", 503, "http 503"},
		{"not http", "SSH-2.0-OpenSSH\r\n\r\n", 0, "error bad-response"},
		{"open, no close yet", resp101 + string(frames), 101, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			check := func(chunks [][]byte) {
				t.Helper()
				var s respScan
				got := ""
				for _, c := range chunks {
					if out := s.feed(c); out != "" && got == "" {
						got = out
					}
				}
				if got != tc.want || s.status != tc.status {
					t.Fatalf("chunks %d: outcome %q status %d, want %q %d", len(chunks), got, s.status, tc.want, tc.status)
				}
			}
			b := []byte(tc.stream + "trailing bytes are ignored")
			if tc.want == "" {
				b = []byte(tc.stream)
			}
			check([][]byte{b})
			for cut := 1; cut < len(b); cut += 1 + cut/64 {
				check([][]byte{b[:cut], b[cut:]})
			}
			rng := rand.New(rand.NewPCG(5, 6))
			for range 20 {
				var chunks [][]byte
				for rest := b; len(rest) > 0; {
					n := min(len(rest), 1+rng.IntN(20))
					chunks = append(chunks, rest[:n])
					rest = rest[n:]
				}
				check(chunks)
			}
		})
	}
	// A response header that never ends is given up at the bound.
	var s respScan
	if out := s.feed(bytes.Repeat([]byte("X"), maxResponseHeader+1)); out != "error bad-response" {
		t.Fatalf("endless header: %q", out)
	}
}

func TestAppendMaskedHeader(t *testing.T) {
	// Every length in its shortest form, masked with the key 0.
	for _, tc := range []struct {
		n    int64
		size int
	}{{0, 6}, {125, 6}, {126, 8}, {65535, 8}, {65536, 14}, {math.MaxInt64, 14}} {
		b := appendMaskedHeader(nil, false, frame.OpContinuation, tc.n)
		h, whole := frame.ParseHeader(b)
		if !whole || h.Size != tc.size || len(b) != tc.size || h.Length != tc.n || !h.Masked || h.Mask != [4]byte{} || h.Fin || h.Op != frame.OpContinuation {
			t.Fatalf("length %d: %d bytes, header %+v", tc.n, len(b), h)
		}
	}
}

// newTestAttackLoop returns an attack loop of worker 0 of 1 for cfg,
// without starting its goroutine.
func newTestAttackLoop(t *testing.T, cfg Config) *attackLoop {
	t.Helper()
	tg, err := resolveTarget(cfg.URL)
	if err != nil {
		t.Fatal(err)
	}
	w := &worker{cfg: cfg, t: tg, count: 1}
	l, err := newLoop(w, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(l.epfd); unix.Close(l.efd) })
	l.atk = newAttackLoop(l)
	return l.atk
}

// splitFrames parses client frames back to back: their headers and
// (mask key 0) payloads.
func splitFrames(t *testing.T, b []byte) (hs []frame.Header, payloads [][]byte) {
	t.Helper()
	for len(b) > 0 {
		h, whole := frame.ParseHeader(b)
		if !whole || !h.Masked || h.Mask != [4]byte{} {
			t.Fatalf("bad frame header %+v (whole %v) at %q", h, whole, b[:min(len(b), 20)])
		}
		end := int64(h.Size) + min(h.Length, int64(len(b)-h.Size))
		hs, payloads = append(hs, h), append(payloads, b[h.Size:end])
		b = b[end:]
	}
	return hs, payloads
}

func TestAttackTemplates(t *testing.T) {
	cfg := Defaults()
	cfg.Mode, cfg.URL, cfg.Channel = ModeBroadcast, "ws://127.0.0.1:9/ws", "bench:h"
	cfg.Attack.HistoryLimit, cfg.Attack.OversizeLen = 500, 1<<20
	a := newTestAttackLoop(t, cfg)
	req := a.pre[kindSlowloris]
	if !bytes.HasPrefix(req, []byte("GET /ws HTTP/1.1\r\n")) || !bytes.Contains(req, []byte("Sec-WebSocket-Protocol: "+Subprotocol)) ||
		!bytes.HasSuffix(req, []byte("\r\n\r\n")) || !bytes.Equal(a.pre[kindChurn], req) {
		t.Fatalf("upgrade request %q", req)
	}
	after := func(k int) []byte {
		if !bytes.HasPrefix(a.pre[k], req) {
			t.Fatalf("%s: preamble does not start with the request", kindNames[k])
		}
		return a.pre[k][len(req):]
	}
	type command struct {
		ID          int
		Op, Channel string
		Limit       int
	}
	hs, ps := splitFrames(t, after(kindNoRead))
	var sub command
	if len(hs) != 1 || hs[0].Op != frame.OpText || json.Unmarshal(ps[0], &sub) != nil || sub != (command{1, "subscribe", "bench:h", 0}) {
		t.Fatalf("never-read subscribe: %+v %q", hs, ps)
	}
	hs, _ = splitFrames(t, after(kindOversize))
	if len(hs) != 1 || !hs[0].Fin || hs[0].Op != frame.OpText || hs[0].Length != 1<<20 {
		t.Fatalf("oversize header %+v", hs)
	}
	hs, ps = splitFrames(t, after(kindOverflow))
	if len(hs) != 2 || hs[0].Fin || hs[0].Op != frame.OpText || string(ps[0]) != "x" ||
		!hs[1].Fin || hs[1].Op != frame.OpContinuation || hs[1].Length != math.MaxInt64 {
		t.Fatalf("overflow headers %+v %q", hs, ps)
	}
	// The flood block is whole history requests, each a valid command.
	hs, ps = splitFrames(t, a.flood)
	if len(hs)*a.floodReq != len(a.flood) || len(a.flood) < streamBlock {
		t.Fatalf("flood block of %d bytes holds %d requests of %d", len(a.flood), len(hs), a.floodReq)
	}
	var hist command
	if json.Unmarshal(ps[len(ps)-1], &hist) != nil || hist.Op != "history" || hist.Channel != "bench:h" || hist.Limit != 500 || hist.ID < 2 {
		t.Fatalf("flood request %q", ps[0])
	}
	hs, ps = splitFrames(t, a.closeFrame)
	if len(hs) != 1 || hs[0].Op != frame.OpClose || !bytes.Equal(ps[0], []byte{0x03, 0xe8}) {
		t.Fatalf("close frame %+v %q", hs, ps)
	}
}

func TestAttackStream(t *testing.T) {
	// An oversize attacker streams at most StreamMax and never past its
	// declared length; a flood's stream wraps around its block.
	cfg := Defaults()
	cfg.URL = "ws://127.0.0.1:9/ws"
	cfg.Attack.StreamMax, cfg.Attack.OversizeLen = 40_000, 30_000
	a := newTestAttackLoop(t, cfg)
	a.on = true
	for _, tc := range []struct {
		kind uint8
		want int64
	}{{kindOversize, 30_000}, {kindOverflow, 40_000}} {
		c := &attacker{kind: tc.kind}
		for {
			b := a.stream(c)
			if len(b) == 0 {
				break
			}
			c.streamed += int64(min(len(b), 7000))
		}
		if c.streamed != tc.want {
			t.Fatalf("%s streamed %d, want %d", kindNames[tc.kind], c.streamed, tc.want)
		}
	}
	c := &attacker{kind: kindFlood, streamed: int64(len(a.flood)) + 3}
	if b := a.stream(c); !bytes.Equal(b, a.flood[3:]) {
		t.Fatalf("flood stream does not wrap: %d bytes", len(b))
	}
	if b := a.stream(&attacker{kind: kindChurn}); b != nil {
		t.Fatalf("churn streams %d bytes", len(b))
	}
}

func TestAttackPumpBudget(t *testing.T) {
	// 20 floods whose sockets take everything: each streams pumpTurn per
	// turn, the loop tickBytes per tick, and the ones a tick's budget did
	// not reach go first in the next.
	cfg := Defaults()
	cfg.URL = "ws://127.0.0.1:9/ws"
	a := newTestAttackLoop(t, cfg)
	a.start(0)
	cs := make([]*attacker, 20)
	for i := range cs {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
		_ = unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20)
		cs[i] = &attacker{fd: fds[0], kind: kindFlood, state: atOpen, pre: a.pre[kindFlood]}
		a.conns[fds[0]] = cs[i]
	}
	streamed := func() (per []int64, sum int64) {
		for _, c := range cs {
			per = append(per, c.streamed/pumpTurn)
			sum += c.streamed
		}
		return per, sum
	}
	for _, c := range cs {
		a.pump(c)
	}
	const full = tickBytes / pumpTurn // attackers one tick serves
	per, sum := streamed()
	if sum != tickBytes || per[0] != 1 || per[full-1] != 1 || per[full] != 0 || len(a.ready) != 20 {
		t.Fatalf("first turns: %v turns, %d bytes, %d ready", per, sum, len(a.ready))
	}
	a.tick(a.nextTick)
	if per, sum = streamed(); sum != 2*tickBytes || per[0] != 2 || per[full] != 0 {
		t.Fatalf("tick 1: %v turns, %d bytes", per, sum)
	}
	a.tick(a.nextTick)
	if per, sum = streamed(); sum != 3*tickBytes || per[full] != 1 || per[19] != 1 || per[0] != 3 {
		t.Fatalf("tick 2 (the ones left out go first): %v turns, %d bytes", per, sum)
	}
	var whole int64 // requests each attacker wrote whole
	for _, c := range cs {
		whole += c.streamed / int64(a.floodReq)
	}
	if got := a.kinds[kindFlood].stats.Requests; got != whole {
		t.Fatalf("requests %d, want %d", got, whole)
	}
}

func TestAttackShares(t *testing.T) {
	// Populations are split over the workers exactly; rates evenly, each
	// with a Hold's worth of connections open at most.
	cfg := Defaults()
	cfg.URL = "ws://127.0.0.1:9/ws"
	cfg.Attack.Slowloris, cfg.Attack.Churn, cfg.Attack.Hold = 7, 500, 2*time.Second
	tg, _ := resolveTarget(cfg.URL)
	sum := 0
	for i := range 3 {
		w := &worker{cfg: cfg, t: tg, index: i, count: 3}
		l, err := newLoop(w, 0)
		if err != nil {
			t.Fatal(err)
		}
		a := newAttackLoop(l)
		unix.Close(l.epfd)
		unix.Close(l.efd)
		sum += a.kinds[kindSlowloris].want
		ch := a.kinds[kindChurn]
		if d := ch.interval - int64(time.Second)*3/500; ch.cap != 334 || d < -1 || d > 1 || a.kinds[kindFlood].want != 0 || a.kinds[kindFlood].cap != 0 {
			t.Fatalf("worker %d churn %+v", i, ch)
		}
	}
	if sum != 7 {
		t.Fatalf("slowloris shares sum to %d, want 7", sum)
	}
	if got := cfg.Attack.maxLive(); got != 7+1000 {
		t.Fatalf("maxLive %d, want 1007", got)
	}
}

func TestAttackStatsMerge(t *testing.T) {
	w0 := []AttackStats{{Kind: "slowloris", Dialed: 3, Outcomes: map[string]int64{"eof": 2, "held": 1}}}
	w1 := []AttackStats{
		{Kind: "churn", Dialed: 5, Upgraded: 5, Outcomes: map[string]int64{"close 1000": 5}},
		{Kind: "slowloris", Dialed: 2, BytesOut: 9, Outcomes: map[string]int64{"eof": 1, "http 429": 1}},
	}
	got := mergeAttacks(mergeAttacks(nil, w0), w1)
	if len(got) != 2 || got[0].Kind != "slowloris" || got[0].Dialed != 5 || got[0].outcomeTotal() != 5 ||
		got[0].Outcomes["eof"] != 3 || got[1].Kind != "churn" || got[1].Upgraded != 5 {
		t.Fatalf("merged %+v", got)
	}
	if w0[0].Outcomes["eof"] != 2 {
		t.Fatal("merging changed its source")
	}
	if s := got[0].String(); !strings.HasSuffix(s, "→ eof 3, held 1, http 429 1") || !strings.HasPrefix(s, "slowloris") {
		t.Fatalf("line %q", s)
	}
}

func TestErrOutcome(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("write: %w", unix.ECONNRESET), "reset"},
		{unix.EPIPE, "reset"},
		{fmt.Errorf("connect: %w", unix.ECONNREFUSED), "error ECONNREFUSED"},
		{errors.New("odd"), "error odd"},
	} {
		if got := errOutcome(tc.err); got != tc.want {
			t.Fatalf("%v: %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestParseBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{"65536", 65536, false}, {"4G", 4 << 30, false}, {"512MiB", 512 << 20, false}, {"1kb", 1024, false},
		{" 2 GiB ", 2 << 30, false}, {"0", 0, false}, {"", 0, true}, {"-1", 0, true}, {"5i", 0, true},
		{"1.5G", 0, true}, {"9999999999G", 0, true},
	} {
		got, err := ParseBytes(tc.in)
		if tc.bad != (err != nil) || got != tc.want {
			t.Fatalf("ParseBytes(%q) = %d, %v", tc.in, got, err)
		}
		if err != nil && !errors.Is(err, ErrBadSize) {
			t.Fatalf("ParseBytes(%q): %v is not ErrBadSize", tc.in, err)
		}
	}
}

func TestServerSamples(t *testing.T) {
	sv := &ServerStats{Goroutines: -1, RSSBound: 100 << 20}
	for _, s := range []serverSample{
		{rss: 50 << 20, goroutines: 13},
		{err: errors.New("timeout"), goroutines: -1},
		{rss: 120 << 20, goroutines: 15},
		{rss: 90 << 20, goroutines: 12},
		{goroutines: -1}, // nothing read
	} {
		sv.add(s)
	}
	if sv.Samples != 3 || sv.SampleErrors != 1 || sv.RSSPeak != 120<<20 || sv.GoroutinesMin != 12 || sv.GoroutinesMax != 15 || sv.Exited {
		t.Fatalf("samples: %+v", sv)
	}
	if note := sv.boundNote(); !strings.Contains(note, "OVER") {
		t.Fatalf("bound note %q", note)
	}
	r := &runState{cfg: &Config{AbortRSS: 200 << 20}, res: &Result{Server: sv}, started: time.Now()}
	if r.abort() || r.res.Aborted != "" {
		t.Fatal("aborted under --abort-rss")
	}
	r.cfg.AbortRSS = 100 << 20
	if !r.abort() || !strings.Contains(r.res.Aborted, "--abort-rss") || r.abort() {
		t.Fatalf("abort over --abort-rss: %q (and only once)", r.res.Aborted)
	}
	sv.add(serverSample{exited: true})
	r = &runState{cfg: &Config{}, res: &Result{Server: sv}, started: time.Now()}
	if !sv.Exited || !r.abort() || !strings.Contains(r.res.Aborted, "exited") {
		t.Fatalf("exit: %+v %q", sv, r.res.Aborted)
	}
	r = &runState{cfg: &Config{}, res: &Result{Server: &ServerStats{Exited: true}}, started: time.Now(), stopped: time.Now()}
	if r.abort() {
		t.Fatal("aborted after the measured phase ended")
	}

	// /proc/<pid>/stat states: running, sleeping alive; zombie, dead not.
	for stat, alive := range map[string]bool{"7 (a) b) R 1": true, "7 (x) S 1": true, "7 (x) Z 1": false, "7 (x) X 1": false, "junk": false} {
		if statAlive([]byte(stat)) != alive {
			t.Fatalf("statAlive(%q) != %v", stat, alive)
		}
	}
}

func TestReadCounters(t *testing.T) {
	page := "# HELP x\n" +
		"wsedge_accepted_total 10\n" +
		"wsedge_handshakes_total{result=\"timeout\"} 3\n" +
		"wsedge_inbox_overflow_total{shard=\"0\"} 4\n" +
		"wsedge_connections 50\n" +
		"process_resident_memory_bytes 1.2e+07\n" +
		"go_goroutines 13\n"
	next := page
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, next) }))
	defer srv.Close()
	before, err := readCounters(srv.URL)
	if err != nil || len(before) != 2 || before[`wsedge_handshakes_total{result="timeout"}`] != 3 {
		t.Fatalf("counters %v %v", before, err)
	}
	next = strings.ReplaceAll(strings.ReplaceAll(page, "_accepted_total 10", "_accepted_total 25"), "connections 50", "connections 90")
	after, err := readCounters(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if g := counterGrowth(before, after); len(g) != 1 || g["wsedge_accepted_total"] != 15 {
		t.Fatalf("growth %v", g)
	}
	s := readServerSample(0, srv.URL)
	if s.err != nil || s.rss != 12_000_000 || s.goroutines != 13 || s.exited {
		t.Fatalf("sample %+v", s)
	}
}
