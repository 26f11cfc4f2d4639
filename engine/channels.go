package engine

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strconv"

	"github.com/wsedge/wsedge/auth"
	"github.com/wsedge/wsedge/broker"
	"github.com/wsedge/wsedge/frame"
	"github.com/wsedge/wsedge/ingest"
	"github.com/wsedge/wsedge/metrics"
	"github.com/wsedge/wsedge/protocol"
	"github.com/wsedge/wsedge/shard"
)

// Inbox message kinds.
const (
	msgPush uint8 = iota + 1 // Frame to every local subscriber of channel Ptr; Conn is its offset (0: none)
	msgOp                    // a broker op's result; Ptr is the *brokerOp
)

// session is the protocol state of a connection, allocated when its
// upgrade succeeds (echo connections have none). Owned by the connection's
// loop goroutine.
type session struct {
	subs      []*shard.Sub[*subscription]
	q         shard.Queue   // publications waiting for the socket
	id        auth.Identity // who it is and what it may do
	refreshBy int64         // wheel tick by which a refreshed token is due; 0 if not asked
	cid       uint64        // client id, unique in the process
	client    string        // cid formatted for the protocol, see clientID
	user      string
	inflight  int  // broker ops in flight; the connection is not read meanwhile
	touched   bool // listed in loop.touched
	pending   bool // listed in loop.pending
	lagging   int  // subscriptions in the lagging state
}

// subscription is one connection's subscription to one channel.
type subscription struct {
	c       *conn
	ns      *Namespace
	hold    *heldPushes // while its subscribe waits on an async broker
	last    uint64      // offset of the last publication delivered or known from the subscribe reply
	epoch   string      // epoch of last's stream (a handoff resumes from last in it)
	told    bool        // the client was told to recover after last (lagged), so a jump past it needs no notice
	lagging bool        // frames are being dropped (policy "lag") until the queue drains
}

func (c *conn) session() *session {
	if c.sess == nil {
		c.sess = &session{cid: c.loop.srv.nextClientID.Add(1)}
	}
	return c.sess
}

// clientID names the connection in presence and join/leave pushes; it is
// formatted once, on first use.
func (s *session) clientID() string {
	if s.client == "" {
		s.client = "c" + strconv.FormatUint(s.cid, 36)
	}
	return s.client
}

// channelApp is the wsedge.v1.json protocol.
type channelApp struct{}

// OnMessage decodes one command and answers it. Every command gets exactly
// one reply; errors in a command never close the connection.
func (channelApp) OnMessage(c *conn, op frame.OpCode, payload []byte) error {
	l := c.loop
	if op != frame.OpText {
		// The parse goes on: data is ignored while closing and the peer's
		// close frame ends the connection.
		c.disconnect(protocol.DisconnectBadProtocol, "wsedge.v1.json is text only", frame.CloseUnsupported)
		return nil
	}
	l.tally.commands++
	cmd := &l.cmd
	derr := l.dec.Decode(payload, cmd)
	// Bad commands cost a token too; the refusal carries the id when it
	// could be read.
	if !l.allowCommand(c) {
		if c.state != stateOpen {
			return nil // closed for abuse; as for a binary frame, the parse goes on
		}
		id := cmd.ID
		if pe, ok := derr.(*protocol.Error); ok {
			id = pe.ID
		} else if derr != nil {
			id = 0
		}
		return l.reply(c, protocol.AppendError(l.out[:0], id, protocol.CodeRateLimited, protocol.MsgRateLimited), true)
	}
	if derr != nil {
		if pe, ok := derr.(*protocol.Error); ok {
			return l.reply(c, pe.AppendReply(l.out[:0]), true)
		}
		return l.reply(c, protocol.AppendError(l.out[:0], 0, protocol.CodeBadRequest, "bad JSON"), true)
	}
	var ns *Namespace
	if len(cmd.Channel) > 0 {
		name, _, _ := protocol.ParseChannel(cmd.Channel) // Decode validated it
		if ns = l.srv.ns[string(name)]; ns == nil {
			return l.replyError(c, protocol.CodeUnknownNamespace, protocol.MsgUnknownNamespace)
		}
	}
	switch cmd.Op {
	case protocol.OpSubscribe:
		return l.subscribe(c, ns)
	case protocol.OpUnsubscribe:
		return l.unsubscribe(c)
	case protocol.OpPublish:
		return l.publish(c, ns)
	case protocol.OpHistory:
		return l.history(c, ns)
	case protocol.OpPresence, protocol.OpPresenceStats:
		return l.presence(c, ns)
	case protocol.OpRefresh:
		return l.refresh(c)
	case protocol.OpPing:
		return l.reply(c, protocol.AppendOK(l.out[:0], cmd.ID, nil), false)
	}
	return l.replyError(c, protocol.CodeBadRequest, "unknown op")
}

// allowCommand charges one command to the connection's rate bucket. Over
// the rate the command is refused (429); a client that keeps sending far
// past it is closed (disconnect 4006, close 1008).
func (l *loop) allowCommand(c *conn) bool {
	cfg := &l.srv.cfg
	switch c.bucket.take(l.wheel.now, cfg.CommandRate, cfg.CommandBurst) {
	case cmdOK:
		return true
	case cmdLimited:
		l.srv.m.Limited(metrics.LimitCommandRate).Inc()
		return false
	}
	l.limitClose(c, metrics.LimitRateClose, protocol.DisconnectRateLimited, "rate limited", false)
	return false
}

// maxKeptOut is the largest reply buffer a loop keeps between replies: one
// large history reply must not pin its buffer for the loop's lifetime.
const maxKeptOut = 64 << 10

// reply writes one reply frame; the connection stays open.
func (l *loop) reply(c *conn, msg []byte, isErr bool) error {
	if isErr {
		l.tally.cmdErrors++
	}
	ok := c.writeFrame(frame.OpText, msg) // counted as a message out
	if cap(msg) > maxKeptOut {
		l.out = make([]byte, 0, 4096)
	} else {
		l.out = msg[:0]
	}
	if !ok {
		return errStop
	}
	return nil
}

func (l *loop) replyError(c *conn, code protocol.Code, msg string) error {
	return l.replyErrorID(c, l.cmd.ID, code, msg)
}

func (l *loop) replyErrorID(c *conn, id uint64, code protocol.Code, msg string) error {
	return l.reply(c, protocol.AppendError(l.out[:0], id, code, msg), true)
}

// findSub returns where channel is, or would be inserted, in the
// connection's subscriptions, which are kept sorted by channel name: an
// O(log n) lookup that does not allocate.
func (c *conn) findSub(channel []byte) (i int, found bool) {
	if c.sess == nil {
		return 0, false
	}
	subs := c.sess.subs
	lo, hi := 0, len(subs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if subs[m].Channel() < string(channel) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo, lo < len(subs) && subs[lo].Channel() == string(channel)
}

var ctx = context.Background()

func (l *loop) subscribe(c *conn, ns *Namespace) error {
	cmd := &l.cmd
	sess := c.session()
	if !sess.id.CanSubscribe(cmd.Channel) {
		return l.replyError(c, protocol.CodePermissionDenied, protocol.MsgPermissionDenied)
	}
	at, found := c.findSub(cmd.Channel)
	if found {
		return l.replyError(c, protocol.CodeConflict, protocol.MsgAlreadySubscribed)
	}
	srv := l.srv
	if len(sess.subs) >= srv.cfg.MaxSubsPerConn {
		srv.m.Limited(metrics.LimitSubs).Inc()
		return l.replyError(c, protocol.CodeTooLarge, protocol.MsgTooManySubs)
	}
	ch := string(cmd.Channel)
	if ns.JoinLeave && srv.overloaded(ch) {
		return l.replyOverloaded(c)
	}
	op := l.join(c, ns, ch, at, opSubscribe)
	op.id = cmd.ID
	if ns.HistorySize > 0 && cmd.HasSince {
		op.req = broker.HistoryRequest{Since: &broker.StreamPosition{Offset: cmd.Since.Offset, Epoch: string(cmd.Since.Epoch)}, Limit: srv.cfg.RecoveryMax}
	}
	return l.do(op)
}

// join makes c a subscriber of ch on this loop, at position at of its
// sorted list, and returns the op that finishes it on the broker side.
// Order matters (see DESIGN.md, "Subscribe and publish ordering"): the
// loop is in the hub, and the op reconciles the node's broker subscription
// before it reads the history position, so every publication after that
// position reaches this loop. Until the op completes, pushes for the new
// subscription are held (an async broker) so that none goes out before the
// reply.
func (l *loop) join(c *conn, ns *Namespace, ch string, at int, kind opKind) *brokerOp {
	sess := c.sess
	sub := &subscription{c: c, ns: ns}
	s, first := l.index.Add(ch, sub)
	if first {
		l.srv.hub.Add(ch, l.idx)
	}
	sess.subs = slices.Insert(sess.subs, at, s)
	op := &brokerOp{kind: kind, l: l, c: c, ch: ch, ns: ns, sub: sub, hist: ns.HistorySize > 0}
	op.info = broker.ClientInfo{ClientID: sess.clientID(), UserID: sess.user}
	if in := sess.id.Info(); in != "" {
		op.info.Info = []byte(in)
	}
	return op
}

// completeSubscribe writes the subscribe reply (or the subscribed push),
// then the publications held meanwhile that come after its position.
func (l *loop) completeSubscribe(op *brokerOp) error {
	c, sub := op.c, op.sub
	hold := sub.hold
	sub.hold = nil
	if op.err != nil {
		hold.release()
		if i, found := c.findSub([]byte(op.ch)); found && c.sess.subs[i].Conn == sub {
			s := c.sess.subs[i]
			c.sess.subs = slices.Delete(c.sess.subs, i, i+1)
			l.leaveQuiet(s)
		}
		if op.kind == opServerSub {
			if op.retry == 0 {
				l.srv.log.Warn("token subscription failed, retrying while the connection is open", "channel", op.ch, "err", op.err)
			}
			l.retryServerSub(op)
			return nil
		}
		if op.err == errOverloaded {
			l.srv.m.OverloadRefused.Inc()
			return l.replyErrorID(c, op.id, protocol.CodeUnavailable, protocol.MsgOverloaded)
		}
		return l.replyErrorID(c, op.id, protocol.CodeUnavailable, protocol.MsgUnavailable)
	}
	ns, res := op.ns, &op.res
	sub.last, sub.epoch = res.Position.Offset, res.Position.Epoch
	l.srv.connEvent(ingest.EventSubscribe, c, op.ch, 0, "")
	if ns.JoinLeave {
		l.srv.pushToChannel(op.ch, 0, protocol.AppendJoin(l.out[:0], op.ch, c.sess.clientID(), c.sess.user, op.info.Info))
	}
	var err error
	switch {
	case op.kind == opServerSub:
		if !c.writeFrame(frame.OpText, protocol.AppendSubscribedPush(l.out[:0], op.ch, res.Position.Offset, res.Position.Epoch)) {
			err = errStop
		}
	case ns.HistorySize == 0:
		err = l.reply(c, protocol.AppendOK(l.out[:0], op.id, emptyResult), false)
	case op.req.Since == nil:
		err = l.reply(c, protocol.AppendPositionResult(l.out[:0], op.id, res.Position.Offset, res.Position.Epoch), false)
	default:
		pubs, cut := l.fitReply(res.Publications, false)
		out := protocol.AppendRecoveryOpen(l.out[:0], op.id, res.Position.Offset, res.Position.Epoch, res.Recovered && !cut)
		for i, p := range pubs {
			out = protocol.AppendPublicationItem(out, i, p.Offset, p.Data)
		}
		err = l.reply(c, protocol.AppendListClose(out), false)
	}
	if err != nil || c.state != stateOpen {
		hold.release()
		return err
	}
	if hold != nil {
		if hold.lost {
			// Some were dropped while held: the client recovers
			// everything after the position it was just given.
			hold.release()
			sub.told = true
			if !c.writeFrame(frame.OpText, protocol.AppendLagged(l.out[:0], op.ch, sub.last)) {
				return errStop
			}
			return nil
		}
		for _, h := range hold.pushes {
			l.enqueue(sub, op.ch, l.frameFor(c, h.f), h.offset, h.epoch)
		}
		hold.release()
	}
	return nil
}

// serverSubscribe subscribes c to a channel its token names (subs claim);
// the client is told with a subscribed push carrying the position, as a
// subscribe reply would.
func (l *loop) serverSubscribe(c *conn, ns *Namespace, channel []byte) error {
	return l.serverSubscribeRetry(c, ns, channel, 0)
}

// serverSubscribeRetry is serverSubscribe as attempt after a wait of retry
// ticks (0: the first).
func (l *loop) serverSubscribeRetry(c *conn, ns *Namespace, channel []byte, retry int64) error {
	at, found := c.findSub(channel)
	if found {
		return nil
	}
	if len(c.sess.subs) >= l.srv.cfg.MaxSubsPerConn {
		return errTooManySubs
	}
	op := l.join(c, ns, string(channel), at, opServerSub)
	op.retry = retry
	err := l.do(op)
	if err == errBusy {
		return nil
	}
	return err
}

var errTooManySubs = errors.New("engine: too many subscriptions for one connection")

// nsOf returns the namespace of a valid channel name, or nil.
func (s *Server) nsOf(channel []byte) *Namespace {
	name, _, err := protocol.ParseChannel(channel)
	if err != nil {
		return nil
	}
	return s.ns[string(name)]
}

// pubItemOverhead is the JSON around one publication in a list reply:
// {"offset":<20 digits>,"data":} and a comma.
const pubItemOverhead = 32

// fitReply cuts a history or recovery list so that its reply stays within
// the outbound bound (a reply is a write the client causes; see
// backpressure.go): the oldest publications that fit, or with newest the
// newest ones. At least one is kept, so that a client paging with since
// always progresses. cut reports whether any was left out.
func (l *loop) fitReply(pubs []broker.Publication, newest bool) (kept []broker.Publication, cut bool) {
	budget := l.srv.cfg.MaxOutboundBytes
	used, n := 0, 0
	for n < len(pubs) {
		p := pubs[n]
		if newest {
			p = pubs[len(pubs)-1-n]
		}
		used += len(p.Data) + pubItemOverhead
		if n > 0 && used > budget {
			break
		}
		n++
	}
	if n == len(pubs) {
		return pubs, false
	}
	l.srv.m.Limited(metrics.LimitReplyCut).Inc()
	if newest {
		return pubs[len(pubs)-n:], true
	}
	return pubs[:n], true
}

// overloaded reports whether a loop that would receive a publication on
// channel has a full inbox: the publisher then gets "overloaded" instead
// of the inbox growing (see inboxHighWater).
func (s *Server) overloaded(channel string) bool {
	set := s.hub.Shards(channel)
	loops := *s.byIdx.Load()
	for i := set.Next(0); i >= 0 && i < len(loops); i = set.Next(i + 1) {
		if loops[i].inboxFull() {
			return true
		}
	}
	return false
}

func (l *loop) replyOverloaded(c *conn) error {
	l.srv.m.OverloadRefused.Inc()
	return l.replyError(c, protocol.CodeUnavailable, protocol.MsgOverloaded)
}

var emptyResult = []byte("{}")

func (l *loop) unsubscribe(c *conn) error {
	i, found := c.findSub(l.cmd.Channel)
	if !found {
		return l.replyError(c, protocol.CodeConflict, protocol.MsgNotSubscribed)
	}
	s := c.sess.subs[i]
	c.sess.subs = slices.Delete(c.sess.subs, i, i+1)
	l.leave(s)
	return l.reply(c, protocol.AppendOK(l.out[:0], l.cmd.ID, nil), false)
}

// leave ends one subscription: index, hub, broker, presence, leave push.
func (l *loop) leave(s *shard.Sub[*subscription]) {
	sub := s.Conn
	ch := l.leaveQuiet(s)
	l.srv.connEvent(ingest.EventUnsubscribe, sub.c, ch, 0, "")
	if sub.ns.Presence {
		l.srv.removePresence(ch, sub.c.sess.clientID())
	}
	if sub.ns.JoinLeave {
		l.srv.pushToChannel(ch, 0, protocol.AppendLeave(l.out[:0], ch, sub.c.sess.clientID(), sub.c.sess.user, nil))
	}
}

// leaveQuiet takes a subscription out of the index and the hub, with no
// presence or leave push: for a subscribe that failed.
func (l *loop) leaveQuiet(s *shard.Sub[*subscription]) string {
	sub := s.Conn
	if sub.lagging {
		sub.c.sess.lagging--
		sub.lagging = false
	}
	if sub.hold != nil {
		sub.hold.release()
		sub.hold = nil
	}
	return l.dropSub(s)
}

func (l *loop) dropSub(s *shard.Sub[*subscription]) string {
	ch, last := l.index.Remove(s)
	if last && l.srv.hub.Remove(ch, l.idx) {
		l.srv.reconcile(ch)
	}
	return ch
}

func (l *loop) publish(c *conn, ns *Namespace) error {
	cmd := &l.cmd
	if !ns.Publish || !c.session().id.CanPublish(cmd.Channel) {
		return l.replyError(c, protocol.CodePermissionDenied, protocol.MsgPermissionDenied)
	}
	if l.srv.overloaded(string(cmd.Channel)) {
		return l.replyOverloaded(c)
	}
	op := &brokerOp{kind: opPublish, l: l, c: c, id: cmd.ID, ch: string(cmd.Channel), ns: ns, data: cmd.Data}
	if l.srv.bside != nil {
		op.data = bytes.Clone(cmd.Data) // cmd.Data aliases the read buffer
	}
	return l.do(op)
}

func (l *loop) completePublish(op *brokerOp) error {
	switch {
	case op.err != nil:
		return l.replyErrorID(op.c, op.id, protocol.CodeUnavailable, protocol.MsgUnavailable)
	case op.ns.HistorySize == 0:
		return l.reply(op.c, protocol.AppendOK(l.out[:0], op.id, emptyResult), false)
	}
	return l.reply(op.c, protocol.AppendPositionResult(l.out[:0], op.id, op.pos.Offset, op.pos.Epoch), false)
}

func (l *loop) history(c *conn, ns *Namespace) error {
	cmd := &l.cmd
	if !c.session().id.CanSubscribe(cmd.Channel) {
		return l.replyError(c, protocol.CodePermissionDenied, protocol.MsgPermissionDenied)
	}
	if ns.HistorySize == 0 {
		return l.replyError(c, protocol.CodePermissionDenied, "namespace keeps no history")
	}
	limit := cmd.Limit
	if limit == protocol.NoLimit {
		limit = l.srv.cfg.RecoveryMax
	}
	if limit > l.srv.cfg.RecoveryMax {
		return l.replyError(c, protocol.CodeTooLarge, protocol.MsgTooLarge)
	}
	op := &brokerOp{kind: opHistory, l: l, c: c, id: cmd.ID, ch: string(cmd.Channel), ns: ns}
	op.req = broker.HistoryRequest{Limit: limit}
	if cmd.HasSince {
		op.req.Since = &broker.StreamPosition{Offset: cmd.Since.Offset, Epoch: string(cmd.Since.Epoch)}
	}
	return l.do(op)
}

func (l *loop) completeHistory(op *brokerOp) error {
	if op.err != nil {
		return l.replyErrorID(op.c, op.id, protocol.CodeUnavailable, protocol.MsgUnavailable)
	}
	res, since := &op.res, op.req.Since != nil
	var out []byte
	pubs, cut := l.fitReply(res.Publications, !since)
	if since {
		out = protocol.AppendRecoveryOpen(l.out[:0], op.id, res.Position.Offset, res.Position.Epoch, res.Recovered && !cut)
	} else {
		out = protocol.AppendHistoryOpen(l.out[:0], op.id, res.Position.Offset, res.Position.Epoch)
	}
	for i, p := range pubs {
		out = protocol.AppendPublicationItem(out, i, p.Offset, p.Data)
	}
	return l.reply(op.c, protocol.AppendListClose(out), false)
}

func (l *loop) presence(c *conn, ns *Namespace) error {
	cmd := &l.cmd
	if !c.session().id.CanSubscribe(cmd.Channel) {
		return l.replyError(c, protocol.CodePermissionDenied, protocol.MsgPermissionDenied)
	}
	if !ns.Presence {
		return l.replyError(c, protocol.CodePermissionDenied, "namespace has no presence")
	}
	kind := opPresence
	if cmd.Op == protocol.OpPresenceStats {
		kind = opPresenceStats
	}
	return l.do(&brokerOp{kind: kind, l: l, c: c, id: cmd.ID, ch: string(cmd.Channel), ns: ns})
}

func (l *loop) completePresence(op *brokerOp) error {
	c := op.c
	if op.err != nil {
		return l.replyErrorID(c, op.id, protocol.CodeUnavailable, protocol.MsgUnavailable)
	}
	if op.kind == opPresenceStats {
		return l.reply(c, protocol.AppendPresenceStatsResult(l.out[:0], op.id, op.stats.NumClients, op.stats.NumUsers), false)
	}
	out := protocol.AppendPresenceOpen(l.out[:0], op.id)
	i := 0
	for _, m := range op.members {
		out = protocol.AppendPresenceItem(out, i, m.ClientID, m.UserID, m.Info)
		i++
		if len(out) > l.srv.cfg.MaxOutboundBytes {
			// Like history, a reply stays within the outbound bound;
			// presence has no paging, so the client gets the counts.
			l.srv.m.Limited(metrics.LimitReplyCut).Inc()
			if cap(out) > maxKeptOut {
				l.out = make([]byte, 0, 4096)
			}
			return l.replyErrorID(c, op.id, protocol.CodeTooLarge, "presence too large, use presence_stats")
		}
	}
	return l.reply(c, protocol.AppendListClose(out), false)
}

// closeSession releases a closed connection's subscriptions and queue.
func (l *loop) closeSession(c *conn) {
	sess := c.sess
	for i, s := range sess.subs {
		l.leave(s)
		sess.subs[i] = nil
	}
	sess.subs = nil
	sess.q.Reset()
}
