package bench

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// AttackConfig describes hostile clients a run adds beside its measured
// ones. Each population is bounded in count or rate, each connection in
// lifetime (Hold), and all of them in time: they attack only during the
// measured phase, from one loop of their own per worker process, and from
// source addresses of their own (127.1.0.1 … on a loopback target), so a
// server's per-address limits meet them and not the measured clients. The
// zero value adds none. A plain value, copied into every worker.
type AttackConfig struct {
	// Slowloris connections send their upgrade request one byte per
	// second; one the server closes is replaced, so this many keep trying.
	Slowloris int
	// NoRead connections upgrade, subscribe to the run's (first) channel
	// with a 4 KiB receive buffer and never read; replaced when they end.
	NoRead int
	// Flood connections send history requests for that channel with limit
	// HistoryLimit as fast as the socket takes them and never read the
	// replies; replaced when they end.
	Flood        int
	HistoryLimit int
	// Oversize is connections per second that send one text frame header
	// declaring OversizeLen bytes, then stream that payload.
	Oversize    float64
	OversizeLen int64
	// Overflow is connections per second that send a 1-byte text fragment
	// and a continuation declaring 2^63−1 bytes, then stream payload: a
	// message length that overflows a signed sum with the first fragment.
	Overflow float64
	// StreamMax bounds the payload one oversize or overflow connection
	// streams; it then waits, sending nothing, until it ends.
	StreamMax int64
	// Churn is connections per second that upgrade and close at once.
	Churn float64
	// Hold is the longest one attacker connection lives.
	Hold time.Duration
	// Sources is how many addresses 127.1.0.1 … attackers bind to.
	Sources int
}

func defaultAttack() AttackConfig {
	return AttackConfig{
		HistoryLimit: 1000,
		OversizeLen:  1 << 30,
		StreamMax:    16 << 20,
		Hold:         10 * time.Second,
		Sources:      64,
	}
}

// Attacker kinds; an attacker connection has exactly one.
const (
	kindSlowloris = iota
	kindNoRead
	kindFlood
	kindOversize
	kindOverflow
	kindChurn
	numKinds
)

// kindNames name the kinds in results, in kind order.
var kindNames = [numKinds]string{"slowloris", "never-read", "history-flood", "oversize", "overflow", "churn"}

// maxAttackRate caps each per-second kind.
const maxAttackRate = 10_000

// any reports whether c adds attackers at all.
func (c *AttackConfig) any() bool {
	return c.Slowloris > 0 || c.NoRead > 0 || c.Flood > 0 || c.Oversize > 0 || c.Overflow > 0 || c.Churn > 0
}

// needsChannel reports whether some attacker speaks the protocol on a channel.
func (c *AttackConfig) needsChannel() bool { return c.NoRead > 0 || c.Flood > 0 }

// population returns the count of a kept-up kind (0 for per-second kinds).
func (c *AttackConfig) population(kind int) int {
	switch kind {
	case kindSlowloris:
		return c.Slowloris
	case kindNoRead:
		return c.NoRead
	case kindFlood:
		return c.Flood
	}
	return 0
}

// rate returns the connections per second of a per-second kind.
func (c *AttackConfig) rate(kind int) float64 {
	switch kind {
	case kindOversize:
		return c.Oversize
	case kindOverflow:
		return c.Overflow
	case kindChurn:
		return c.Churn
	}
	return 0
}

// rateCap is how many connections of a per-second kind may be open at
// once: a Hold's worth.
func (c *AttackConfig) rateCap(kind int) int {
	r := c.rate(kind)
	if r == 0 {
		return 0
	}
	return int(math.Ceil(r * c.Hold.Seconds()))
}

// maxLive is the most attacker connections open at once, for the file
// budget.
func (c *AttackConfig) maxLive() int {
	n := 0
	for k := 0; k < numKinds; k++ {
		n += c.population(k) + c.rateCap(k)
	}
	return n
}

func (c *AttackConfig) validate() error {
	for _, f := range []struct {
		name string
		n    int
	}{{"slowloris", c.Slowloris}, {"no-read", c.NoRead}, {"history-flood", c.Flood}} {
		if f.n < 0 || f.n > MaxConns {
			return fmt.Errorf("%s: %d out of range 0..%d", f.name, f.n, MaxConns)
		}
	}
	for _, f := range []struct {
		name string
		r    float64
	}{{"oversize", c.Oversize}, {"overflow", c.Overflow}, {"churn", c.Churn}} {
		if !(f.r >= 0 && f.r <= maxAttackRate) {
			return fmt.Errorf("%s: %g per second out of range 0..%d", f.name, f.r, maxAttackRate)
		}
	}
	switch {
	case c.HistoryLimit < 0:
		return fmt.Errorf("history-limit: %d is negative", c.HistoryLimit)
	case c.OversizeLen < 126 || c.OversizeLen > math.MaxInt64/2:
		return fmt.Errorf("oversize-len: %d out of range 126..2^62", c.OversizeLen)
	case c.StreamMax < 0 || c.StreamMax > 1<<30:
		return fmt.Errorf("stream-max: %d out of range 0..1GiB", c.StreamMax)
	case c.Hold < 100*time.Millisecond || c.Hold > 10*time.Minute:
		return fmt.Errorf("attack-hold: %v out of range [100ms, 10m]", c.Hold)
	case c.Sources < 1 || c.Sources > 254:
		return fmt.Errorf("attack-sources: %d out of range 1..254", c.Sources)
	}
	return nil
}

// AttackStats is what became of one kind's connections; part of a Result.
// Every connection dialed ends with exactly one outcome, so the outcomes sum
// to Dialed:
//
//	close NNNN  the server sent a close frame with that code
//	http NNN    the server answered the upgrade with that status (not 101)
//	eof         the server closed the connection without either
//	reset       the connection was reset (ECONNRESET, EPIPE)
//	held        still open when it reached Hold or the run ended (for a
//	            never-reading one: no close within the 1 MiB then read)
//	error E     a local failure (socket, connect: errno name E)
type AttackStats struct {
	Kind     string `json:"kind"`
	Dialed   int64  `json:"dialed"`
	Upgraded int64  `json:"upgraded"` // 101 seen
	BytesOut int64  `json:"bytes_out"`
	// Requests: history requests written whole (history-flood only).
	Requests int64            `json:"requests,omitempty"`
	Outcomes map[string]int64 `json:"outcomes"`
}

func (a *AttackStats) add(o *AttackStats) {
	a.Dialed += o.Dialed
	a.Upgraded += o.Upgraded
	a.BytesOut += o.BytesOut
	a.Requests += o.Requests
	for k, v := range o.Outcomes {
		if a.Outcomes == nil {
			a.Outcomes = make(map[string]int64)
		}
		a.Outcomes[k] += v
	}
}

// outcomeTotal sums the outcomes.
func (a *AttackStats) outcomeTotal() int64 {
	var n int64
	for _, v := range a.Outcomes {
		n += v
	}
	return n
}

// String is one summary line: counts, then outcomes in a stable order.
func (a *AttackStats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-13s dialed %d  upgraded %d  sent %s", a.Kind, a.Dialed, a.Upgraded, fmtBytes(float64(a.BytesOut)))
	if a.Requests > 0 {
		fmt.Fprintf(&b, " (%d requests)", a.Requests)
	}
	b.WriteString("  →")
	keys := make([]string, 0, len(a.Outcomes))
	for k := range a.Outcomes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b.WriteString(" " + k + " " + strconv.FormatInt(a.Outcomes[k], 10) + ",")
	}
	return strings.TrimSuffix(b.String(), ",")
}

// mergeAttacks adds the kinds of src into dst by name, keeping kind order.
func mergeAttacks(dst []AttackStats, src []AttackStats) []AttackStats {
	for i := range src {
		found := false
		for j := range dst {
			if dst[j].Kind == src[i].Kind {
				dst[j].add(&src[i])
				found = true
				break
			}
		}
		if !found {
			var a AttackStats
			a.Kind = src[i].Kind
			a.add(&src[i])
			dst = append(dst, a)
		}
	}
	return dst
}
