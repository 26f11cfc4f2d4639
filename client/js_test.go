package client

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestJSUnit runs the browser client's unit tests (client/js/test, node's
// own test runner, no packages) so that `make test` covers them. Without
// node it skips, except on CI, which installs it (.ci/run).
func TestJSUnit(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("node not found on CI: %v", err)
		}
		t.Skip("node not found: the JS client's unit tests need Node.js (.ci/run installs it)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, node, "--test", "js/test/").CombinedOutput()
	if err != nil {
		t.Fatalf("node --test js/test/: %v\n%s", err, out)
	}
	if testing.Verbose() {
		t.Logf("%s", out)
	}
}
