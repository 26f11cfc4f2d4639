package engine

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/wsedge/wsedge/broker"
	"github.com/wsedge/wsedge/protocol"
	"github.com/wsedge/wsedge/shard"
)

// The engine↔broker boundary (DESIGN.md, "The broker boundary"). A command
// that needs the broker becomes a brokerOp: the loop prepares it (checks,
// index and hub), the broker side runs its calls (run), and the loop writes
// the reply when the result comes back (complete). With a broker whose
// calls never block (broker.Memory) run happens inline on the loop, exactly
// as before; with any other (Redis) it happens on one of a fixed pool of
// worker goroutines and the result returns through the loop's inbox, so no
// loop ever waits on the broker. While a connection has an op in flight the
// loop stops reading it (its further commands wait in the kernel), which
// keeps its replies in command order.

// opKind says which broker calls an op makes.
type opKind uint8

const (
	opSubscribe     opKind = iota + 1 // reconcile the node's subscription, add presence, read the position (and recovery)
	opServerSub                       // the same for a token's subs claim: answered with a subscribed push
	opPublish                         // publish
	opHistory                         // history
	opPresence                        // presence list
	opPresenceStats                   // presence counts
	opResume                          // a subscription carried over a handoff: as opSubscribe, answered with the missed publications as pushes
)

// brokerOp is one command's broker work. The loop fills the request part
// and owns the op again when its result comes back; in between only the
// worker touches it.
type brokerOp struct {
	kind opKind
	l    *loop
	c    *conn
	id   uint64 // command id to reply to
	ch   string
	ns   *Namespace
	sub  *subscription // opSubscribe, opServerSub
	// retry is, for opServerSub, the wait in ticks before this attempt
	// (0: the first); see serversub.go.
	retry int64
	data  []byte // opPublish, owned by the op
	info  broker.ClientInfo
	req   broker.HistoryRequest
	hist  bool // read history (subscribe in a namespace with history)

	// ingest, when set, is an ingest request's work (engine/ingest_ops.go):
	// it runs its own calls and completes on its ingest loop.
	ingest *ingestOp

	// Results.
	err     error
	pos     broker.StreamPosition
	res     broker.HistoryResult
	stats   broker.PresenceStats
	members map[string]broker.ClientInfo
}

// brokerCallTimeout bounds one op's broker calls on a worker.
const brokerCallTimeout = 5 * time.Second

// run makes the op's broker calls. It runs on the loop (inline brokers) or
// a worker, never touching loop state.
func (op *brokerOp) run(s *Server) {
	c, cancel := context.WithTimeout(context.Background(), brokerCallTimeout)
	defer cancel()
	switch op.kind {
	case opSubscribe, opServerSub, opResume:
		// Every subscribe reconciles, not only a loop's first: another
		// loop's first subscribe may still be on its way to the broker,
		// and a reconcile that finds the node subscribed costs a lock.
		if op.err = s.syncBroker(op.ch); op.err != nil {
			return
		}
		if op.ns.Presence {
			if err := s.presence.AddPresence(c, op.ch, op.info); err != nil {
				s.log.Warn("presence add", "channel", op.ch, "err", err)
			}
		}
		if op.hist {
			op.res, op.err = s.broker.History(c, op.ch, op.req)
		}
	case opPublish:
		op.pos, op.err = s.broker.Publish(c, op.ch, op.data,
			broker.PublishOptions{HistorySize: op.ns.HistorySize, HistoryTTL: op.ns.HistoryTTL})
	case opHistory:
		op.res, op.err = s.broker.History(c, op.ch, op.req)
	case opPresence:
		op.members, op.err = s.presence.Presence(c, op.ch)
	case opPresenceStats:
		op.stats, op.err = s.presence.PresenceStats(c, op.ch)
	}
}

// brokerSide runs ops off the loops: a bounded queue of command ops
// (full: the command is refused "overloaded") and a set of channels whose
// broker subscription must be reconciled or whose presence entries must go,
// which is bounded by the node's own state and never refused.
type brokerSide struct {
	ops chan *brokerOp

	mu      sync.Mutex
	reconc  map[string]struct{}
	removes []presenceRemoval
	kick    chan struct{}

	stop chan struct{}
	wg   sync.WaitGroup
}

type presenceRemoval struct{ channel, client string }

// brokerWorkers is the pool size: enough to keep many slow broker calls in
// flight (each waits on the network), few enough to stay a constant.
const (
	brokerWorkers  = 32
	brokerQueueLen = 8192
)

func newBrokerSide(s *Server) *brokerSide {
	b := &brokerSide{
		ops:    make(chan *brokerOp, brokerQueueLen),
		reconc: make(map[string]struct{}),
		kick:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
	}
	for range brokerWorkers {
		b.wg.Add(1)
		go b.work(s)
	}
	b.wg.Add(1)
	go b.background(s)
	return b
}

func (b *brokerSide) work(s *Server) {
	defer b.wg.Done()
	for {
		select {
		case <-b.stop:
			return
		case op := <-b.ops:
			if op.ingest != nil {
				op.ingest.run(s)
				op.ingest.c.il.post(op.ingest)
				continue
			}
			s.runOp(op)
			l := op.l
			if l.inbox.Push(shard.Msg{Kind: msgOp, Ptr: op}) {
				l.wake()
			}
		}
	}
}

// background reconciles channels and removes presence entries, in batches.
func (b *brokerSide) background(s *Server) {
	defer b.wg.Done()
	for {
		select {
		case <-b.stop:
			return
		case <-b.kick:
		}
		b.mu.Lock()
		chans := make([]string, 0, len(b.reconc))
		for ch := range b.reconc {
			chans = append(chans, ch)
		}
		clear(b.reconc)
		removes := b.removes
		b.removes = nil
		b.mu.Unlock()
		for _, ch := range chans {
			_ = s.syncBroker(ch)
		}
		c, cancel := context.WithTimeout(context.Background(), brokerCallTimeout)
		for _, r := range removes {
			_ = s.presence.RemovePresence(c, r.channel, r.client)
		}
		cancel()
	}
}

func (b *brokerSide) signal() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

func (b *brokerSide) reconcile(ch string) {
	b.mu.Lock()
	b.reconc[ch] = struct{}{}
	b.mu.Unlock()
	b.signal()
}

func (b *brokerSide) removePresence(ch, client string) {
	b.mu.Lock()
	b.removes = append(b.removes, presenceRemoval{ch, client})
	b.mu.Unlock()
	b.signal()
}

func (b *brokerSide) close() {
	close(b.stop)
	b.wg.Wait()
}

// errBusy ends a Parse after a command whose broker op is in flight: the
// connection is not read until its result is back.
var errBusy = errors.New("engine: waiting for the broker")

// do runs op inline (a broker that never blocks) and completes it, or hands
// it to the broker side and stops reading the connection until the result
// comes back (handleOp). A full queue refuses the command ("overloaded").
func (l *loop) do(op *brokerOp) error {
	s := l.srv
	if s.bside == nil {
		s.runOp(op)
		return l.complete(op)
	}
	if op.sub != nil {
		op.sub.hold = &heldPushes{}
	}
	select {
	case s.bside.ops <- op:
	default:
		op.err = errOverloaded
		return l.complete(op)
	}
	c := op.c
	c.sess.inflight++
	l.setReading(c, false)
	return errBusy
}

var errOverloaded = errors.New("engine: broker queue full")

// complete writes op's reply on the loop.
func (l *loop) complete(op *brokerOp) error {
	if op.err == errOverloaded && op.kind != opServerSub && op.sub == nil {
		l.srv.m.OverloadRefused.Inc()
		return l.replyErrorID(op.c, op.id, protocol.CodeUnavailable, protocol.MsgOverloaded)
	}
	switch op.kind {
	case opSubscribe, opServerSub:
		return l.completeSubscribe(op)
	case opResume:
		return l.completeResume(op)
	case opPublish:
		return l.completePublish(op)
	case opHistory:
		return l.completeHistory(op)
	}
	return l.completePresence(op)
}

// handleOp is an op's result coming back to the loop: the reply leaves,
// and the connection is read again once nothing else is in flight.
func (l *loop) handleOp(op *brokerOp) {
	c := op.c
	if c.sess != nil {
		c.sess.inflight--
	}
	if c.state != stateOpen {
		if op.sub != nil && op.sub.hold != nil {
			op.sub.hold.release()
			op.sub.hold = nil
		}
		return
	}
	l.batch = c
	err := l.complete(op)
	l.endBatch()
	if err != nil || c.state != stateOpen || c.sess.inflight > 0 || c.paused {
		return
	}
	l.setReading(c, true)
	if c.gc.InboundBuffered() > 0 {
		_ = c.gc.Wake(nil)
	}
}

// heldPushes are the pushes that reached a subscription while its
// subscribe waited on the broker, in arrival order. They are bounded like
// the connection's queue; past that they are dropped and the client is
// told to recover (a lagged push after the reply).
type heldPushes struct {
	pushes []heldPush
	bytes  int
	lost   bool
}

type heldPush struct {
	f      *shard.Frame
	offset uint64
	epoch  string
}

func (h *heldPushes) add(f *shard.Frame, offset uint64, epoch string, maxBytes int) {
	if h.lost || h.bytes+f.Cost() > maxBytes {
		h.lost = true
		return
	}
	f.Retain()
	h.pushes = append(h.pushes, heldPush{f, offset, epoch})
	h.bytes += f.Cost()
}

// release drops the held references; a nil h is empty.
func (h *heldPushes) release() {
	if h == nil {
		return
	}
	for i, p := range h.pushes {
		p.f.Release()
		h.pushes[i] = heldPush{}
	}
	h.pushes = nil
}

// reconcile brings the node's broker subscription to channel in line with
// the hub: inline, or in the background with a broker that may block.
func (s *Server) reconcile(channel string) {
	if s.bside == nil {
		_ = s.syncBroker(channel)
		return
	}
	s.bside.reconcile(channel)
}

// removePresence takes a client out of a channel's presence: inline, or in
// the background.
func (s *Server) removePresence(channel, client string) {
	if s.bside == nil {
		_ = s.presence.RemovePresence(ctx, channel, client)
		return
	}
	s.bside.removePresence(channel, client)
}
