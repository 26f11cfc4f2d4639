package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestTuneCheck runs `tune check` on this machine: the JSON report carries
// the real RLIMIT_NOFILE, and the exit code is 1 exactly when the target is
// above the ceiling it reports.
func TestTuneCheck(t *testing.T) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	code := tuneCheck([]string{"--json", "--loops", "2", "--target-conns", "1"}, &out)
	var r struct {
		NoFile   uint64 `json:"nofile_hard"`
		MaxConns int64  `json:"max_conns"`
		OK       bool   `json:"ok"`
		Items    []struct{ Name, Status string }
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if code != 0 || !r.OK || r.NoFile != rl.Max || r.MaxConns > int64(rl.Max)-106 || len(r.Items) < 10 {
		t.Fatalf("exit %d, report %+v, RLIMIT_NOFILE hard %d", code, r, rl.Max)
	}
	out.Reset()
	if code := tuneCheck([]string{"--loops", "2", "--target-conns", "100000000"}, &out); code != 1 {
		t.Fatalf("exit %d for a target above the ceiling", code)
	}
	if !strings.Contains(out.String(), "is BELOW the target of 100000000") {
		t.Fatalf("text report:\n%s", out.String())
	}
}

// TestTunePlan runs `tune plan` with the load and with costs from
// a bench result.
func TestTunePlan(t *testing.T) {
	dir := t.TempDir()
	idle := filepath.Join(dir, "idle.json")
	if err := os.WriteFile(idle, []byte(`{"mode":"idle","conns":19000,"server":{"rss_per_conn_bytes":1000,"cpu_percent":1}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	code := tunePlan([]string{"--conns", "1000000", "--publish-rate", "5000", "--avg-fanout", "200", "--payload", "256",
		"--from", idle, "--kernel-bytes-per-conn", "4000", "--json"}, &out)
	var p struct {
		ProcessBytes int64 `json:"process_bytes"`
		KernelBytes  int64 `json:"kernel_bytes"`
		Cores        int   `json:"cores"`
		FDs          int64 `json:"fds"`
	}
	if err := json.Unmarshal(out.Bytes(), &p); code != 0 || err != nil {
		t.Fatalf("exit %d, %v: %s", code, err, out.String())
	}
	if p.KernelBytes != 4000*1000000 || p.ProcessBytes != 32<<20+1000*1000000 || p.Cores != 15 || p.FDs < 1000000 {
		t.Fatalf("%+v", p)
	}
	if code := tunePlan([]string{"--publish-rate", "1"}, &out); code != 2 {
		t.Fatalf("exit %d without --conns", code)
	}
	if code := runTune([]string{"nonsense"}); code != 2 {
		t.Fatalf("exit %d for an unknown subcommand", code)
	}
}
