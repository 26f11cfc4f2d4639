package metrics

import (
	"strconv"
	"testing"
)

func strconvFormat(v int64) string { return strconv.FormatInt(v, 10) }

// FuzzProcStats: the /proc parsers never panic, never report a negative
// count, refuse inputs over MaxProcFile (nothing larger is buffered) and
// allocate nothing whatever the input.
func FuzzProcStats(f *testing.F) {
	f.Add([]byte("sockets: used 31\nTCP: inuse 11 orphan 0 tw 7 alloc 14 mem 206\n"))
	f.Add([]byte("TCP6: inuse 4\n"))
	f.Add([]byte("SReclaimable:     140940 kB\nSUnreclaim:        29848 kB\n"))
	f.Add([]byte("TCP: inuse 9223372036854775807\nTCP6: inuse 9223372036854775807\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var st Sockstat
		var mi Meminfo
		serr := ParseSockstat(b, &st)
		merr := ParseMeminfo(b, &mi)
		if len(b) > MaxProcFile && (serr == nil || merr == nil) {
			t.Fatalf("%d bytes accepted, over MaxProcFile", len(b))
		}
		if st.SocketsUsed < 0 || st.TCPInUse < 0 || st.TCPOrphan < 0 || st.TCPTimeWait < 0 ||
			st.TCPAlloc < 0 || st.MemPages < 0 || mi.SlabReclaimable < 0 || mi.SlabUnreclaimable < 0 {
			t.Fatalf("negative: %+v %+v", st, mi)
		}
		if n := testing.AllocsPerRun(1, func() { _ = ParseSockstat(b, &st); _ = ParseMeminfo(b, &mi) }); n != 0 {
			t.Fatalf("%v allocs", n)
		}
	})
}
