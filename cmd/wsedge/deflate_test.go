package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Interop of permessage-deflate with the clients that offer it by default:
// Node.js `ws`, Python `websockets` and Chromium. Each sends the same kinds
// of random messages (chat JSON, runs, printable noise, random binary; up
// to 200 KB, sizes around deflate's block and window boundaries) to
// `wsedge serve --echo`, compressed, and checks every echo byte for byte:
// our klauspost-based inflate against zlib (Node, Python) and Chromium's
// zlib, and their inflaters against our output. The server's byte counters
// then show that compression really happened both ways.

// deflateResult is the JSON line each client prints.
type deflateResult struct {
	Extensions string `json:"extensions"`
	Echoed     int    `json:"echoed"`
	Bytes      int64  `json:"bytes"`
	Error      string `json:"error"`
}

const deflateMessages = 60

// runDeflateClient runs one client command against a fresh echo server and
// checks its result and the server's counters.
func runDeflateClient(t *testing.T, dir string, env []string, name string, args ...string) {
	t.Helper()
	p := startServe(t, "", "--echo", "--max-message", "1048576")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	url := "ws://" + p.ws + "/ws"
	for i, a := range args {
		args[i] = strings.ReplaceAll(a, "$URL", url)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "WSEDGE_URL="+url), env...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\nstdout: %s\nstderr: %s", name, err, out, stderr.String())
	}
	var r deflateResult
	if err := json.Unmarshal(out, &r); err != nil || r.Error != "" {
		t.Fatalf("%s: result %q (%v)\nstderr: %s", name, out, err, stderr.String())
	}
	if r.Echoed != deflateMessages || !strings.HasPrefix(r.Extensions, "permessage-deflate") {
		t.Fatalf("%s: %+v", name, r)
	}
	// Every payload went both ways; compressed, the JSON and runs (half
	// the messages, most of the bytes) shrink many times over.
	in := metricValue(t, p.admin, `wsedge_bytes_total{dir="in"}`)
	outB := metricValue(t, p.admin, `wsedge_bytes_total{dir="out"}`)
	t.Logf("%s: %d messages, %d payload bytes each way; on the wire %.0f in, %.0f out (extensions %q)",
		name, r.Echoed, r.Bytes, in, outB, r.Extensions)
	if outB > 0.8*float64(r.Bytes) || in > 0.8*float64(r.Bytes) {
		t.Fatalf("%s: %.0f bytes in and %.0f out for %d payload bytes each way: not compressed", name, in, outB, r.Bytes)
	}
}

// TestDeflateNode: Node.js `ws` (npm, pinned in testdata/deflate), which
// inflates and deflates with zlib.
func TestDeflateNode(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not found (.ci/run installs it)")
	}
	dir, _ := filepath.Abs(filepath.Join("testdata", "deflate"))
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "ws")); err != nil {
		t.Fatalf("ws is not installed: run `npm ci` in %s (make browser-deps and .ci/run do): %v", dir, err)
	}
	runDeflateClient(t, dir, nil, node, "echo.mjs", "$URL", strconv.Itoa(deflateMessages), "11")
}

// TestDeflatePython: Python `websockets` (Debian's python3-websockets,
// which .ci/run installs; zlib underneath).
func TestDeflatePython(t *testing.T) {
	var py string
	for _, c := range []string{"/usr/bin/python3", "python3"} {
		if p, err := exec.LookPath(c); err == nil && exec.Command(p, "-c", "import websockets").Run() == nil {
			py = p
			break
		}
	}
	if py == "" {
		t.Skip("no python3 with the websockets package (apt-get install python3-websockets; .ci/run does)")
	}
	dir, _ := filepath.Abs(filepath.Join("testdata", "deflate"))
	runDeflateClient(t, dir, nil, py, "echo.py", "$URL", strconv.Itoa(deflateMessages), "12")
}

// TestDeflateBrowser: headless Chromium, whose WebSocket offers
// permessage-deflate on its own.
func TestDeflateBrowser(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not found: the browser test needs Node.js and Debian's chromium (.ci/run installs both)")
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium not found (apt-get install chromium; .ci/run does)")
	}
	dir, _ := filepath.Abs(filepath.Join("testdata", "browser"))
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core")); err != nil {
		t.Fatalf("playwright-core is not installed: run `npm ci` in %s (.ci/run does): %v", dir, err)
	}
	runDeflateClient(t, dir, []string{"CHROMIUM=" + chromium, "WSEDGE_COUNT=" + strconv.Itoa(deflateMessages), "WSEDGE_SEED=13"}, node, "deflate.js")
}
