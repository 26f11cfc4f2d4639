package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// childEnv makes the test binary act as a bench child process, so tests can
// run multi-process benches without building wsedge.
const childEnv = "WSEDGE_BENCH_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		if err := RunChild(context.Background(), os.Stdin, os.Stdout); err != nil {
			os.Stderr.WriteString("bench test child: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestHistogramMergeAcrossProcesses(t *testing.T) {
	// Three "processes" record disjoint samples; their encoded histograms
	// travel through the JSON messages and must merge into exactly the
	// histogram of all samples.
	rng := rand.New(rand.NewPCG(1, 2))
	all := newHist()
	var encoded []string
	for p := 0; p < 3; p++ {
		h := newHist()
		for i := 0; i < 20000; i++ {
			v := int64(rng.ExpFloat64()*float64(200*time.Microsecond)) + int64(p)*int64(time.Millisecond)
			record(h, v)
			record(all, v)
		}
		line, err := json.Marshal(message{Type: msgDone, Lat: encodeHist(h)})
		if err != nil {
			t.Fatal(err)
		}
		var m message
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatal(err)
		}
		encoded = append(encoded, m.Lat)
	}
	merged, err := mergeEncoded(encoded...)
	if err != nil {
		t.Fatal(err)
	}
	if !merged.Equals(all) {
		t.Fatalf("merged histogram differs: count %d vs %d, p99 %d vs %d",
			merged.TotalCount(), all.TotalCount(), merged.ValueAtQuantile(99), all.ValueAtQuantile(99))
	}
	if got, want := summarize(merged), summarize(all); got != want {
		t.Fatalf("summary %+v, want %+v", got, want)
	}
}

func TestRecordClamps(t *testing.T) {
	h := newHist()
	record(h, -5)
	record(h, 10*histHighest)
	if h.TotalCount() != 2 {
		t.Fatalf("count = %d, want 2 (out-of-range samples kept)", h.TotalCount())
	}
	if h.Max() < histHighest {
		t.Fatalf("max = %d, want >= %d", h.Max(), int64(histHighest))
	}
}

func TestPacerRate(t *testing.T) {
	// 50 senders at 100/s for 2 s of simulated time, woken at irregular
	// intervals up to 7 ms: every sender keeps its rate exactly (open loop),
	// and lateness never exceeds the longest gap between wakeups.
	const (
		senders = 50
		period  = int64(10 * time.Millisecond)
		span    = int64(2 * time.Second)
		maxGap  = int64(7 * time.Millisecond)
	)
	var p pacer
	items := make([]*pacedItem, senders)
	counts := map[*pacedItem]int{}
	for i := range items {
		items[i] = &pacedItem{idx: -1, period: period, next: int64(i) * period / senders}
		p.push(items[i])
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var maxLate int64
	now := int64(0)
	for now < span {
		now += 1 + rng.Int64N(maxGap)
		if now >= span {
			now = span - 1
		}
		p.due(now, func(it *pacedItem, late int64) {
			counts[it]++
			maxLate = max(maxLate, late)
		})
		if now == span-1 {
			break
		}
	}
	for i, it := range items {
		want := int((span-1-int64(i)*period/senders)/period) + 1
		if counts[it] != want {
			t.Fatalf("sender %d sent %d, want %d", i, counts[it], want)
		}
	}
	if maxLate >= maxGap {
		t.Fatalf("max lateness %v, want < %v", time.Duration(maxLate), time.Duration(maxGap))
	}
	// Removing a sender stops it; the heap stays ordered.
	p.remove(items[7])
	p.remove(items[7])
	if p.len() != senders-1 || items[7].idx != -1 {
		t.Fatalf("remove: len %d idx %d", p.len(), items[7].idx)
	}
	last := int64(-1)
	for p.len() > 0 {
		it := p.peek()
		if it.next < last {
			t.Fatalf("heap out of order: %d after %d", it.next, last)
		}
		last = it.next
		p.remove(it)
	}
}

func TestShareStart(t *testing.T) {
	// Consecutive parts tile 0..n without gaps or overlap.
	for _, tc := range []struct{ n, k int }{{10, 3}, {19000, 2}, {1, 4}, {7, 7}} {
		next := 0
		for i := 0; i < tc.k; i++ {
			if got := shareStart(tc.n, i, tc.k); got != next {
				t.Fatalf("shareStart(%d, %d, %d) = %d, want %d", tc.n, i, tc.k, got, next)
			}
			next += share(tc.n, i, tc.k)
		}
	}
}

func TestPublisherChannels(t *testing.T) {
	// 5 channels over 2 publishers: publisher 0 owns 0, 2, 4 and publisher
	// 1 owns 1, 3, each in turn; the per-channel sequence is n/count+1.
	cfg := Defaults()
	cfg.Mode, cfg.Channels, cfg.Publishers, cfg.Channel = ModeBroadcast, 5, 2, "bench:x"
	if cfg.publishers() != 2 || cfg.ChannelName(0) != "bench:x-1" || cfg.ChannelName(4) != "bench:x-5" {
		t.Fatalf("publishers %d names %q %q", cfg.publishers(), cfg.ChannelName(0), cfg.ChannelName(4))
	}
	p0 := &conn{ch: 0, pubStride: 2, pubCount: int32(share(5, 0, 2))}
	p1 := &conn{ch: 1, pubStride: 2, pubCount: int32(share(5, 1, 2))}
	var got []int
	for n := uint64(0); n < 4; n++ {
		got = append(got, pubChannel(p0, n), pubChannel(p1, n))
	}
	if want := []int{0, 1, 2, 3, 4, 1, 0, 3}; !reflect.DeepEqual(got, want) {
		t.Fatalf("channels %v, want %v", got, want)
	}
	cfg.Publishers, cfg.Rate = 0, 30_000
	if cfg.publishers() != 5 {
		t.Fatalf("auto publishers for 150k/s over 5 channels: %d, want 5", cfg.publishers())
	}
}

func TestShare(t *testing.T) {
	for _, tc := range []struct{ n, k int }{{10, 3}, {19000, 2}, {1, 4}, {0, 2}} {
		sum := 0
		for i := 0; i < tc.k; i++ {
			s := share(tc.n, i, tc.k)
			if s < tc.n/tc.k || s > tc.n/tc.k+1 {
				t.Fatalf("share(%d, %d, %d) = %d", tc.n, i, tc.k, s)
			}
			sum += s
		}
		if sum != tc.n {
			t.Fatalf("shares of %d over %d sum to %d", tc.n, tc.k, sum)
		}
	}
}

func TestResultJSONRoundTrip(t *testing.T) {
	h := newHist()
	for i := int64(1); i <= 1000; i++ {
		record(h, i*int64(time.Microsecond))
	}
	r := &Result{
		Label: "wsedge", Mode: ModeBroadcast, URL: "ws://127.0.0.1:1/ws", Command: "wsedge bench broadcast",
		Date: time.Date(2026, 11, 25, 15, 0, 0, 0, time.UTC), Machine: machine(),
		Conns: 10, Procs: 2, Loops: 1, Rate: 10, Size: 64, Duration: 1.5,
		Stats:     Stats{Connected: 11, Sent: 15, Received: 150, Unique: 150, Subscribed: 10, PublishOK: 15, LastError: "x"},
		Published: 15, Expected: 150, Latency: summarize(h), LatencyHist: encodeHist(h),
		Server: &ServerStats{PID: 1, RSSBefore: 1 << 20, RSSAfter: 2 << 20, RSSPerConn: 1024, Threads: 4, Goroutines: -1},
	}
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	// Two objects back to back and an array: all are read.
	text := buf.String()
	in := text + text + "[" + text + "," + text + "]"
	rs, err := ReadResults(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 4 {
		t.Fatalf("read %d results, want 4", len(rs))
	}
	for _, got := range rs {
		if !reflect.DeepEqual(got, r) {
			t.Fatalf("round trip differs:\n got %+v\nwant %+v", got, r)
		}
	}
	back, err := decodeHist(rs[0].LatencyHist)
	if err != nil || !back.Equals(h) {
		t.Fatalf("histogram did not survive the round trip: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(*Config)
		field string // "" = valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"remote refused", func(c *Config) { c.URL = "ws://10.1.2.3:80/ws" }, "allow-remote"},
		{"remote allowed", func(c *Config) { c.URL = "ws://10.1.2.3:80/ws"; c.AllowRemote = true }, ""},
		{"wss", func(c *Config) { c.URL = "wss://127.0.0.1:80/ws" }, "url"},
		{"too many per proc", func(c *Config) { c.Conns = 19000 * 2 }, "--procs 2"},
		{"spread", func(c *Config) { c.Conns = 38000; c.Procs = 2 }, ""},
		{"echo too small", func(c *Config) { c.Size = 8 }, "size"},
		{"no duration", func(c *Config) { c.Duration = 0 }, "duration"},
		{"too long", func(c *Config) { c.Duration = 2 * time.Hour }, "duration"},
		{"ingest", func(c *Config) { c.Mode = ModeIngest }, "not available yet"},
		{"unknown mode", func(c *Config) { c.Mode = "x" }, "mode"},
		{"broadcast rate", func(c *Config) { c.Mode = ModeBroadcast; c.Rate = 0 }, "rate"},
		{"channel", func(c *Config) { c.Mode = ModeBroadcast; c.Channel = "nocolon" }, "channel"},
		{"channels", func(c *Config) { c.Mode = ModeBroadcast; c.Channels = 0 }, "channels"},
		{"channels echo", func(c *Config) { c.Channels = 2 }, "only for broadcast"},
		{"publishers", func(c *Config) { c.Mode = ModeBroadcast; c.Channels = 2; c.Publishers = 3 }, "publishers"},
		{"channel rate", func(c *Config) { c.Mode = ModeBroadcast; c.Channels = 1000; c.Rate = 2000 }, "rate"},
		{"slow per proc", func(c *Config) { c.Mode = ModeBroadcast; c.Conns = 19000; c.Slow = 1000 }, "--procs 2"},
		{"ping rate", func(c *Config) { c.Mode = ModeBroadcast; c.PingRate = 10 }, ""},
		{"ping rate echo", func(c *Config) { c.PingRate = 10 }, "only for broadcast"},
		{"ping rate range", func(c *Config) { c.Mode = ModeBroadcast; c.PingRate = 5000 }, "ping-rate"},
		{"attackers", func(c *Config) {
			c.Attack.Slowloris, c.Attack.NoRead, c.Attack.Flood = 2000, 1000, 100
			c.Attack.Oversize, c.Attack.Overflow, c.Attack.Churn = 5, 5, 500
		}, ""},
		{"slowloris", func(c *Config) { c.Attack.Slowloris = -1 }, "slowloris"},
		{"churn rate", func(c *Config) { c.Attack.Churn = 1e6 }, "churn"},
		{"oversize NaN", func(c *Config) { c.Attack.Oversize = math.NaN() }, "oversize"},
		{"oversize len", func(c *Config) { c.Attack.OversizeLen = 100 }, "oversize-len"},
		{"hold", func(c *Config) { c.Attack.Hold = time.Millisecond }, "attack-hold"},
		{"attack sources", func(c *Config) { c.Attack.Sources = 0 }, "attack-sources"},
		{"stream max", func(c *Config) { c.Attack.StreamMax = 2 << 30 }, "stream-max"},
		{"no-read channel", func(c *Config) { c.Attack.NoRead = 1; c.Channel = "x" }, "channel"},
		{"token", func(c *Config) { c.Auth.Token = "a.b.c"; c.Auth.In = TokenInQuery }, ""},
		{"token key", func(c *Config) {
			c.Mode, c.Auth.Key, c.Auth.Subs, c.Auth.In = ModeIdle, "k", []string{"user:{sub}"}, TokenInSubprotocol
		}, ""},
		{"token and key", func(c *Config) { c.Auth.Token, c.Auth.Key = "a.b.c", "k" }, "not both"},
		{"claims without key", func(c *Config) { c.Auth.Token, c.Auth.Channels = "a.b.c", []string{"chat:*"} }, "token-key"},
		{"token in", func(c *Config) { c.Auth.Token, c.Auth.In = "a.b.c", "cookie" }, "token-in"},
		{"token ttl", func(c *Config) { c.Auth.Key, c.Auth.TTL = "k", 0 }, "token-ttl"},
		{"token blank", func(c *Config) { c.Auth.Token = "a b" }, "white space"},
		{"protocol idle", func(c *Config) { c.Mode, c.Protocol = ModeIdle, true }, ""},
		{"protocol echo", func(c *Config) { c.Protocol = true }, "protocol"},
		// 15,000 measured + 2,000 slowloris + 500/s churn × 10 s hold.
		{"attackers per proc", func(c *Config) { c.Conns = 15000; c.Attack.Slowloris = 2000; c.Attack.Churn = 500 }, "--procs 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Defaults()
			tc.edit(&cfg)
			err := cfg.Validate()
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.field != "" && (err == nil || !strings.Contains(err.Error(), tc.field)):
				t.Fatalf("error %v, want one naming %q", err, tc.field)
			}
		})
	}
}

func TestPublishPadding(t *testing.T) {
	for _, size := range []int{0, 10, 64, 1024} {
		now := time.Now().UnixNano()
		pad := publishPadding(size, now, 12345)
		data := `{"t":` + itoa(now) + `,"s":12345,"p":"` + strings.Repeat("x", pad) + `"}`
		if size > 40 && len(data) != size {
			t.Fatalf("size %d: data is %d bytes", size, len(data))
		}
		if !json.Valid([]byte(data)) {
			t.Fatalf("invalid JSON %s", data)
		}
	}
}

func itoa(v int64) string { b, _ := json.Marshal(v); return string(b) }

func TestParseProc(t *testing.T) {
	ps, err := parseProcStatus([]byte("Name:\twsedge\nVmRSS:\t   12345 kB\nThreads:\t7\n"))
	if err != nil || ps.RSS != 12345<<10 || ps.Threads != 7 {
		t.Fatalf("status: %+v %v", ps, err)
	}
	if _, err := parseProcStatus([]byte("Name:\tx\n")); err == nil {
		t.Fatal("status without VmRSS accepted")
	}
	// comm may contain spaces and parentheses.
	stat := "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 3 0 1 1 1"
	cpu, err := parseStatCPU([]byte(stat))
	if err != nil || cpu != 4*time.Second {
		t.Fatalf("stat cpu = %v %v, want 4s", cpu, err)
	}
	if _, err := readCPU(os.Getpid()); err != nil {
		t.Fatal(err)
	}
}

func TestTableAndPlot(t *testing.T) {
	mk := func(label string, mode Mode, conns int, rate float64, lat int64) *Result {
		h := newHist()
		for i := int64(1); lat > 0 && i <= 200; i++ {
			record(h, lat*i/100)
		}
		return &Result{Label: label, Mode: mode, Conns: conns, Rate: rate, Size: 1024, Latency: summarize(h),
			LatencyHist: encodeHist(h), Command: "wsedge bench " + string(mode), Machine: machine(),
			Server: &ServerStats{RSSPerConn: 900, Threads: 5, Goroutines: 9}}
	}
	rs := []*Result{
		mk("wsedge", ModeIdle, 10000, 0, 0), mk("wsedge", ModeEcho, 1000, 10, 100_000),
		mk("nbio", ModeIdle, 10000, 0, 0), mk("nbio", ModeEcho, 1000, 10, 300_000),
	}
	var b strings.Builder
	if err := WriteTable(&b, rs); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"| server | RSS / idle conn @ 10k | threads / goroutines @ 10k idle | echo p50 / p99 / p99.9 (1k conns × 10/s × 1 KiB) |",
		"| wsedge | 900 B | 5 / 9 |", "| nbio |", "Machine:", "wsedge bench echo"} {
		if !strings.Contains(out, want) {
			t.Fatalf("table lacks %q:\n%s", want, out)
		}
	}
	var svg, png bytes.Buffer
	if err := PlotSVG(&svg, rs, "t"); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(svg.String(), "<polyline"); n != 2 {
		t.Fatalf("svg has %d curves, want 2 (idle runs have no latency)", n)
	}
	if err := PlotPNG(&png, rs, "t"); err != nil || !bytes.HasPrefix(png.Bytes(), []byte("\x89PNG")) {
		t.Fatalf("png: %v", err)
	}
}

func TestDeliveryAccounting(t *testing.T) {
	// Pushes 1, 2, 2, 5, 3 to one subscriber: 4 unique, 1 duplicate, 1 out
	// of order (3 after 5); 4 of 5 published means 1 missing.
	cfg := Defaults()
	cfg.Mode = ModeBroadcast
	w := &worker{cfg: cfg}
	l, err := newLoop(w, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(l.epfd)
	defer unix.Close(l.efd)
	c := &conn{role: roleSub, state: stOpen, subPending: true}
	l.pendingSubs = 1
	now := time.Now().UnixNano()
	l.onJSON(c, now, []byte(`{"id":1,"ok":true,"result":{"offset":0,"epoch":"e"}}`))
	for _, s := range []int{1, 2, 2, 5, 3} {
		msg := `{"channel":"bench:b1","offset":` + itoa(int64(s)) + `,"data":{"t":` + itoa(now-int64(time.Millisecond)) + `,"s":` + itoa(int64(s)) + `,"p":"x"}}`
		l.onJSON(c, now, []byte(msg))
	}
	l.onJSON(c, now, []byte(`{"channel":"bench:b1","offset":9,"data":{"other":true}}`))
	l.onJSON(c, now, []byte(`{"lagged":{"channel":"bench:b1","offset":5}}`))
	l.onJSON(c, now, []byte(`{"disconnect":{"code":4005,"reason":"slow consumer","reconnect":true}}`))
	st := l.stats
	if st.Subscribed != 1 || l.pendingSubs != 0 || st.Received != 5 || st.Unique != 4 || st.Duplicates != 1 || st.OutOfOrder != 1 || st.Errors != 1 ||
		st.Lagged != 1 || st.Disconnected != 1 || l.subsPer[0] != 1 {
		t.Fatalf("stats %+v pendingSubs %d", st, l.pendingSubs)
	}
	if l.lat.TotalCount() != 5 || l.lat.ValueAtQuantile(50) < int64(time.Millisecond) {
		t.Fatalf("latency: %d samples, p50 %d", l.lat.TotalCount(), l.lat.ValueAtQuantile(50))
	}
	r := &runState{cfg: &Config{Mode: ModeBroadcast, Conns: 1, Duration: time.Second},
		res: &Result{Published: 5}, done: []*message{{Stats: st}}, stats: []Stats{st}}
	if err := r.finish(); err != nil {
		t.Fatal(err)
	}
	if r.res.Expected != 5 || r.res.Missing != 1 {
		t.Fatalf("expected %d missing %d, want 5 and 1", r.res.Expected, r.res.Missing)
	}

	// Per channel: 10 subscribers over 3 channels are 4, 3, 3; publishes
	// acknowledged 5, 4, 4 per channel owe 5×4 + 4×3 + 4×3 = 44.
	st.Unique = 40
	r = &runState{cfg: &Config{Mode: ModeBroadcast, Conns: 10, Channels: 3, Duration: time.Second},
		res: &Result{Published: 13}, per: []int64{5, 4, 4}, done: []*message{{Stats: st}}, stats: []Stats{st}}
	if err := r.finish(); err != nil {
		t.Fatal(err)
	}
	if r.res.Expected != 44 || r.res.Missing != 4 {
		t.Fatalf("per channel: expected %d missing %d, want 44 and 4", r.res.Expected, r.res.Missing)
	}
}
