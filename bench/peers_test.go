package bench

import "testing"

// TestAgainstGorillaPeer drives every mode against the gorilla peer from
// bench/peers, so the load generator is checked against an independent
// server implementation.
func TestAgainstGorillaPeer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the gorilla peer")
	}
	bin, out := buildBinary(t, "peers", "./cmd/gorilla", "peer-gorilla")
	if bin == "" {
		t.Skipf("bench/peers does not build here (module cache offline?):\n%s", out)
	}
	echo := startServer(t, bin, "--listen", "127.0.0.1:0", "--echo")
	bcast := startServer(t, bin, "--listen", "127.0.0.1:0")
	checkModes(t, echo, bcast)
}
