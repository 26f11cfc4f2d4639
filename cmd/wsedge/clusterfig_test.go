package main

import (
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/wsedge/wsedge/broker/redistest"
)

// TestClusterFaultFigures measures, with real processes, what issue 10
// asks in BENCHMARKS.md: the time from a Redis restart to the first
// cross-node delivery, and from a silently wedged pub/sub connection to
// /readyz 503 and to delivery resumed. It is a measurement, not a check of
// speed: it runs only with WSEDGE_FIGURES=1 (make cluster-figures) and
// fails only when a fault is never recovered from.
func TestClusterFaultFigures(t *testing.T) {
	if os.Getenv("WSEDGE_FIGURES") == "" {
		t.Skip("a measurement: WSEDGE_FIGURES=1 (make cluster-figures)")
	}
	runs := 5
	if n, err := strconv.Atoi(os.Getenv("WSEDGE_FIGURES_RUNS")); err == nil && n > 0 {
		runs = n
	}
	var restart, wedge503, wedgeDelivery []time.Duration
	for range runs {
		r, w5, wd := faultRound(t)
		restart, wedge503, wedgeDelivery = append(restart, r), append(wedge503, w5), append(wedgeDelivery, wd)
	}
	for _, f := range []struct {
		what string
		d    []time.Duration
	}{
		{"Redis SIGKILL+restart → first cross-node delivery", restart},
		{"pub/sub wedged → /readyz 503", wedge503},
		{"pub/sub wedged → cross-node delivery resumed", wedgeDelivery},
	} {
		slices.Sort(f.d)
		fmt.Printf("FIGURE %-52s runs %d  min %v  median %v  max %v\n", f.what, len(f.d),
			f.d[0].Round(time.Millisecond), f.d[len(f.d)/2].Round(time.Millisecond), f.d[len(f.d)-1].Round(time.Millisecond))
	}
}

// faultRound: node a reaches Redis through a fault proxy, node b directly;
// a subscriber on a hears publications made on b.
func faultRound(t *testing.T) (restart, wedge503, wedgeDelivery time.Duration) {
	rs := redistest.Start(t)
	proxy := redistest.NewProxy(t, rs.Addr())
	a := startServe(t, "", "--broker", proxy.URL(), "--command-rate", "0")
	b := startServe(t, "", "--broker", rs.URL(), "--command-rate", "0")
	defer a.cmd.Process.Kill()
	defer b.cmd.Process.Kill()
	const ch = "bench:fault"
	sub := dialNode(t, a)
	if r := sub.call(`{"op":"subscribe","channel":"` + ch + `"}`); r["ok"] != true {
		t.Fatalf("subscribe: %v", r)
	}
	pub := dialNode(t, b)
	waitReady(t, 200, 10*time.Second, a, b)
	// untilDelivered publishes on b every 10 ms until the subscriber
	// has more than n pushes; it returns the time since start.
	untilDelivered := func(start time.Time, limit time.Duration) time.Duration {
		n := len(sub.pubs(ch))
		for len(sub.pubs(ch)) <= n {
			if time.Since(start) > limit {
				t.Fatalf("no cross-node delivery %v after the fault", limit)
			}
			pub.call(`{"op":"publish","channel":"` + ch + `","data":1}`)
			time.Sleep(10 * time.Millisecond) // publishing pace
		}
		return time.Since(start)
	}
	untilDelivered(time.Now(), 10*time.Second)

	rs.Kill()
	waitReady(t, http.StatusServiceUnavailable, 15*time.Second, a, b)
	start := time.Now()
	rs.Restart()
	restart = untilDelivered(start, 30*time.Second)
	waitReady(t, 200, 15*time.Second, a)

	if n := proxy.WedgePubSub(); n == 0 {
		t.Fatal("no pub/sub connection to wedge")
	}
	start = time.Now()
	for readyz(a) != http.StatusServiceUnavailable {
		if time.Since(start) > 30*time.Second {
			t.Fatal("still ready 30 s after the wedge")
		}
		time.Sleep(5 * time.Millisecond) // polling a readiness endpoint
	}
	wedge503 = time.Since(start)
	wedgeDelivery = untilDelivered(start, 30*time.Second)
	return restart, wedge503, wedgeDelivery
}
