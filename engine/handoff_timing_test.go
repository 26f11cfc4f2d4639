package engine

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkHandoff hands b.N idle echo connections (at most 5,000: the
// clients and both servers share this process's file limit) from one
// server to another in this process and reports the time per connection.
func BenchmarkHandoff(b *testing.B) {
	n := min(b.N, 5000)
	old := startServer(b, nil)
	path := b.TempDir() + "/h.sock"
	done := make(chan struct{})
	ln, err := old.ServeHandoff(path, func() { close(done) })
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	for range n {
		handshake(b, old.Addr()) // closed by the test's cleanup
	}
	var tk *Takeover
	startServerHook(b, func(c *Config) { c.Listen = old.Addr() }, func(s *Server) {
		if tk, err = s.DialTakeover(path); err != nil {
			b.Fatal(err)
		}
	})
	b.ResetTimer()
	start, cpu0 := time.Now(), processCPU()
	got, err := tk.Run()
	el, cpu := time.Since(start), processCPU()-cpu0
	b.StopTimer()
	if err != nil || got != n {
		b.Fatalf("took %d of %d: %v", got, n, err)
	}
	<-done
	b.ReportMetric(float64(el.Nanoseconds())/float64(n), "ns/conn")
	// Both servers are in this process: CPU is the whole handoff's,
	// both sides, which a loaded machine inflates less than wall time.
	b.ReportMetric(float64(cpu.Microseconds())/float64(n), "cpu-µs/conn")
	b.ReportMetric(0, "ns/op")
}

func processCPU() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
