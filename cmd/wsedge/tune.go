package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/wsedge/wsedge/tuning"
)

const tuneUsage = `usage: wsedge tune check [--target-conns N] [--loops N] [--json] [--from bench.json ...]
       wsedge tune plan --conns N --publish-rate R --avg-fanout F --payload B [--from bench.json ...] [--json]

check compares the host's live limits (/proc/sys, RLIMIT_NOFILE, cgroup
memory and CPU) with the shipped profile (tuning/sysctl.conf), prints each
with pass/warn/fail and the command that fixes it, and the connection
ceiling each limit implies. It exits 1 when the lowest ceiling is below
--target-conns.

plan estimates cores, memory (process and kernel bytes per connection,
outbound bounds), fds, load-balancer ports and bandwidth for a load, from
per-connection costs measured with 'wsedge bench --json --server-pid PID'
(--from; idle, broadcast and connect runs each give one cost) or the
shipped BENCHMARKS.md figures, and prints its assumptions.
`

// runTune dispatches tune check and tune plan.
func runTune(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, tuneUsage)
		return 2
	}
	switch args[0] {
	case "check":
		return tuneCheck(args[1:], os.Stdout)
	case "plan":
		return tunePlan(args[1:], os.Stdout)
	case "-h", "--help", "help":
		fmt.Fprint(os.Stdout, tuneUsage)
		return 0
	}
	fmt.Fprintf(os.Stderr, "wsedge tune: unknown subcommand %q\n%s", args[0], tuneUsage)
	return 2
}

// fromFlag collects repeated --from files.
type fromFlag []string

func (f *fromFlag) String() string     { return strings.Join(*f, ",") }
func (f *fromFlag) Set(v string) error { *f = append(*f, v); return nil }

func loadCosts(from []string) (tuning.Costs, error) {
	c := tuning.DefaultCosts()
	for _, name := range from {
		f, err := os.Open(name)
		if err != nil {
			return c, err
		}
		err = c.FromBench(f, name)
		f.Close()
		if err != nil {
			return c, err
		}
	}
	return c, nil
}

func parseFlags(fs *flag.FlagSet, args []string) (ok bool, code int) {
	fs.SetOutput(os.Stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return false, 0
		}
		return false, 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "wsedge tune %s: unexpected %q\n", fs.Name(), fs.Arg(0))
		return false, 2
	}
	return true, 0
}

func tuneCheck(args []string, out io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	var (
		target int64
		loops  int
		asJSON bool
		from   fromFlag
		root   string
	)
	fs.Int64Var(&target, "target-conns", 0, "connections this host must hold; exit 1 if a limit allows fewer")
	fs.IntVar(&loops, "loops", runtime.GOMAXPROCS(0), "event loops serve will run (each holds 3 fds)")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	fs.Var(&from, "from", "a 'wsedge bench --json' result with this host's costs (repeatable)")
	fs.StringVar(&root, "root", "/", "read /proc and /sys under this directory (for inspecting a copied tree)")
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	costs, err := loadCosts(from)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsedge tune check:", err)
		return 2
	}
	soft, hard, err := tuning.ReadNoFile()
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsedge tune check:", err)
		return 2
	}
	r := tuning.Check(tuning.CheckInput{Root: root, NoFileSoft: soft, NoFileHard: hard, Loops: loops,
		TargetConns: target, Costs: costs, Profile: tuning.Profile()})
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		_ = enc.Encode(r)
	} else {
		r.WriteText(out)
	}
	if !r.OK {
		return 1
	}
	return 0
}

func tunePlan(args []string, out io.Writer) int {
	fs := flag.NewFlagSet("plan", flag.ContinueOnError)
	in := tuning.DefaultPlanInput()
	var (
		asJSON      bool
		from        fromFlag
		kernelBytes float64
	)
	fs.Int64Var(&in.Conns, "conns", 0, "connections to hold (required)")
	fs.Float64Var(&in.PublishRate, "publish-rate", 0, "publications per second, node-wide")
	fs.Float64Var(&in.AvgFanout, "avg-fanout", 0, "subscribers each publication reaches")
	fs.IntVar(&in.Payload, "payload", 256, "bytes of data per publication")
	fs.IntVar(&in.ChannelLen, "channel-len", in.ChannelLen, "typical channel name length")
	fs.DurationVar(&in.PingInterval, "ping-interval", in.PingInterval, "serve's --ping-interval")
	fs.DurationVar(&in.DrainGrace, "drain-grace", in.DrainGrace, "serve's --drain-grace: a drained node's clients reconnect over it")
	fs.Int64Var(&in.MaxOutbound, "max-outbound-bytes", in.MaxOutbound, "serve's --max-outbound-bytes")
	fs.Float64Var(&in.SlowFraction, "slow-fraction", in.SlowFraction, "share of connections stalled at once")
	fs.Int64Var(&in.SendBufMax, "send-buffer", in.SendBufMax, "kernel send buffer a stalled socket fills (tcp_wmem max or --socket-send-buffer)")
	fs.Int64Var(&in.PortsPerPair, "lb-ports", in.PortsPerPair, "usable ephemeral ports per (proxy address, backend address) pair")
	fs.IntVar(&in.Loops, "loops", 0, "event loops (default: the planned cores)")
	fs.Float64Var(&in.Utilisation, "utilisation", in.Utilisation, "CPU share to plan up to")
	fs.Float64Var(&kernelBytes, "kernel-bytes-per-conn", 0, "override the kernel bytes per connection (e.g. from wsedge_kernel_bytes_per_connection)")
	fs.BoolVar(&asJSON, "json", false, "print the plan as JSON")
	fs.Var(&from, "from", "a 'wsedge bench --json' result with this host's costs (repeatable)")
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	if in.Conns <= 0 || in.PublishRate < 0 || in.AvgFanout < 0 || in.Payload < 0 {
		fmt.Fprintln(os.Stderr, "wsedge tune plan: --conns is required; rates, fan-out and payload are not negative")
		return 2
	}
	costs, err := loadCosts(from)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsedge tune plan:", err)
		return 2
	}
	if kernelBytes > 0 {
		costs.KernelBytesPerConn = kernelBytes
		costs.Sources = append(costs.Sources, fmt.Sprintf("--kernel-bytes-per-conn %.0f", kernelBytes))
	}
	p := tuning.MakePlan(in, costs)
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		_ = enc.Encode(p)
		return 0
	}
	p.WriteText(out)
	return 0
}
