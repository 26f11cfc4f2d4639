package metrics

import (
	"bytes"
	"math"
	"os"
	"strings"
	"testing"
)

func TestParseSockstat(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Sockstat
		err  bool
	}{
		{name: "v4", in: "sockets: used 31\nTCP: inuse 11 orphan 1 tw 7 alloc 14 mem 206\nUDP: inuse 0 mem 0\n",
			want: Sockstat{SocketsUsed: 31, TCPInUse: 11, TCPOrphan: 1, TCPTimeWait: 7, TCPAlloc: 14, MemPages: 206}},
		{name: "v6 adds inuse", in: "TCP: inuse 11 orphan 0 tw 0 alloc 14 mem 2\nTCP6: inuse 5\n",
			want: Sockstat{TCPInUse: 16, TCPAlloc: 14, MemPages: 2}},
		{name: "no TCP line", in: "UDP: inuse 0 mem 0\n", err: true},
		{name: "garbage value ignored", in: "TCP: inuse x alloc 3\n", want: Sockstat{TCPAlloc: 3}},
		{name: "too large", in: strings.Repeat("x", MaxProcFile+1), err: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got Sockstat
			err := ParseSockstat([]byte(tc.in), &got)
			if (err != nil) != tc.err {
				t.Fatalf("err %v, want error %v", err, tc.err)
			}
			if !tc.err && got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseMeminfo(t *testing.T) {
	var mi Meminfo
	if err := ParseMeminfo([]byte("MemTotal: 10 kB\nSReclaimable:  3 kB\nSUnreclaim: 2 kB\n"), &mi); err != nil {
		t.Fatal(err)
	}
	if mi != (Meminfo{SlabReclaimable: 3072, SlabUnreclaimable: 2048}) {
		t.Fatalf("%+v", mi)
	}
	for _, bad := range []string{"MemTotal: 1 kB\n", "SUnreclaim: -1 kB\n", "SUnreclaim:\n", "SUnreclaim: 99999999999999999999 kB\n"} {
		if err := ParseMeminfo([]byte(bad), &mi); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParseAllocs(t *testing.T) {
	sock, _ := os.ReadFile("testdata/proc/net/sockstat")
	mem, _ := os.ReadFile("testdata/proc/meminfo")
	var st Sockstat
	var mi Meminfo
	if n := testing.AllocsPerRun(100, func() {
		_ = ParseSockstat(sock, &st)
		_ = ParseMeminfo(mem, &mi)
	}); n != 0 {
		t.Fatalf("%v allocs per parse, want 0", n)
	}
}

// TestHostFake reads a fake /proc tree: the series carry its numbers, and
// the per-connection estimates are NaN below MinConnsForEstimate and the
// growth since the baseline divided by the connections above it.
func TestHostFake(t *testing.T) {
	h := newHost("testdata")
	var b bytes.Buffer
	h.write(&b, 10)
	out := b.String()
	for _, want := range []string{
		"wsedge_kernel_sockets_used 40031\n",
		`wsedge_kernel_tcp_sockets{state="inuse"} 38014` + "\n",
		`wsedge_kernel_tcp_sockets{state="alloc"} 38020` + "\n",
		`wsedge_kernel_tcp_sockets{state="tw"} 15` + "\n",
		"wsedge_kernel_tcp_memory_bytes " + itoa(1200*int64(os.Getpagesize())) + "\n",
		`wsedge_kernel_slab_bytes{kind="unreclaimable"} ` + itoa(219848*1024) + "\n",
		"wsedge_kernel_bytes_per_connection NaN\n",
		"wsedge_process_bytes_per_connection NaN\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "# TYPE wsedge_kernel_tcp_sockets "); n != 1 {
		t.Errorf("%d # TYPE lines for wsedge_kernel_tcp_sockets", n)
	}
	page := int64(4096)
	base := HostSample{RSS: 10 << 20, Mem: Meminfo{SlabReclaimable: 100 << 20, SlabUnreclaimable: 20 << 20}, Sock: Sockstat{MemPages: 10}}
	now := base
	now.RSS += 20000 * 700
	now.Mem.SlabUnreclaimable += 20000 * 5000
	now.Sock.MemPages += 100
	p, k := PerConn(base, now, page, 20000)
	if p != 700 || k != 5000+100*4096/20000.0 {
		t.Fatalf("per conn: process %v kernel %v", p, k)
	}
	if p, k := PerConn(base, now, page, MinConnsForEstimate-1); !math.IsNaN(p) || !math.IsNaN(k) {
		t.Fatalf("below the minimum: %v %v, want NaN", p, k)
	}
}

// TestHostLive reads this machine's /proc: sockstat and meminfo parse and
// the RSS is non-zero.
func TestHostLive(t *testing.T) {
	s := newHost("/").sample()
	if s.SockErr != nil || s.MemErr != nil {
		t.Fatalf("sockstat: %v, meminfo: %v", s.SockErr, s.MemErr)
	}
	if s.RSS <= 0 || s.Sock.SocketsUsed <= 0 || s.Mem.SlabUnreclaimable <= 0 {
		t.Fatalf("%+v", s)
	}
}

func itoa(v int64) string { return strconvFormat(v) }

// TestOpenFDs: the getdents count equals the directory's listing, and
// follows fds opened and closed.
func TestOpenFDs(t *testing.T) {
	h := newHost("/")
	count := func() int64 {
		n, err := h.openFDs()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	before := count()
	if want := int64(len(ents) - 1); before != want { // ReadDir's own fd
		t.Fatalf("%d open fds, /proc/self/fd lists %d", before, want)
	}
	var files []*os.File
	for range 300 {
		f, err := os.Open("/dev/null")
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	if got := count(); got != before+300 {
		t.Fatalf("%d open fds after opening 300 more than %d", got, before)
	}
	for _, f := range files {
		f.Close()
	}
	if n := testing.AllocsPerRun(10, func() { count() }); n > 8 { // the path, not one per fd
		t.Fatalf("%v allocs per count", n)
	}
}

// TestOpenFDsBetweenCounts: between two counts the served figure moves
// with the connection count.
func TestOpenFDsBetweenCounts(t *testing.T) {
	h := newHost("/")
	var b bytes.Buffer
	h.write(&b, 0)
	first := h.fds
	b.Reset()
	h.write(&b, 5000)
	if want := "process_open_fds " + itoa(first+5000) + "\n"; !strings.Contains(b.String(), want) {
		t.Fatalf("want %q in\n%s", want, b.String())
	}
}
