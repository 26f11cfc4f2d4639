package engine

import (
	"sync/atomic"
	"time"

	"github.com/wsedge/wsedge/broker"
	"github.com/wsedge/wsedge/metrics"
	"github.com/wsedge/wsedge/shard"
)

// The metrics that explain (docs/METRICS.md): connections, subscriptions
// and held outbound bytes per loop, close codes, a sampled publish → socket
// write latency, broker call latency and errors. Hot paths pay at most one
// atomic add or load: loop-owned figures are plain integers the tick
// copies into atomics (read by scrapes) or adds to the shared counters.

// sampleEvery: one publication in 64 (and one inline broker call in 64) is
// timed; a timed one costs two clock reads and a histogram update.
const sampleEvery = 64

// opsClock is the monotonic base of the sampled timestamps.
var opsClock = time.Now()

func opsNow() int64 { return int64(time.Since(opsClock)) }

// serverOps is the node's part: sampling sequences, any goroutine.
type serverOps struct {
	pubSeq    atomic.Uint64
	brokerSeq atomic.Uint64
}

// loopOps is one loop's part. The atomics are written by the loop on its
// tick and read by scrapes; the rest is the loop's own.
type loopOps struct {
	conns, subs, outbound atomic.Int64

	closes [metrics.CloseSlots]uint64 // by metrics.CloseSlot, until the tick

	// The publish → write sample: a publisher arms the slot (0 free, 1
	// being armed, 2 armed) with the frame it is about to push and when it
	// arrived; the loop notes when it hands that frame to subscribers
	// (hit) and observes the delay at the end of that write round. The
	// frame cannot be recycled while armed: the inbox holds a reference
	// until the loop has handled it, and the slot is armed before the push.
	armed   atomic.Int32
	sampleF *shard.Frame
	sampleT int64
	hit     bool
}

// initOps registers the node-wide gauges and, for a broker that keeps
// health counters (broker.Redis), its stats. Called once from New.
func (s *Server) initOps() {
	s.m.RegisterNode(metrics.NodeGauges{
		Channels:       func() float64 { return float64(s.hub.Len()) },
		MaxConnections: func() float64 { return float64(s.maxConns) },
	})
	if r, ok := s.broker.(interface{ Stats() broker.RedisStats }); ok {
		s.m.RegisterBrokerStats(func() metrics.BrokerStats {
			st := r.Stats()
			return metrics.BrokerStats{
				Ready: st.Ready, ShardsUp: st.ShardsUp, Reconnects: st.Reconnects,
				ForcedResubscribes: st.ForcedResubscribes, Refetched: st.Refetched,
				Lost: st.Lost, PresenceRefreshErrors: st.PresenceRefreshErrors,
			}
		})
	}
}

// registerLoopOps adds loop l's gauges. Called once per loop, under s.mu.
func (s *Server) registerLoopOps(l *loop) {
	s.m.RegisterLoop(l.idx, metrics.LoopGauges{
		Conns:         func() float64 { return float64(l.ops.conns.Load()) },
		Subscriptions: func() float64 { return float64(l.ops.subs.Load()) },
		OutboundBytes: func() float64 { return float64(l.ops.outbound.Load()) },
	})
}

// opsTick publishes the loop's gauges and close-code tallies. On the loop,
// every tick; it walks only the connections that wait on their socket.
func (l *loop) opsTick() {
	o := &l.ops
	o.conns.Store(int64(l.conns))
	o.subs.Store(int64(l.index.Len()))
	var held int64
	for _, c := range l.pending {
		if c.state != stateClosed {
			held += int64(c.sess.q.Bytes()) + int64(c.gc.OutboundBuffered())
		}
	}
	for _, p := range l.paused {
		if c := p.c; c.state != stateClosed && !(c.sess != nil && c.sess.pending) {
			held += int64(c.gc.OutboundBuffered())
		}
	}
	o.outbound.Store(held)
	for i, n := range o.closes {
		if n > 0 {
			l.srv.m.Ops.Closes(i).Add(int(n))
			o.closes[i] = 0
		}
	}
}

// countClose tallies how an open connection ended (on the loop, at close).
func (l *loop) countClose(c *conn) { l.ops.closes[metrics.CloseSlot(c.closeCode)]++ }

// samplePublish returns the arrival time of a publication chosen for the
// latency sample, or 0. Any goroutine; one atomic add.
func (s *Server) samplePublish() int64 {
	if s.ops.pubSeq.Add(1)%sampleEvery != 0 {
		return 0
	}
	return opsNow()
}

// armSample marks f, arrived at t0, as loop l's sample unless one is
// already pending there. Called by the publisher before it pushes f.
func (l *loop) armSample(f *shard.Frame, t0 int64) {
	o := &l.ops
	if o.armed.CompareAndSwap(0, 1) {
		o.sampleF, o.sampleT = f, t0
		o.armed.Store(2)
	}
}

// sawPush notes, on the loop, that the sampled frame is being queued.
// One atomic load per push.
func (l *loop) sawPush(f *shard.Frame) {
	if l.ops.armed.Load() == 2 && l.ops.sampleF == f {
		l.ops.hit = true
	}
}

// observeSample records the sample once its write round is done (end of
// flushAll) and frees the slot.
func (l *loop) observeSample() {
	o := &l.ops
	if !o.hit {
		return
	}
	o.hit = false
	l.srv.m.Ops.PublishWrite.Update(float64(opsNow()-o.sampleT) / 1e9)
	o.sampleF = nil
	o.armed.Store(0)
}

// brokerOpIndex maps an op to its metrics.BrokerOps series.
func brokerOpIndex(k opKind) int {
	switch k {
	case opSubscribe, opServerSub:
		return 0
	case opPublish:
		return 1
	case opHistory:
		return 2
	case opPresence:
		return 3
	}
	return 4
}

// runOp runs op's broker calls, timing them: every call on the broker
// side's workers (they wait on the network), one in sampleEvery inline
// (memory broker, on the loop). Errors are always counted.
func (s *Server) runOp(op *brokerOp) {
	timed := s.bside != nil || s.ops.brokerSeq.Add(1)%sampleEvery == 0
	var t0 time.Time
	if timed {
		t0 = time.Now()
	}
	op.run(s)
	i := brokerOpIndex(op.kind)
	if timed {
		s.m.Ops.BrokerCall(i).UpdateDuration(t0)
	}
	if op.err != nil {
		s.m.Ops.BrokerErrors(i).Inc()
	}
}
