package tuning

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Status is a check's verdict.
type Status string

// Verdicts.
const (
	Pass Status = "pass"
	Warn Status = "warn" // differs from the profile; costs latency or headroom, not connections
	Fail Status = "fail" // a limit that holds the host below the target
)

// Item is one checked value.
type Item struct {
	Name   string `json:"name"`
	Have   string `json:"have"`
	Want   string `json:"want"`
	Status Status `json:"status"`
	Fix    string `json:"fix,omitempty"`
	Why    string `json:"why,omitempty"`
}

// Ceiling is the number of connections one limit allows.
type Ceiling struct {
	Limit string `json:"limit"`
	Conns int64  `json:"conns"`
	Note  string `json:"note"`
}

// Report is the result of Check.
type Report struct {
	TargetConns int64     `json:"target_conns,omitempty"`
	Items       []Item    `json:"items"`
	Ceilings    []Ceiling `json:"ceilings"`
	MaxConns    int64     `json:"max_conns"` // the lowest ceiling
	LimitedBy   string    `json:"limited_by"`
	NoFile      uint64    `json:"nofile_hard"` // RLIMIT_NOFILE hard: what serve raises its soft limit to
	OK          bool      `json:"ok"`          // MaxConns ≥ TargetConns
}

// CheckInput is what Check reads besides the files under Root.
type CheckInput struct {
	Root        string // "/" on a live host; a fake tree in tests
	NoFileSoft  uint64
	NoFileHard  uint64
	Loops       int   // event loops (the fd reserve grows with them)
	TargetConns int64 // 0: no target
	Costs       Costs // bytes per connection, for the memory ceilings
	Profile     []Setting
}

// ReadNoFile returns this process's RLIMIT_NOFILE.
func ReadNoFile() (soft, hard uint64, err error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, 0, fmt.Errorf("tuning: getrlimit: %w", err)
	}
	return rl.Cur, rl.Max, nil
}

// otherFiles is what a host's other processes are assumed to hold of
// fs.file-max.
const otherFiles = 10000

// Check compares the live values under in.Root with the profile and
// computes the connection ceiling each limit implies.
func Check(in CheckInput) Report {
	r := Report{TargetConns: in.TargetConns, NoFile: in.NoFileHard}
	if in.Loops <= 0 {
		in.Loops = 1
	}
	reserve := int64(FDReserve + FDsPerLoop*in.Loops)
	ceil := func(limit string, conns int64, note string) {
		r.Ceilings = append(r.Ceilings, Ceiling{Limit: limit, Conns: max(conns, 0), Note: note})
	}
	below := func(conns int64) bool { return in.TargetConns > 0 && conns < in.TargetConns }

	for _, s := range in.Profile {
		it := Item{Name: s.Key, Want: ruleText(s), Why: s.Why, Fix: fmt.Sprintf("sysctl -w %s='%s'", s.Key, s.Value())}
		have, err := readInts(filepath.Join(in.Root, s.Path()))
		switch {
		case errors.Is(err, os.ErrNotExist) && strings.HasPrefix(s.Key, "net.netfilter."):
			it.Have, it.Status, it.Fix = "not loaded (no connection tracking)", Pass, ""
			r.Items = append(r.Items, it)
			continue
		case err != nil:
			it.Have, it.Status = "unreadable: "+err.Error(), Warn
			r.Items = append(r.Items, it)
			continue
		}
		it.Have = joinInts(have)
		it.Status = Pass
		if !meets(s, have) {
			it.Status = Warn
		}
		switch s.Key {
		case "fs.file-max":
			c := have[0] - otherFiles
			ceil(s.Key, c, fmt.Sprintf("system-wide open files %d minus %d for the rest of the host", have[0], otherFiles))
			if below(c) {
				it.Status = Fail
			}
		case "fs.nr_open":
			c := have[0] - reserve
			ceil(s.Key, c, "the highest RLIMIT_NOFILE any process can be given, minus wsedge's reserve")
			if below(c) {
				it.Status = Fail
			}
		case "net.netfilter.nf_conntrack_max":
			ceil(s.Key, have[0], "one tracked entry per connection; a full table drops SYNs")
			if below(have[0]) {
				it.Status = Fail
			}
		}
		if it.Status == Pass {
			it.Fix = ""
		}
		r.Items = append(r.Items, it)
	}

	// RLIMIT_NOFILE: serve raises its soft limit to the hard one.
	fdConns := Limits{NoFileSoft: in.NoFileHard}.MaxConns(in.Loops)
	ceil("rlimit.nofile", int64(fdConns), fmt.Sprintf("hard RLIMIT_NOFILE %d minus %d reserved (100 + 3 per loop × %d loops)", in.NoFileHard, reserve, in.Loops))
	nf := Item{Name: "rlimit.nofile", Have: fmt.Sprintf("soft %d, hard %d", in.NoFileSoft, in.NoFileHard), Status: Pass,
		Want: "hard ≥ target + reserve"}
	if in.TargetConns > 0 {
		nf.Want = fmt.Sprintf("hard ≥ %d", in.TargetConns+reserve)
	}
	if below(int64(fdConns)) {
		nf.Status = Fail
		need := in.TargetConns + reserve
		nf.Fix = fmt.Sprintf("systemd: LimitNOFILE=%d (deploy/systemd/wsedge.service); shell: ulimit -Hn %d && ulimit -n %d (as root); containers: --ulimit nofile=%d:%d", need, need, need, need, need)
	}
	r.Items = append(r.Items, nf)

	perConn := in.Costs.ProcessBytesPerConn + in.Costs.KernelBytesPerConn
	cg := readCgroup(in.Root)
	mem := Item{Name: "cgroup.memory", Want: "unlimited, or ≥ target × bytes per connection", Status: Pass}
	switch {
	case cg.memErr != nil:
		mem.Have, mem.Status = "unknown: "+cg.memErr.Error(), Warn
	case cg.memLimit <= 0:
		mem.Have = "unlimited"
	default:
		mem.Have = fmtBytes(cg.memLimit)
		c := int64(float64(cg.memLimit-baseRSS) / perConn)
		ceil("cgroup.memory", c, fmt.Sprintf("%s limit (charged with socket memory too) / %.0f B per connection (process %.0f + kernel %.0f), after %s for the process itself",
			fmtBytes(cg.memLimit), perConn, in.Costs.ProcessBytesPerConn, in.Costs.KernelBytesPerConn, fmtBytes(baseRSS)))
		if below(c) {
			mem.Status = Fail
			mem.Fix = fmt.Sprintf("raise the memory limit to at least %s (k8s: resources.limits.memory)",
				fmtBytes(baseRSS+int64(float64(in.TargetConns)*perConn)))
		}
	}
	r.Items = append(r.Items, mem)
	cpu := Item{Name: "cgroup.cpu", Want: "enough cores for the plan (wsedge tune plan)", Status: Pass}
	switch {
	case cg.cpuErr != nil:
		cpu.Have, cpu.Status = "unknown: "+cg.cpuErr.Error(), Warn
	case cg.cpus <= 0:
		cpu.Have = "unlimited"
	default:
		cpu.Have = strconv.FormatFloat(cg.cpus, 'f', -1, 64) + " cores (quota)"
		if cg.cpus < 1 {
			cpu.Status = Warn
			cpu.Fix = "give the process at least one full core: a throttled event loop stalls every connection on it"
		}
	}
	r.Items = append(r.Items, cpu)
	if avail, err := memAvailable(in.Root); err == nil {
		ceil("memory.available", int64(float64(avail-baseRSS)/perConn),
			fmt.Sprintf("MemAvailable %s / %.0f B per connection", fmtBytes(avail), perConn))
	}

	r.MaxConns = math.MaxInt64
	for _, c := range r.Ceilings {
		if c.Conns < r.MaxConns {
			r.MaxConns, r.LimitedBy = c.Conns, c.Limit
		}
	}
	r.OK = r.MaxConns >= in.TargetConns
	return r
}

// baseRSS is what a wsedge process holds before its first connection.
const baseRSS = 32 << 20

func ruleText(s Setting) string {
	switch s.Rule {
	case RuleMax:
		return "≤ " + s.Value()
	case RuleEq:
		return "= " + s.Value()
	case RuleRange:
		return fmt.Sprintf("%s (≥ %d ports)", s.Value(), s.Want[1]-s.Want[0]+1)
	}
	return "≥ " + s.Value()
}

// meets applies s's rule to the live fields.
func meets(s Setting, have []int64) bool {
	if s.Rule == RuleRange {
		return len(have) == 2 && have[1]-have[0] >= s.Want[1]-s.Want[0]
	}
	if len(have) != len(s.Want) {
		return false
	}
	for i, w := range s.Want {
		if s.Rule == RuleMin && have[i] < w || s.Rule == RuleMax && have[i] > w || s.Rule == RuleEq && have[i] != w {
			return false
		}
	}
	return true
}

func readInts(path string) ([]int64, error) {
	b, err := readSmall(path)
	if err != nil {
		return nil, err
	}
	return parseInts(string(b))
}

// readSmall reads at most 64 KiB of a /proc or /sys file.
func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 64<<10))
}

type cgroupLimits struct {
	memLimit int64   // bytes; 0 unlimited
	cpus     float64 // quota in cores; 0 unlimited
	memErr   error
	cpuErr   error
}

// readCgroup finds this process's memory and CPU limits, cgroup v2 or v1.
func readCgroup(root string) cgroupLimits {
	var cg cgroupLimits
	b, err := readSmall(filepath.Join(root, "proc/self/cgroup"))
	if err != nil {
		cg.memErr, cg.cpuErr = err, err
		return cg
	}
	var v2, v1mem, v1cpu string
	hasV2 := false
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), ":", 3)
		if len(f) != 3 {
			continue
		}
		if f[0] == "0" && f[1] == "" {
			v2, hasV2 = f[2], true
		}
		for _, c := range strings.Split(f[1], ",") {
			switch c {
			case "memory":
				v1mem = f[2]
			case "cpu":
				v1cpu = f[2]
			}
		}
	}
	cgfs := filepath.Join(root, "sys/fs/cgroup")
	if _, err := os.Stat(filepath.Join(cgfs, "cgroup.controllers")); err == nil && hasV2 {
		// v2: the innermost limit on the path wins; the file is absent at
		// the root.
		cg.memLimit, cg.memErr = walkUp(cgfs, v2, "memory.max", parseMax)
		cg.cpus, cg.cpuErr = walkUpF(cgfs, v2, "cpu.max")
		return cg
	}
	cg.memLimit, cg.memErr = walkUp(filepath.Join(cgfs, "memory"), v1mem, "memory.limit_in_bytes", parseMax)
	q, qerr := walkUp(filepath.Join(cgfs, "cpu"), v1cpu, "cpu.cfs_quota_us", parseMax)
	p, perr := walkUp(filepath.Join(cgfs, "cpu"), v1cpu, "cpu.cfs_period_us", parseMax)
	switch {
	case qerr != nil:
		cg.cpuErr = qerr
	case perr != nil:
		cg.cpuErr = perr
	case q > 0 && p > 0:
		cg.cpus = float64(q) / float64(p)
	}
	return cg
}

// walkUp reads name in dir/rel, then in each parent up to dir; the first
// file found decides. A missing file everywhere means unlimited.
func walkUp(dir, rel, name string, parse func(string) (int64, error)) (int64, error) {
	for p := filepath.Clean("/" + rel); ; p = filepath.Dir(p) {
		b, err := readSmall(filepath.Join(dir, p, name))
		if err == nil {
			return parse(strings.TrimSpace(string(b)))
		}
		if !errors.Is(err, os.ErrNotExist) {
			return 0, err
		}
		if p == "/" {
			return 0, nil
		}
	}
}

func walkUpF(dir, rel, name string) (float64, error) {
	var cpus float64
	_, err := walkUp(dir, rel, name, func(s string) (int64, error) {
		q, p, _ := strings.Cut(s, " ")
		if q == "max" {
			return 0, nil
		}
		qv, err1 := strconv.ParseInt(q, 10, 64)
		pv, err2 := strconv.ParseInt(strings.TrimSpace(p), 10, 64)
		if err1 != nil || err2 != nil || pv <= 0 {
			return 0, fmt.Errorf("tuning: cpu.max %q", s)
		}
		cpus = float64(qv) / float64(pv)
		return 0, nil
	})
	return cpus, err
}

// parseMax reads a limit; "max", -1 and v1's "no limit" (near 2^63) are 0.
func parseMax(s string) (int64, error) {
	if s == "max" {
		return 0, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("tuning: limit %q: %w", s, err)
	}
	if v < 0 || v >= 1<<60 {
		return 0, nil
	}
	return v, nil
}

func memAvailable(root string) (int64, error) {
	b, err := readSmall(filepath.Join(root, "proc/meminfo"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, err := strconv.ParseInt(f[0], 10, 64)
				if err == nil {
					return n << 10, nil
				}
			}
		}
	}
	return 0, errors.New("tuning: no MemAvailable in meminfo")
}

func fmtBytes(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}

// WriteText prints the report for a terminal.
func (r Report) WriteText(w io.Writer) {
	for _, it := range r.Items {
		fmt.Fprintf(w, "%-4s  %-34s have %-28s want %s\n", it.Status, it.Name, it.Have, it.Want)
		if it.Fix != "" {
			fmt.Fprintf(w, "      fix: %s\n", it.Fix)
		}
	}
	fmt.Fprintln(w, "\nconnection ceilings:")
	for _, c := range r.Ceilings {
		fmt.Fprintf(w, "  %-32s %12d  %s\n", c.Limit, c.Conns, c.Note)
	}
	fmt.Fprintf(w, "\nthis host holds at most %d connections (limited by %s)", r.MaxConns, r.LimitedBy)
	if r.TargetConns > 0 {
		verdict := "meets"
		if !r.OK {
			verdict = "is BELOW"
		}
		fmt.Fprintf(w, "; %s the target of %d", verdict, r.TargetConns)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "apply the whole profile: install -m 0644 tuning/sysctl.conf /etc/sysctl.d/60-wsedge.conf && sysctl --system")
}
