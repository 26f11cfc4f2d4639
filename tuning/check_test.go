package tuning

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

func TestProfileShipped(t *testing.T) {
	p := Profile()
	keys := map[string]bool{}
	for _, s := range p {
		if s.Why == "" {
			t.Errorf("%s: no comment saying why", s.Key)
		}
		keys[s.Key] = true
	}
	for _, k := range []string{"fs.file-max", "fs.nr_open", "net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog",
		"net.ipv4.ip_local_port_range", "net.ipv4.tcp_mem", "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem",
		"net.ipv4.tcp_fin_timeout", "net.netfilter.nf_conntrack_max", "net.core.netdev_max_backlog"} {
		if !keys[k] {
			t.Errorf("profile lacks %s", k)
		}
	}
}

func TestParseProfileErrors(t *testing.T) {
	for name, text := range map[string]string{
		"no rule":      "# why\nfs.file-max = 1\n",
		"bad rule":     "# check: most\nfs.file-max = 1\n",
		"bad value":    "# check: min\nfs.file-max = lots\n",
		"negative":     "# check: min\nfs.file-max = -1\n",
		"no equals":    "# check: min\nfs.file-max 1\n",
		"range of one": "# check: range\nnet.ipv4.ip_local_port_range = 1024\n",
		"empty":        "# only a comment\n",
	} {
		if _, err := ParseProfile(text); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func itemsByName(r Report) map[string]Item {
	m := map[string]Item{}
	for _, it := range r.Items {
		m[it.Name] = it
	}
	return m
}

// TestCheckFake runs the check on two fixed hosts: one tuned to the profile
// (cgroup v2, 16 GiB, 8 cores) and one on kernel defaults in a cgroup v1
// container (4 GiB, 1.5 cores, conntrack loaded).
func TestCheckFake(t *testing.T) {
	costs := DefaultCosts()
	t.Run("tuned", func(t *testing.T) {
		r := Check(CheckInput{Root: "testdata/tuned", NoFileSoft: 1048576, NoFileHard: 1048576, Loops: 8,
			TargetConns: 1000000, Costs: costs, Profile: Profile()})
		for _, it := range r.Items {
			if it.Status != Pass {
				t.Errorf("%s: %s (have %s, want %s)", it.Name, it.Status, it.Have, it.Want)
			}
		}
		items := itemsByName(r)
		if got := items["net.netfilter.nf_conntrack_max"].Have; !strings.Contains(got, "not loaded") {
			t.Errorf("conntrack: %q", got)
		}
		if got := items["cgroup.cpu"].Have; got != "8 cores (quota)" {
			t.Errorf("cgroup cpu %q (the parent's cpu.max applies)", got)
		}
		if want := int64(1048576 - 100 - 3*8); r.MaxConns != want || r.LimitedBy != "rlimit.nofile" || !r.OK {
			t.Errorf("ceiling %d by %s ok=%v, want %d by rlimit.nofile", r.MaxConns, r.LimitedBy, r.OK, want)
		}
	})
	t.Run("defaults", func(t *testing.T) {
		r := Check(CheckInput{Root: "testdata/defaults", NoFileSoft: 1024, NoFileHard: 65536, Loops: 1,
			TargetConns: 1000000, Costs: costs, Profile: Profile()})
		want := map[string]Status{
			"fs.file-max":                    Pass,
			"fs.nr_open":                     Warn, // below the profile, above the target
			"net.core.somaxconn":             Warn,
			"net.ipv4.tcp_max_syn_backlog":   Warn,
			"net.ipv4.ip_local_port_range":   Warn,
			"net.ipv4.tcp_mem":               Warn,
			"net.ipv4.tcp_rmem":              Warn,
			"net.ipv4.tcp_wmem":              Warn,
			"net.ipv4.tcp_fin_timeout":       Warn,
			"net.netfilter.nf_conntrack_max": Fail,
			"net.core.netdev_max_backlog":    Warn,
			"net.ipv4.tcp_tw_reuse":          Warn,
			"rlimit.nofile":                  Fail,
			"cgroup.memory":                  Fail,
			"cgroup.cpu":                     Pass,
		}
		items := itemsByName(r)
		for name, st := range want {
			it, ok := items[name]
			if !ok || it.Status != st {
				t.Errorf("%s: %q (have %q), want %s", name, it.Status, it.Have, st)
			}
			if st != Pass && it.Fix == "" && name != "cgroup.cpu" {
				t.Errorf("%s: %s without a fix", name, st)
			}
		}
		if f := items["net.core.somaxconn"].Fix; f != "sysctl -w net.core.somaxconn='65535'" {
			t.Errorf("fix %q", f)
		}
		if got := items["cgroup.cpu"].Have; got != "1.5 cores (quota)" {
			t.Errorf("cgroup v1 cpu %q", got)
		}
		if got := items["cgroup.memory"].Have; got != "4.0 GiB" {
			t.Errorf("cgroup v1 memory %q", got)
		}
		if r.MaxConns != 65536-103 || r.LimitedBy != "rlimit.nofile" || r.OK {
			t.Errorf("ceiling %d by %s ok=%v", r.MaxConns, r.LimitedBy, r.OK)
		}
		var mem int64 = -1
		for _, c := range r.Ceilings {
			if c.Limit == "cgroup.memory" {
				mem = c.Conns
			}
		}
		if want := int64(702276); mem != want { // (4 GiB - 32 MiB) / (768 + 5300) B
			t.Errorf("memory ceiling %d, want %d", mem, want)
		}
		var b bytes.Buffer
		r.WriteText(&b)
		if !strings.Contains(b.String(), "is BELOW the target of 1000000") {
			t.Errorf("text report:\n%s", b.String())
		}
	})
}

// TestCheckLive runs on this machine: the reported hard limit is the real
// RLIMIT_NOFILE and the fd ceiling is what serve would compute.
func TestCheckLive(t *testing.T) {
	soft, hard, err := ReadNoFile()
	if err != nil {
		t.Fatal(err)
	}
	r := Check(CheckInput{Root: "/", NoFileSoft: soft, NoFileHard: hard, Loops: 2, Costs: DefaultCosts(), Profile: Profile()})
	if r.NoFile != hard {
		t.Fatalf("reported RLIMIT_NOFILE %d, real %d", r.NoFile, hard)
	}
	l, err := RaiseNoFile()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range r.Ceilings {
		if c.Limit == "rlimit.nofile" && c.Conns != int64(l.MaxConns(2)) {
			t.Fatalf("fd ceiling %d, serve's %d", c.Conns, l.MaxConns(2))
		}
	}
	if r.MaxConns > int64(l.MaxConns(2)) || r.MaxConns <= 0 {
		t.Fatalf("ceiling %d above the fd ceiling %d", r.MaxConns, l.MaxConns(2))
	}
	if _, err := os.Stat("/proc/sys/net/core/somaxconn"); err == nil {
		if it := itemsByName(r)["net.core.somaxconn"]; strings.HasPrefix(it.Have, "unreadable") {
			t.Fatalf("somaxconn %q", it.Have)
		}
	}
}
