package engine

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsedge/wsedge/shard"
)

// scrape reads /metrics into series → value.
func scrape(t testing.TB, admin string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		out[line[:i]] = v
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return out
}

// checkSeries polls /metrics until every series in want has its value.
func checkSeries(t *testing.T, s *Server, want map[string]float64) map[string]float64 {
	t.Helper()
	var got map[string]float64
	checkFor(t, 10*time.Second, func() error {
		got = scrape(t, s.AdminAddr())
		for k, v := range want {
			if g, ok := got[k]; !ok || g != v {
				return fmt.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
			}
		}
		return nil
	})
	return got
}

// TestOpsScenario runs a scripted scenario against a real server — a
// subscriber, a slow consumer and a publisher connect and subscribe, 300
// publications, a refused handshake, the slow consumer's overflow, a
// clean disconnect and a dropped one — and then reads the exact counter
// values from /metrics.
func TestOpsScenario(t *testing.T) {
	const pubs = 300
	s := protoServer(t, func(c *Config) {
		c.Loops = 1
		c.MaxOutboundBytes = 16 << 10
		c.SocketSendBuffer = 8 << 10
		c.CloseTimeout = 300 * time.Millisecond
	})
	sub := dialProto(t, s.Addr())
	sub.ok(`{"op":"subscribe","channel":"bench:a"}`)
	slowClient(t, s.Addr(), "bench:a")
	pub := dialProto(t, s.Addr())
	checkSeries(t, s, map[string]float64{
		`wsedge_connections`:                   3,
		`wsedge_loop_connections{shard="0"}`:   3,
		`wsedge_subscriptions{shard="0"}`:      2,
		`wsedge_channels`:                      1,
		`wsedge_handshakes_total{result="ok"}`: 3,
	})

	refused := dialRaw(t, s.Addr())
	refused.send([]byte(upgradeRequest("/elsewhere", "Sec-WebSocket-Protocol: "+Subprotocol)))
	if resp := refused.readResponse(); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("refused handshake: %d, want 404", resp.StatusCode)
	}

	payload := strings.Repeat("x", 1000)
	for i := range pubs {
		pub.ok(fmt.Sprintf(`{"op":"publish","channel":"bench:a","data":"%d %s"}`, i, payload))
	}
	sub.waitPushes(pubs, onChannel("bench:a"))

	// The subscriber leaves cleanly (1000), the publisher drops its TCP
	// connection (no close frame), the slow consumer was closed with 1013.
	_ = sub.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
	checkFor(t, 5*time.Second, func() error {
		sub.mu.Lock()
		defer sub.mu.Unlock()
		if sub.closed == nil {
			return fmt.Errorf("subscriber not closed yet")
		}
		return nil
	})
	pub.ws.Close()

	got := checkSeries(t, s, map[string]float64{
		`wsedge_connections`:                               0,
		`wsedge_loop_connections{shard="0"}`:               0,
		`wsedge_subscriptions{shard="0"}`:                  0,
		`wsedge_channels`:                                  0,
		`wsedge_outbound_bytes{shard="0"}`:                 0,
		`wsedge_accepted_total`:                            4,
		`wsedge_handshakes_total{result="ok"}`:             3,
		`wsedge_handshakes_total{result="failed"}`:         1,
		`wsedge_rejected_total{reason="not_found"}`:        1,
		`wsedge_closed_total`:                              3,
		`wsedge_closes_total{code="1000"}`:                 1,
		`wsedge_closes_total{code="1013"}`:                 1,
		`wsedge_closes_total{code="none"}`:                 1,
		`wsedge_closes_total{code="1001"}`:                 0,
		`wsedge_closes_total{code="other"}`:                0,
		`wsedge_slow_consumer_total{policy="close"}`:       1,
		`wsedge_publications_total`:                        pubs,
		`wsedge_commands_total`:                            pubs + 2,
		`wsedge_messages_total{dir="in"}`:                  pubs + 2,
		`wsedge_command_errors_total`:                      0,
		`wsedge_broker_errors_total{op="publish"}`:         0,
		`wsedge_broker_errors_total{op="subscribe"}`:       0,
		`wsedge_idle_closed_total`:                         0,
		`wsedge_inbox_depth{shard="0"}`:                    0,
		`wsedge_publish_write_seconds_count`:               got64(pubs / sampleEvery),
		`wsedge_broker_call_seconds_count{op="subscribe"}`: 0,
	})
	// Every delivery to the subscriber, and some to the slow consumer
	// before its queue overflowed.
	if d := got[`wsedge_deliveries_total`]; d < pubs || d >= 2*pubs {
		t.Errorf("deliveries %v, want in [%d, %d)", d, pubs, 2*pubs)
	}
	if n := got[`wsedge_broker_call_seconds_count{op="publish"}`]; n != pubs/sampleEvery {
		t.Errorf("timed publish calls %v, want %d (one in %d)", n, pubs/sampleEvery, sampleEvery)
	}
	if got[`process_open_fds`] <= 0 || got[`process_max_fds`] < got[`process_open_fds`] ||
		got[`wsedge_max_connections`] != float64(s.maxConns) {
		t.Errorf("fds %v of %v, ceiling %v (want %d)", got[`process_open_fds`], got[`process_max_fds`], got[`wsedge_max_connections`], s.maxConns)
	}
	if got[`process_resident_memory_bytes`] <= 0 || got[`wsedge_kernel_sockets_used`] <= 0 {
		t.Errorf("RSS %v, kernel sockets %v", got[`process_resident_memory_bytes`], got[`wsedge_kernel_sockets_used`])
	}
	if v, ok := got[`wsedge_kernel_bytes_per_connection`]; !ok || !math.IsNaN(v) {
		t.Errorf("kernel bytes per connection %v (present %v), want NaN below %d connections", v, ok, 1000)
	}
}

func got64(n int) float64 { return float64(n) }

// TestPublishSampleOnce: an armed sample is observed once, by the write
// round after its frame was queued, and frees the slot; a second
// publisher cannot re-arm a pending slot.
func TestPublishSampleOnce(t *testing.T) {
	s, l := newFakeServer(t, nil)
	f1, f2 := shard.NewFrame(16), shard.NewFrame(16)
	defer f1.Release()
	defer f2.Release()
	l.armSample(f1, opsNow()-int64(time.Millisecond))
	l.armSample(f2, opsNow())
	if l.ops.sampleF != f1 {
		t.Fatal("a pending sample was replaced")
	}
	l.observeSample()
	l.sawPush(f2)
	l.observeSample()
	var b strings.Builder
	s.m.Set.WritePrometheus(&b)
	if !strings.Contains(b.String(), "wsedge_publish_write_seconds_count 0\n") {
		t.Fatal("observed before its frame was queued")
	}
	l.sawPush(f1)
	l.observeSample()
	l.observeSample()
	b.Reset()
	s.m.Set.WritePrometheus(&b)
	if !strings.Contains(b.String(), "wsedge_publish_write_seconds_count 1\n") ||
		!strings.Contains(b.String(), `wsedge_publish_write_seconds_bucket{le="0.0008"} 0`) {
		t.Fatalf("want one observation of at least 1 ms:\n%s", grepLines(b.String(), "wsedge_publish_write"))
	}
	if l.ops.armed.Load() != 0 {
		t.Fatal("slot not freed")
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestMetricsDocumented: every wsedge_ family a live protocol server
// serves (after a connection made its loop) is listed in docs/METRICS.md.
func TestMetricsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/METRICS.md")
	if err != nil {
		t.Fatal(err)
	}
	s := protoServer(t, nil)
	c := dialProto(t, s.Addr())
	c.ok(`{"op":"subscribe","channel":"bench:a"}`)
	var got map[string]float64
	checkFor(t, 5*time.Second, func() error {
		got = scrape(t, s.AdminAddr())
		if _, ok := got[`wsedge_loop_connections{shard="0"}`]; !ok {
			if _, ok := got[`wsedge_loop_connections{shard="1"}`]; !ok {
				return fmt.Errorf("no loop gauges yet")
			}
		}
		return nil
	})
	families := map[string]bool{}
	for series := range got {
		name, _, _ := strings.Cut(series, "{")
		if !strings.HasPrefix(name, "wsedge_") {
			continue
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && strings.HasSuffix(base, "_seconds") {
				name = base
			}
		}
		families[name] = true
	}
	if len(families) < 30 {
		t.Fatalf("only %d families served", len(families))
	}
	for f := range families {
		if !strings.Contains(string(doc), "`"+f+"`") && !strings.Contains(string(doc), "`"+f+"{") {
			t.Errorf("docs/METRICS.md does not list %s", f)
		}
	}
}
