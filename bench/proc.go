package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// procStatus is what /proc/<pid>/status says about a process.
type procStatus struct {
	RSS     int64 // bytes
	Threads int64
}

func readProcStatus(pid int) (procStatus, error) {
	var ps procStatus
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ps, err
	}
	return parseProcStatus(b)
}

func parseProcStatus(b []byte) (procStatus, error) {
	var ps procStatus
	found := 0
	for _, line := range bytes.Split(b, []byte("\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		f := strings.Fields(string(v))
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		switch string(k) {
		case "VmRSS":
			ps.RSS = n << 10 // kB
			found++
		case "Threads":
			ps.Threads = n
			found++
		}
	}
	if found < 2 {
		return ps, fmt.Errorf("bench: no VmRSS/Threads in status")
	}
	return ps, nil
}

// readCPU returns the user+system CPU time pid has used, from
// /proc/<pid>/stat (fields 14 and 15, in clock ticks of 1/100 s on Linux).
func readCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

func parseStatCPU(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("bench: malformed stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("bench: short stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bench: bad utime/stime in stat")
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	return time.Duration(ut+st) * tick, nil
}

func readSelfRSS() int64 {
	ps, err := readProcStatus(os.Getpid())
	if err != nil {
		return 0
	}
	return ps.RSS
}

// readGoroutines fetches a Prometheus text page and returns go_goroutines.
func readGoroutines(url string) (int64, error) {
	m, err := readMetrics(url, "go_goroutines")
	if err != nil {
		return 0, err
	}
	return m["go_goroutines"], nil
}

// Slow-consumer counters of a wsedge server's /metrics.
const (
	metricSlowClosed = `wsedge_slow_consumer_total{policy="close"}`
	metricLagDropped = `wsedge_slow_consumer_dropped_total{policy="lag"}`
)

// readMetrics reads the named series (name with labels, exactly as
// exposed) from a Prometheus text endpoint. A series that is absent is an
// error only if none of them is found.
func readMetrics(url string, names ...string) (map[string]int64, error) {
	out := make(map[string]int64, len(names))
	err := scanMetrics(url, func(series string, v float64) {
		for _, n := range names {
			if series == n {
				out[n] = int64(v)
			}
		}
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("bench: none of %v at %s", names, url)
	}
	return out, nil
}

// scanMetrics fetches a Prometheus text page and calls fn with every
// sample's series (name and labels) and value.
func scanMetrics(url string, fn func(series string, v float64)) error {
	cl := http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("bench: %s: %s", url, resp.Status)
	}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i <= 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			fn(line[:i], v)
		}
	}
	return sc.Err()
}

// Machine describes where a run happened; a plain value.
type Machine struct {
	Cores    int    `json:"cores"`
	MemGiB   int64  `json:"mem_gib"`
	Kernel   string `json:"kernel"`
	GoVer    string `json:"go"`
	Hostname string `json:"hostname,omitempty"`
}

func machine() Machine {
	m := Machine{Cores: runtime.NumCPU(), GoVer: runtime.Version()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				m.MemGiB = (kb + 512<<10) >> 20
			}
		}
	}
	m.Hostname, _ = os.Hostname()
	return m
}

func (m Machine) String() string {
	return fmt.Sprintf("%d cores, %d GiB RAM, Linux %s, %s", m.Cores, m.MemGiB, m.Kernel, m.GoVer)
}
