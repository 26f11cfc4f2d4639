package bench

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"
)

// Series of the server's /metrics the sampler reads (VictoriaMetrics'
// process metrics, which wsedge and the Go peers expose).
const (
	metricRSS        = "process_resident_memory_bytes"
	metricGoroutines = "go_goroutines"
)

// serverSample is one reading of the server under test.
type serverSample struct {
	rss        int64 // bytes; 0 if unknown
	goroutines int64 // -1 if unknown
	exited     bool  // the process is gone or a zombie
	err        error // reading /metrics failed
}

// watchServer reads the server at once and then every period until ctx
// ends, on a goroutine of its own (a /metrics read may take seconds from a
// server under attack), and sends each reading on the returned channel,
// dropping readings the receiver is not ready for.
func watchServer(ctx context.Context, pid int, url string, period time.Duration) <-chan serverSample {
	out := make(chan serverSample, 1)
	go func() {
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			s := readServerSample(pid, url)
			select {
			case out <- s:
			default:
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return out
}

func readServerSample(pid int, url string) serverSample {
	s := serverSample{goroutines: -1}
	if pid > 0 && !processAlive(pid) {
		s.exited = true
		return s
	}
	if url == "" {
		return s
	}
	m, err := readMetrics(url, metricRSS, metricGoroutines)
	if err != nil {
		s.err = err
		return s
	}
	s.rss = m[metricRSS]
	if g, ok := m[metricGoroutines]; ok {
		s.goroutines = g
	}
	return s
}

// processAlive reports whether pid runs (exists and is not a zombie).
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	return statAlive(b)
}

// statAlive reads the state field of /proc/<pid>/stat (after the comm in
// parentheses, which may itself hold spaces and parentheses).
func statAlive(stat []byte) bool {
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	state := s[i+2]
	return state != 'Z' && state != 'X'
}

// add folds a sample into the server's figures.
func (sv *ServerStats) add(s serverSample) {
	if s.exited {
		sv.Exited = true
		return
	}
	if s.err != nil {
		sv.SampleErrors++
		return
	}
	if s.rss == 0 && s.goroutines < 0 {
		return // nothing read (no /metrics URL)
	}
	sv.Samples++
	sv.RSSPeak = max(sv.RSSPeak, s.rss)
	if g := s.goroutines; g >= 0 {
		if sv.GoroutinesMin == 0 || g < sv.GoroutinesMin {
			sv.GoroutinesMin = g
		}
		sv.GoroutinesMax = max(sv.GoroutinesMax, g)
	}
}

// readCounters returns the server's wsedge_*_total counters other than
// per-shard ones, to report how they grew over a run.
func readCounters(url string) (map[string]int64, error) {
	out := make(map[string]int64)
	err := scanMetrics(url, func(series string, v float64) {
		name, _, _ := strings.Cut(series, "{")
		if strings.HasPrefix(name, "wsedge_") && strings.HasSuffix(name, "_total") && !strings.Contains(series, "shard=") {
			out[series] = int64(v)
		}
	})
	return out, err
}

// counterGrowth returns after − before for every counter that grew.
func counterGrowth(before, after map[string]int64) map[string]int64 {
	out := make(map[string]int64)
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}
