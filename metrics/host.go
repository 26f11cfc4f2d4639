package metrics

import (
	"bytes"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	vm "github.com/VictoriaMetrics/metrics"
	"golang.org/x/sys/unix"
)

// Kernel memory per connection is as large as the process's own (about
// 5 KB of slab per idle TCP socket measured here, BENCHMARKS.md) and cgroups
// charge it to the pod, yet a process's RSS does not show it. The host
// writer below reads /proc/net/sockstat and /proc/meminfo at scrape time
// and sets both costs side by side.

// MaxProcFile bounds what is read of one /proc file: sockstat and meminfo
// are a few hundred bytes to a few KiB; a larger file is refused rather
// than buffered.
const MaxProcFile = 64 << 10

// ErrProcFile is returned for a /proc file that cannot be parsed.
var ErrProcFile = errors.New("metrics: unparsable /proc file")

// Sockstat is what /proc/net/sockstat (and sockstat6) says about TCP.
// MemPages is tcp_memory_allocated: pages of socket buffers, shared by
// IPv4 and IPv6 sockets.
type Sockstat struct {
	SocketsUsed int64
	TCPInUse    int64 // IPv4 plus IPv6 sockets the kernel counts "inuse" (bound or connected)
	TCPOrphan   int64
	TCPTimeWait int64
	TCPAlloc    int64
	MemPages    int64
}

// ParseSockstat reads the "sockets:" and "TCP:"/"TCP6:" lines of sockstat
// files; other lines are ignored. It does not allocate.
func ParseSockstat(b []byte, st *Sockstat) error {
	if len(b) > MaxProcFile {
		return ErrProcFile
	}
	found := false
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		key, rest, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		switch string(key) {
		case "sockets":
			found = true
			if v, ok := field(rest, "used"); ok {
				st.SocketsUsed = v
			}
		case "TCP":
			found = true
			st.TCPInUse, _ = addField(st.TCPInUse, rest, "inuse")
			st.TCPOrphan, _ = addField(st.TCPOrphan, rest, "orphan")
			st.TCPTimeWait, _ = addField(st.TCPTimeWait, rest, "tw")
			if v, ok := field(rest, "alloc"); ok {
				st.TCPAlloc = v
			}
			if v, ok := field(rest, "mem"); ok {
				st.MemPages = v
			}
		case "TCP6":
			found = true
			st.TCPInUse, _ = addField(st.TCPInUse, rest, "inuse")
		}
	}
	if !found {
		return ErrProcFile
	}
	return nil
}

// Meminfo is the slab part of /proc/meminfo, in bytes.
type Meminfo struct {
	SlabReclaimable   int64
	SlabUnreclaimable int64
}

// ParseMeminfo reads SReclaimable and SUnreclaim ("kB" lines); other lines
// are ignored. It does not allocate.
func ParseMeminfo(b []byte, mi *Meminfo) error {
	if len(b) > MaxProcFile {
		return ErrProcFile
	}
	found := 0
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		key, rest, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		var dst *int64
		switch string(key) {
		case "SReclaimable":
			dst = &mi.SlabReclaimable
		case "SUnreclaim":
			dst = &mi.SlabUnreclaimable
		default:
			continue
		}
		num, unit, _ := bytes.Cut(bytes.TrimLeft(rest, " \t"), []byte{' '})
		v, ok := parseCount(num)
		if !ok || v > math.MaxInt64/1024 {
			return ErrProcFile
		}
		if string(bytes.TrimSpace(unit)) == "kB" {
			v *= 1024
		}
		*dst = v
		found++
	}
	if found == 0 {
		return ErrProcFile
	}
	return nil
}

// field finds "name value" in a sockstat line's pairs.
func field(pairs []byte, name string) (int64, bool) {
	for len(pairs) > 0 {
		pairs = bytes.TrimLeft(pairs, " \t")
		var k, v []byte
		k, pairs, _ = bytes.Cut(pairs, []byte{' '})
		pairs = bytes.TrimLeft(pairs, " \t")
		v, pairs, _ = bytes.Cut(pairs, []byte{' '})
		if string(k) == name {
			return parseCount(v)
		}
	}
	return 0, false
}

// parseCount parses a non-negative decimal without allocating (strconv's
// errors do).
func parseCount(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

func addField(sum int64, pairs []byte, name string) (int64, bool) {
	v, ok := field(pairs, name)
	if !ok || v > math.MaxInt64-sum {
		return sum, false
	}
	return sum + v, true
}

// readProc reads at most MaxProcFile+1 bytes of path into buf.
func readProc(path string, buf []byte) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	n, err := io.ReadFull(f, buf[:MaxProcFile+1])
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return nil, err
	}
	return buf[:n], nil
}

// HostSample is one reading of the host's side of the connections.
type HostSample struct {
	Sock    Sockstat
	Mem     Meminfo
	RSS     int64 // this process's resident set, bytes
	SockErr error
	MemErr  error
}

// host reads /proc under root (the real "/" outside tests) and keeps the
// reading taken at startup, against which the per-connection costs are
// estimated.
type host struct {
	root     string
	pageSize int64

	mu       sync.Mutex
	buf      []byte
	dents    []byte
	base     HostSample
	fds      int64     // last count of open fds
	fdsAt    time.Time // when it was taken
	fdsConns int64     // connections open at that count
}

// fdRefresh is how often open fds are recounted. Listing /proc/self/fd
// costs the kernel about a microsecond per fd (it instantiates a proc
// inode and dentry for each): ~20 ms of CPU at 19,000 fds, a second at a
// million, too much for every scrape. Between counts the last count moves
// with the connection count (one fd each); wsedge_connections /
// wsedge_max_connections is the exact, free view.
const fdRefresh = time.Minute

func newHost(root string) *host {
	h := &host{root: root, pageSize: int64(os.Getpagesize()), buf: make([]byte, MaxProcFile+1), dents: make([]byte, 32<<10)}
	h.base = h.sample()
	return h
}

// sample reads the /proc files; the caller holds h.mu or owns h.
func (h *host) sample() HostSample {
	var s HostSample
	if b, err := readProc(filepath.Join(h.root, "proc/net/sockstat"), h.buf); err != nil {
		s.SockErr = err
	} else {
		s.SockErr = ParseSockstat(b, &s.Sock)
	}
	if b, err := readProc(filepath.Join(h.root, "proc/net/sockstat6"), h.buf); err == nil {
		_ = ParseSockstat(b, &s.Sock)
	}
	if b, err := readProc(filepath.Join(h.root, "proc/meminfo"), h.buf); err != nil {
		s.MemErr = err
	} else {
		s.MemErr = ParseMeminfo(b, &s.Mem)
	}
	if b, err := readProc(filepath.Join(h.root, "proc/self/statm"), h.buf); err == nil {
		if f := bytes.Fields(b); len(f) > 1 {
			if pages, err := strconv.ParseInt(string(f[1]), 10, 64); err == nil {
				s.RSS = pages * h.pageSize
			}
		}
	}
	return s
}

// MinConnsForEstimate is how many connections a node must hold before the
// per-connection estimates are published: below it, other processes' and
// the runtime's own growth swamp the per-socket cost (NaN until then).
const MinConnsForEstimate = 1000

// PerConn estimates the process's and the kernel's bytes per connection
// from the growth since startup: process = ΔRSS / conns, kernel = (Δslab +
// ΔTCP buffer pages) / conns. Slab is host-wide, so other processes'
// sockets and caches move it too; on loopback both ends of every
// connection are on the host, which doubles the kernel figure.
func PerConn(base, now HostSample, pageSize, conns int64) (process, kernel float64) {
	if conns < MinConnsForEstimate {
		return math.NaN(), math.NaN()
	}
	process = float64(now.RSS-base.RSS) / float64(conns)
	slab := (now.Mem.SlabReclaimable + now.Mem.SlabUnreclaimable) - (base.Mem.SlabReclaimable + base.Mem.SlabUnreclaimable)
	bufs := (now.Sock.MemPages - base.Sock.MemPages) * pageSize
	kernel = float64(slab+bufs) / float64(conns)
	return process, kernel
}

// openFDs counts the entries of /proc/self/fd with getdents into a reused
// buffer: a scrape of a node with a million sockets must not allocate a
// name per socket (the library's counter does, ~1 MB per scrape at 20,000
// fds, which showed as RSS growth in a 19,000-connection run). The
// caller holds h.mu.
func (h *host) openFDs() (int64, error) {
	fd, err := unix.Open(filepath.Join(h.root, "proc/self/fd"), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	var n int64
	for {
		nb, err := unix.Getdents(fd, h.dents)
		if err != nil {
			return 0, err
		}
		if nb <= 0 {
			break
		}
		n += countDirents(h.dents[:nb])
	}
	return n - 1, nil // the directory's own fd is listed too
}

// countDirents counts linux_dirent64 records other than "." and "..".
func countDirents(b []byte) int64 {
	var n int64
	for off := 0; off+19 < len(b); {
		reclen := int(b[off+16]) | int(b[off+17])<<8
		if reclen <= 0 || off+reclen > len(b) {
			break
		}
		name := b[off+19 : off+reclen]
		if !(name[0] == '.' && (name[1] == 0 || name[1] == '.' && len(name) > 2 && name[2] == 0)) {
			n++
		}
		off += reclen
	}
	return n
}

// write emits the host series; conns is the node's open connection count.
func (h *host) write(w io.Writer, conns int64) {
	h.mu.Lock()
	s := h.sample()
	base := h.base
	if h.fdsAt.IsZero() || time.Since(h.fdsAt) >= fdRefresh {
		if n, err := h.openFDs(); err == nil {
			h.fds, h.fdsAt, h.fdsConns = n, time.Now(), conns
		}
	}
	fds, fdsAt := h.fds+conns-h.fdsConns, h.fdsAt
	h.mu.Unlock()
	if !fdsAt.IsZero() {
		vm.WriteGaugeUint64(w, `process_open_fds`, uint64(max(fds, 0)))
	}
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil {
		vm.WriteGaugeUint64(w, `process_max_fds`, rl.Cur)
	}
	if s.SockErr == nil {
		vm.WriteGaugeUint64(w, `wsedge_kernel_sockets_used`, uint64(s.Sock.SocketsUsed))
		vm.WriteGaugeUint64(w, `wsedge_kernel_tcp_sockets{state="alloc"}`, uint64(s.Sock.TCPAlloc))
		// The family's # HELP and # TYPE come with its first series only.
		io.WriteString(w, `wsedge_kernel_tcp_sockets{state="inuse"} `+strconv.FormatInt(s.Sock.TCPInUse, 10)+"\n")
		io.WriteString(w, `wsedge_kernel_tcp_sockets{state="orphan"} `+strconv.FormatInt(s.Sock.TCPOrphan, 10)+"\n")
		io.WriteString(w, `wsedge_kernel_tcp_sockets{state="tw"} `+strconv.FormatInt(s.Sock.TCPTimeWait, 10)+"\n")
		vm.WriteGaugeUint64(w, `wsedge_kernel_tcp_memory_bytes`, uint64(s.Sock.MemPages*h.pageSize))
	}
	if s.MemErr == nil {
		vm.WriteGaugeUint64(w, `wsedge_kernel_slab_bytes{kind="reclaimable"}`, uint64(s.Mem.SlabReclaimable))
		io.WriteString(w, `wsedge_kernel_slab_bytes{kind="unreclaimable"} `+strconv.FormatInt(s.Mem.SlabUnreclaimable, 10)+"\n")
	}
	process, kernel := PerConn(base, s, h.pageSize, conns)
	vm.WriteGaugeFloat64(w, `wsedge_process_bytes_per_connection`, process)
	vm.WriteGaugeFloat64(w, `wsedge_kernel_bytes_per_connection`, kernel)
}
