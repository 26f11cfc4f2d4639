package engine

import (
	"math/rand/v2"
	"time"
)

// reconnectDelay draws the reconnect delay of one drained connection, in
// milliseconds, uniformly from 1..DrainReconnectWindow (0 is "no delay" on the wire). The drain already
// spreads its closes over DrainGrace, but a node drained with a short grace
// (or whose clients all reconnect to the same few peers) would still send
// every client back within that grace; the delay in the disconnect push
// spreads the returns over a window of their own, independent of how fast
// the node emptied. Called on a loop goroutine; rand's global source is
// safe there and does not allocate.
func (s *Server) reconnectDelay() uint64 {
	w := s.cfg.DrainReconnectWindow
	if w < time.Millisecond {
		return 0
	}
	return rand.Uint64N(uint64(w/time.Millisecond)) + 1
}
