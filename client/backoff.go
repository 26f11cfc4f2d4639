package client

import (
	"math"
	"time"
)

// Backoff is the reconnect schedule: attempt n (from 0) waits a uniformly
// random duration in [0, min(Max, Min·Factor^n)] ("full jitter"), so that
// clients cut off together spread their retries instead of hitting the
// server in waves. The attempt count resets after a connection that stayed
// up for the client's healthy period.
type Backoff struct {
	Min    time.Duration // ceiling of the first attempt's wait (default 500 ms)
	Max    time.Duration // ceiling of any wait (default 20 s)
	Factor float64       // growth of the ceiling per attempt (default 2)
}

// DefaultBackoff returns the defaults: 0.5 s, 20 s, factor 2.
func DefaultBackoff() Backoff {
	return Backoff{Min: 500 * time.Millisecond, Max: 20 * time.Second, Factor: 2}
}

// Ceiling returns the largest wait of attempt n.
func (b Backoff) Ceiling(attempt int) time.Duration {
	c := float64(b.Min) * math.Pow(b.Factor, float64(attempt))
	if c >= float64(b.Max) || math.IsInf(c, 0) || math.IsNaN(c) {
		return b.Max
	}
	return time.Duration(c)
}

// Delay returns attempt n's wait, u being a uniform random number in [0, 1).
func (b Backoff) Delay(attempt int, u float64) time.Duration {
	return time.Duration(u * float64(b.Ceiling(attempt)+1))
}

func (b Backoff) validate() error {
	if b.Min <= 0 || b.Max < b.Min || b.Factor < 1 {
		return errorf("backoff: want 0 < Min <= Max and Factor >= 1, have %v, %v, %v", b.Min, b.Max, b.Factor)
	}
	return nil
}
