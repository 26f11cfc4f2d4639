package engine

import (
	"bytes"
	"context"
	"slices"
	"time"

	"github.com/valyala/fastjson"

	"github.com/wsedge/wsedge/broker"
	"github.com/wsedge/wsedge/frame"
	"github.com/wsedge/wsedge/ingest"
	"github.com/wsedge/wsedge/protocol"
)

// handle answers one request, appending its response to il.out, and
// reports whether it was consumed; false means it waits (full inboxes, or
// the broker side's queue) and is parsed again when the connection resumes.
func (il *ingestLoop) handle(c *ingestConn, r *ingest.Request) bool {
	if il.srv.closing.Load() {
		il.fail(r.Seq, ingest.CodeShuttingDown)
		return true
	}
	switch r.Op {
	case ingest.OpPublish:
		return il.publish(c, r)
	case ingest.OpPublishMany, ingest.OpBroadcast:
		return il.publishMany(c, r)
	case ingest.OpDisconnect, ingest.OpUnsubscribe:
		il.userOp(r)
	case ingest.OpPresence:
		return il.presence(c, r)
	case ingest.OpEvents:
		il.startEvents(c, r.Seq)
	case ingest.OpPing:
		il.ack(r.Seq, 0, "", 0)
	}
	return true
}

// checkPublication validates a channel and payload the way a WebSocket
// publish is validated; the payload must be one JSON value because it is
// spliced into the subscribers' JSON pushes as is.
func (s *Server) checkPublication(channel, payload []byte, maxPayload int) (*Namespace, ingest.Code) {
	name, _, err := protocol.ParseChannel(channel)
	if err != nil {
		return nil, ingest.CodeBadChannel
	}
	ns := s.ns[string(name)]
	switch {
	case ns == nil:
		return nil, ingest.CodeUnknownNamespace
	case len(payload) > maxPayload:
		return nil, ingest.CodePayloadTooLarge
	case fastjson.ValidateBytes(payload) != nil:
		return nil, ingest.CodeBadPayload
	}
	return ns, 0
}

// admit applies the inbox admission of a WebSocket publish (see
// inboxHighWater) as back-pressure: while a loop with subscribers of one
// of the channels is over its bound, the connection is not read and the
// publish waits, up to OverloadWait; then it is answered "overloaded".
// ok: publish now; refused: answered; neither: wait.
func (il *ingestLoop) admit(c *ingestConn, seq uint64, full bool) (ok bool) {
	if !full {
		c.waitSince = time.Time{}
		return true
	}
	now := time.Now()
	if c.waitSince.IsZero() {
		c.waitSince = now
	} else if now.Sub(c.waitSince) >= il.srv.cfg.OverloadWait {
		c.waitSince = time.Time{}
		il.srv.s.m.OverloadRefused.Inc()
		il.fail(seq, ingest.CodeOverloaded)
		return false
	}
	il.wait(c)
	return false
}

func (il *ingestLoop) publish(c *ingestConn, r *ingest.Request) bool {
	is := il.srv
	s := is.s
	ns, code := s.checkPublication(r.Channel, r.Payload, is.maxPayload)
	if code != 0 {
		il.fail(r.Seq, code)
		return true
	}
	ch := il.intern(r.Channel)
	if !il.admit(c, r.Seq, s.overloaded(ch)) {
		return !c.waiting()
	}
	var k idemKey
	keyed := len(r.Key) > 0
	if keyed {
		k = s.idem.key(r.Channel, r.Key)
		if !il.reserve(k, r.Seq) {
			return true
		}
	}
	opts := broker.PublishOptions{HistorySize: ns.HistorySize, HistoryTTL: ns.HistoryTTL}
	if s.bside != nil {
		op := &ingestOp{c: c, seq: r.Seq, kind: ingest.OpPublish, channels: []string{ch}, opts: []broker.PublishOptions{opts},
			data: bytes.Clone(r.Payload), key: k, keyed: keyed}
		return il.submit(c, op)
	}
	pos, err := s.broker.Publish(ctx, ch, r.Payload, opts)
	if err != nil {
		if keyed {
			s.idem.cancel(k)
		}
		s.log.Warn("ingest publish", "channel", ch, "err", err)
		il.fail(r.Seq, ingest.CodeUnavailable)
		return true
	}
	if keyed {
		s.idem.complete(k, pos.Offset, pos.Epoch)
	}
	il.ack(r.Seq, pos.Offset, pos.Epoch, 0)
	return true
}

// waiting reports whether c waits for full inboxes (the request stays
// unparsed) rather than having been answered.
func (c *ingestConn) waiting() bool { return !c.waitSince.IsZero() }

// reserve claims an idempotency key, or answers the request from the
// window (a duplicate) or with "in progress"; false: answered.
func (il *ingestLoop) reserve(k idemKey, seq uint64) bool {
	e, st := il.srv.s.idem.reserve(k, time.Now())
	switch st {
	case idemDone:
		il.srv.m.dups.Inc()
		il.ack(seq, e.offset, e.epoch, ingest.AckDuplicate)
		return false
	case idemPending:
		il.fail(seq, ingest.CodeInProgress)
		return false
	}
	return true
}

// manyKey is the idempotency key of a publish-many: one key for the
// request, whatever its channels.
var manyKey = []byte("\x00many")

// publishMany publishes one payload to a list of channels (publish-many)
// or to every channel of a namespace with subscribers on this node
// (broadcast). The ack's offset is the number of channels published to.
// Any bad channel refuses the whole request before anything is published.
func (il *ingestLoop) publishMany(c *ingestConn, r *ingest.Request) bool {
	is := il.srv
	s := is.s
	var chans []string
	if r.Op == ingest.OpBroadcast {
		ns := s.ns[string(r.Namespace)]
		if ns == nil {
			il.fail(r.Seq, ingest.CodeUnknownNamespace)
			return true
		}
		chans = s.hub.AppendChannels(nil, string(r.Namespace)+":")
	} else {
		chans = make([]string, 0, r.NumChannels)
		for list := r.Channels; len(list) > 0; {
			var ch []byte
			ch, list = ingest.NextChannel(list)
			chans = append(chans, il.intern(ch))
		}
	}
	opts := make([]broker.PublishOptions, len(chans))
	full := false
	for i, ch := range chans {
		ns, code := s.checkPublication([]byte(ch), r.Payload, is.maxPayload)
		if code != 0 {
			il.fail(r.Seq, code)
			return true
		}
		opts[i] = broker.PublishOptions{HistorySize: ns.HistorySize, HistoryTTL: ns.HistoryTTL}
		full = full || s.overloaded(ch)
	}
	if !il.admit(c, r.Seq, full) {
		return !c.waiting()
	}
	op := &ingestOp{c: c, seq: r.Seq, kind: r.Op, channels: chans, opts: opts, data: r.Payload}
	if len(r.Key) > 0 && r.Op == ingest.OpPublishMany {
		op.key, op.keyed = s.idem.key(manyKey, r.Key), true
		if !il.reserve(op.key, r.Seq) {
			return true
		}
	}
	if s.bside != nil {
		op.data = bytes.Clone(r.Payload)
		return il.submit(c, op)
	}
	op.run(s)
	il.complete(op)
	return true
}

func (il *ingestLoop) presence(c *ingestConn, r *ingest.Request) bool {
	s := il.srv.s
	name, _, err := protocol.ParseChannel(r.Channel)
	if err != nil {
		il.fail(r.Seq, ingest.CodeBadChannel)
		return true
	}
	ns := s.ns[string(name)]
	switch {
	case ns == nil:
		il.fail(r.Seq, ingest.CodeUnknownNamespace)
		return true
	case !ns.Presence:
		il.fail(r.Seq, ingest.CodeNotFound)
		return true
	}
	op := &ingestOp{c: c, seq: r.Seq, kind: ingest.OpPresence, channels: []string{string(r.Channel)}}
	if s.bside != nil {
		return il.submit(c, op)
	}
	op.run(s)
	il.complete(op)
	return true
}

// ingestOp is an ingest request's broker work: run on the ingest loop
// (inline brokers) or on a broker-side worker, completed on the loop.
type ingestOp struct {
	c        *ingestConn
	seq      uint64
	kind     ingest.Op
	channels []string
	opts     []broker.PublishOptions
	data     []byte
	key      idemKey
	keyed    bool

	err       error
	pos       broker.StreamPosition // a single publish's
	published int
	members   map[string]broker.ClientInfo
}

// run makes the op's broker calls; it touches no loop state.
func (op *ingestOp) run(s *Server) {
	c, cancel := context.WithTimeout(context.Background(), brokerCallTimeout)
	defer cancel()
	switch op.kind {
	case ingest.OpPresence:
		op.members, op.err = s.presence.Presence(c, op.channels[0])
	default:
		for i, ch := range op.channels {
			pos, err := s.broker.Publish(c, ch, op.data, op.opts[i])
			if err != nil {
				op.err = err
				return
			}
			op.pos = pos
			op.published++
		}
	}
}

// submit hands op to the broker side's workers; the connection is not read
// until it is back (drain), which keeps its publications in order. A full
// queue is the broker being behind: the request waits like a publish to
// full inboxes.
func (il *ingestLoop) submit(c *ingestConn, op *ingestOp) bool {
	select {
	case il.srv.s.bside.ops <- &brokerOp{ingest: op}:
	default:
		if op.keyed {
			il.srv.s.idem.cancel(op.key)
		}
		il.admit(c, op.seq, true)
		return !c.waiting()
	}
	c.waitSince = time.Time{}
	c.inflight++
	il.wait(c)
	return true
}

// post is called by a broker-side worker when op has run.
func (il *ingestLoop) post(op *ingestOp) {
	if il.inbox.Push(op) {
		_ = il.el.Execute(context.Background(), il.drainFn)
	}
}

// drain completes the ops that came back from the broker side.
func (il *ingestLoop) drain() {
	_, more := il.inbox.Drain(512, func(op *ingestOp) {
		c := op.c
		c.inflight--
		il.out = il.out[:0]
		il.complete(op)
		if !c.closed && len(il.out) > 0 {
			_, _ = c.gc.Write(il.out)
		}
		if !c.closed && c.inflight == 0 {
			il.reading(c, true)
			if c.gc.InboundBuffered() > 0 {
				_ = c.gc.Wake(nil)
			}
		}
	})
	if more {
		_ = il.el.Execute(context.Background(), il.drainFn)
	}
}

// complete records op's result and appends its response to il.out.
func (il *ingestLoop) complete(op *ingestOp) {
	is := il.srv
	s := is.s
	if op.err != nil {
		if op.keyed {
			s.idem.cancel(op.key)
		}
		s.log.Warn("ingest broker call", "op", int(op.kind), "err", op.err)
		il.fail(op.seq, ingest.CodeUnavailable)
		return
	}
	switch op.kind {
	case ingest.OpPublish:
		if op.keyed {
			s.idem.complete(op.key, op.pos.Offset, op.pos.Epoch)
		}
		il.ack(op.seq, op.pos.Offset, op.pos.Epoch, 0)
	case ingest.OpPresence:
		out, start := ingest.AppendMembersOpen(il.out, op.seq)
		n := 0
		for _, m := range op.members {
			out = ingest.AppendMember(out, m.ClientID, m.UserID, m.Info)
			n++
			if len(out)-start > is.cfg.MaxFrame {
				il.out = out[:start]
				il.fail(op.seq, ingest.CodeBadRequest)
				return
			}
		}
		il.out = ingest.FinishMembers(out, start, n)
		is.m.acks.Inc()
	default:
		if op.keyed {
			s.idem.complete(op.key, uint64(op.published), "")
		}
		il.ack(op.seq, uint64(op.published), "", 0)
	}
}

// userOp disconnects a user, or unsubscribes it from a channel, on every
// loop of this node. It is acked once posted to the loops; each loop acts
// on its next turn.
func (il *ingestLoop) userOp(r *ingest.Request) {
	s := il.srv.s
	user := string(r.User)
	if r.Op == ingest.OpDisconnect {
		code := protocol.DisconnectForced
		if r.Code != 0 {
			if r.Code < 4000 || r.Code > 4999 {
				il.fail(r.Seq, ingest.CodeBadRequest)
				return
			}
			code = protocol.DisconnectCode(r.Code)
		}
		reason := string(r.Reason)
		if reason == "" {
			reason = "disconnected by the application"
		}
		n := s.disconnectUser(user, code, reason)
		il.ack(r.Seq, uint64(n), "", 0)
		return
	}
	if _, _, err := protocol.ParseChannel(r.Channel); err != nil {
		il.fail(r.Seq, ingest.CodeBadChannel)
		return
	}
	n := s.unsubscribeUser(user, string(r.Channel))
	il.ack(r.Seq, uint64(n), "", 0)
}

// disconnectUser posts a disconnect of user's connections to every loop
// and returns the number of loops it was posted to. Any goroutine.
func (s *Server) disconnectUser(user string, code protocol.DisconnectCode, reason string) int {
	loops := *s.list.Load()
	for _, l := range loops {
		_ = l.el.Execute(context.Background(), runnable(func() {
			for _, c := range l.userConns(user) {
				l.batch = c
				c.disconnect(code, reason, frame.ClosePolicyViolation)
				l.endBatch()
			}
		}))
	}
	return len(loops)
}

// unsubscribeUser posts an unsubscribe of user's connections from channel
// to every loop; each connection gets an unsubscribed push.
func (s *Server) unsubscribeUser(user, channel string) int {
	loops := *s.list.Load()
	for _, l := range loops {
		_ = l.el.Execute(context.Background(), runnable(func() {
			for _, c := range l.userConns(user) {
				i, found := c.findSub([]byte(channel))
				if !found || c.state != stateOpen {
					continue
				}
				sub := c.sess.subs[i]
				c.sess.subs = slices.Delete(c.sess.subs, i, i+1)
				l.leave(sub)
				l.batch = c
				c.writeFrame(frame.OpText, protocol.AppendUnsubscribedPush(l.out[:0], channel))
				l.endBatch()
			}
		}))
	}
	return len(loops)
}

// userConns lists the loop's open protocol connections of user (a walk of
// the wheel: the loop keeps no index by user; these operations are rare).
// Acting on them after the walk keeps the wheel unchanged while walked.
func (l *loop) userConns(user string) []*conn {
	var out []*conn
	l.wheel.each(func(c *conn) {
		if c.state == stateOpen && c.sess != nil && c.sess.user == user {
			out = append(out, c)
		}
	})
	return out
}
