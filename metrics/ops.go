package metrics

import (
	"fmt"
	"io"
	"strconv"

	vm "github.com/VictoriaMetrics/metrics"
)

// The metrics of this file explain what the counters of metrics.go count:
// where connections and subscriptions sit, how they end, how long a
// publication takes to reach the sockets, how the broker answers, and what
// the host (fds, RSS, kernel socket memory) pays for it all. docs/METRICS.md
// lists each with the alert to set on it.

// closeCodes is the bounded label set of wsedge_closes_total: the RFC 6455
// codes a connection can end with and wsedge's own 4000–4009
// (docs/PROTOCOL.md). Anything else a client sends counts as "other"; a
// connection that ended without a close frame counts as "none".
var closeCodes = []uint16{
	1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
	4000, 4001, 4002, 4003, 4004, 4005, 4006, 4007, 4008, 4009,
}

// CloseSlots is the number of distinct wsedge_closes_total series: the
// listed codes, "none" and "other".
const CloseSlots = 24

const (
	closeSlotNone  = 0
	closeSlotOther = 1
)

// CloseSlot maps a close code (0: no close frame) to its series index, for
// tallies kept on a loop in a plain array. It does not allocate.
func CloseSlot(code uint16) int {
	if code == 0 {
		return closeSlotNone
	}
	for i, c := range closeCodes {
		if c == code {
			return i + 2
		}
	}
	return closeSlotOther
}

// BrokerOps are the broker calls timed by wsedge_broker_call_seconds{op}.
var BrokerOps = []string{"subscribe", "publish", "history", "presence", "presence_stats"}

// Ops holds the metrics beside the plain counters. Its histograms and
// counters are safe for concurrent use; the gauges are callbacks the admin
// goroutine runs at scrape time.
type Ops struct {
	closes []*vm.Counter // by CloseSlot

	// PublishWrite: from a publication reaching this node (the broker's
	// handler) to the end of the write round that handed it to its
	// subscribers' sockets on one loop; one observation per loop, for a
	// sample of publications.
	PublishWrite *vm.PrometheusHistogram

	brokerCall   []*vm.PrometheusHistogram // by BrokerOps index
	brokerErrors []*vm.Counter
}

// latencyBuckets spans 50 µs to ~13 s in factors of two: a publication
// reaches a socket in well under a millisecond on an idle node and in
// seconds on a saturated one.
var latencyBuckets = vm.ExponentialBuckets(50e-6, 2, 19)

func newOps(s *vm.Set) *Ops {
	o := &Ops{
		closes:       make([]*vm.Counter, CloseSlots),
		PublishWrite: s.NewPrometheusHistogramExt(`wsedge_publish_write_seconds`, latencyBuckets),
	}
	o.closes[closeSlotNone] = s.NewCounter(`wsedge_closes_total{code="none"}`)
	o.closes[closeSlotOther] = s.NewCounter(`wsedge_closes_total{code="other"}`)
	for i, c := range closeCodes {
		o.closes[i+2] = s.NewCounter(`wsedge_closes_total{code="` + strconv.Itoa(int(c)) + `"}`)
	}
	for _, op := range BrokerOps {
		o.brokerCall = append(o.brokerCall, s.NewPrometheusHistogramExt(`wsedge_broker_call_seconds{op="`+op+`"}`, latencyBuckets))
		o.brokerErrors = append(o.brokerErrors, s.NewCounter(`wsedge_broker_errors_total{op="`+op+`"}`))
	}
	return o
}

// Closes returns the counter of connections that ended with the close code
// of slot (see CloseSlot).
func (o *Ops) Closes(slot int) *vm.Counter { return o.closes[slot] }

// BrokerCall returns the latency histogram of broker op i (BrokerOps).
func (o *Ops) BrokerCall(i int) *vm.PrometheusHistogram { return o.brokerCall[i] }

// BrokerErrors returns the error counter of broker op i (BrokerOps).
func (o *Ops) BrokerErrors(i int) *vm.Counter { return o.brokerErrors[i] }

// LoopGauges are read at scrape time for one event loop; each function
// must be safe to call from the admin goroutine (the engine reads atomics
// the loop refreshes on its tick).
type LoopGauges struct {
	Conns         func() float64 // connections on the loop
	Subscriptions func() float64 // subscriptions (connection × channel) on the loop
	OutboundBytes func() float64 // bytes waiting for slow sockets: queued frames plus gnet's unsent buffer
}

// RegisterLoop adds the per-loop gauges of loop idx. Call it once per loop.
func (m *Metrics) RegisterLoop(idx int, g LoopGauges) {
	shard := fmt.Sprintf(`{shard="%d"}`, idx)
	m.Set.NewGauge(`wsedge_loop_connections`+shard, g.Conns)
	m.Set.NewGauge(`wsedge_subscriptions`+shard, g.Subscriptions)
	m.Set.NewGauge(`wsedge_outbound_bytes`+shard, g.OutboundBytes)
}

// NodeGauges are read at scrape time for the node as a whole.
type NodeGauges struct {
	Channels       func() float64 // channels with at least one local subscriber
	MaxConnections func() float64 // the connection ceiling (fd limit or --max-conns)
}

// RegisterNode adds the node-wide gauges. Call it once.
func (m *Metrics) RegisterNode(g NodeGauges) {
	m.Set.NewGauge(`wsedge_channels`, g.Channels)
	m.Set.NewGauge(`wsedge_max_connections`, g.MaxConnections)
}

// BrokerStats is a snapshot of a networked broker's health (broker.Redis
// Stats), copied into a type of this package so that metrics imports
// nothing of the project.
type BrokerStats struct {
	Ready                 bool
	ShardsUp              int
	Reconnects            uint64
	ForcedResubscribes    uint64
	Refetched             uint64
	Lost                  uint64
	PresenceRefreshErrors uint64
}

// RegisterBrokerStats exports stats (called at scrape time, from the admin
// goroutine) as wsedge_broker_* series. Call it at most once.
func (m *Metrics) RegisterBrokerStats(stats func() BrokerStats) {
	m.Set.RegisterMetricsWriter(func(w io.Writer) {
		st := stats()
		ready := uint64(0)
		if st.Ready {
			ready = 1
		}
		vm.WriteGaugeUint64(w, `wsedge_broker_ready`, ready)
		vm.WriteGaugeUint64(w, `wsedge_broker_shards_up`, uint64(st.ShardsUp))
		vm.WriteCounterUint64(w, `wsedge_broker_reconnects_total`, st.Reconnects)
		vm.WriteCounterUint64(w, `wsedge_broker_forced_resubscribes_total`, st.ForcedResubscribes)
		vm.WriteCounterUint64(w, `wsedge_broker_refetched_total`, st.Refetched)
		vm.WriteCounterUint64(w, `wsedge_broker_lost_total`, st.Lost)
		vm.WriteCounterUint64(w, `wsedge_broker_presence_refresh_errors_total`, st.PresenceRefreshErrors)
	})
}
