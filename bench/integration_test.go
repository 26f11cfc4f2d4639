package bench

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestAgainstWsedge builds the real wsedge binary, starts `serve --echo`
// and a broadcast `serve` on 127.0.0.1:0 and runs every mode through the
// real CLI path's library entry point.
func TestAgainstWsedge(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs wsedge")
	}
	bin, out := buildBinary(t, "..", "./cmd/wsedge", "wsedge")
	if bin == "" {
		t.Skipf("wsedge does not build yet:\n%s", out)
	}
	echo := startServer(t, bin, "serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--echo")
	bcast := startServer(t, bin, "serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0")
	checkModes(t, echo, bcast)

	t.Run("cli", func(t *testing.T) {
		// The command line end to end: flags, child processes, JSON output.
		plot := filepath.Join(t.TempDir(), "latency.png")
		cmd := exec.Command(bin, "bench", "echo", "--url", "ws://"+echo.ws+"/ws", "--conns", "20",
			"--procs", "2", "--rate", "10", "--size", "64", "--duration", "500ms", "--json", "--plot", plot)
		b, err := cmd.Output()
		if err != nil {
			t.Fatalf("wsedge bench: %v\n%s", err, b)
		}
		rs, err := ReadResults(bytes.NewReader(b))
		if err != nil || len(rs) != 1 {
			t.Fatalf("reading --json output: %v (%d results)\n%s", err, len(rs), b)
		}
		r := rs[0]
		if r.Procs != 2 || r.Stats.Connected != 20 || r.Missing != 0 || r.Stats.Errors != 0 || r.Latency.Count == 0 {
			t.Fatalf("cli result: %+v", r)
		}
		png, err := os.ReadFile(plot)
		if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
			t.Fatalf("--plot wrote no PNG: %v", err)
		}
	})
}
