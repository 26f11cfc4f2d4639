package tuning

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// FDReserve is how many file descriptors a wsedge process keeps free for
// everything that is not a client socket and not per loop: stdio, the Go
// runtime's poller, the admin listener and its (at most 32) connections,
// logs, broker connections. gnet treats a failed accept (EMFILE) as fatal
// for the whole engine, so the server must never let client sockets eat
// into the reserve.
const FDReserve = 100

// FDsPerLoop is what each event loop holds besides its connections: its
// epoll instance, its wake-up eventfd and its SO_REUSEPORT listener.
const FDsPerLoop = 3

// Limits are the host limits read at startup.
type Limits struct {
	NoFileSoft uint64 // RLIMIT_NOFILE soft limit after raising it
	NoFileHard uint64 // RLIMIT_NOFILE hard limit
	Raised     bool   // the soft limit was raised to the hard limit
	Somaxconn  int    // net.core.somaxconn, -1 if unreadable
	PortLow    int    // net.ipv4.ip_local_port_range, 0 if unreadable
	PortHigh   int
}

// MaxConns is the connection ceiling the file limit implies for a server
// with the given number of event loops.
func (l Limits) MaxConns(loops int) int {
	reserve := uint64(FDReserve + FDsPerLoop*loops)
	if l.NoFileSoft <= reserve {
		return 0
	}
	return int(l.NoFileSoft - reserve)
}

// String formats the limits for a startup log line.
func (l Limits) String() string {
	return fmt.Sprintf("nofile=%d/%d somaxconn=%d ports=%d-%d",
		l.NoFileSoft, l.NoFileHard, l.Somaxconn, l.PortLow, l.PortHigh)
}

// RaiseNoFile raises the soft RLIMIT_NOFILE to the hard limit and reports
// the limits in force afterwards.
func RaiseNoFile() (Limits, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return Limits{}, fmt.Errorf("tuning: getrlimit: %w", err)
	}
	l := Limits{NoFileSoft: rl.Cur, NoFileHard: rl.Max}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil {
			l.NoFileSoft, l.Raised = rl.Max, true
		}
	}
	l.Somaxconn = readInt("/proc/sys/net/core/somaxconn")
	if f := readFields("/proc/sys/net/ipv4/ip_local_port_range"); len(f) == 2 {
		l.PortLow, _ = strconv.Atoi(f[0])
		l.PortHigh, _ = strconv.Atoi(f[1])
	}
	return l, nil
}

func readFields(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	return strings.Fields(string(b))
}

func readInt(path string) int {
	f := readFields(path)
	if len(f) != 1 {
		return -1
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return -1
	}
	return n
}
