package engine

import (
	"context"
	"strconv"

	"github.com/wsedge/wsedge/broker"
	"github.com/wsedge/wsedge/frame"
	"github.com/wsedge/wsedge/protocol"
	"github.com/wsedge/wsedge/shard"
)

// Inbox message kinds.
const (
	msgPush uint8 = iota + 1 // Frame to every local subscriber of channel Ptr; Conn is its offset (0: none)
)

// session is the protocol state of a connection, allocated on its first
// command so that idle and echo connections do not pay for it. Owned by the
// connection's loop goroutine.
type session struct {
	subs    []*shard.Sub[*subscription]
	q       shard.Queue // publications waiting for the socket
	id      uint64      // client id, unique in the process
	client  string      // id formatted for the protocol, see clientID
	user    string
	touched bool // listed in loop.touched
	pending bool // listed in loop.pending
	lagging int  // subscriptions in the lagging state
}

// subscription is one connection's subscription to one channel.
type subscription struct {
	c       *conn
	ns      *Namespace
	last    uint64 // offset of the last publication delivered or known from the subscribe reply
	lagging bool   // frames are being dropped (policy "lag") until the queue drains
}

func (c *conn) session() *session {
	if c.sess == nil {
		c.sess = &session{id: c.loop.srv.nextClientID.Add(1)}
	}
	return c.sess
}

// clientID names the connection in presence and join/leave pushes; it is
// formatted once, on first use.
func (s *session) clientID() string {
	if s.client == "" {
		s.client = "c" + strconv.FormatUint(s.id, 36)
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
		c.startClose(frame.CloseUnsupported, "wsedge.v1.json is text only", false)
		return nil
	}
	l.tally.commands++
	cmd := &l.cmd
	if err := l.dec.Decode(payload, cmd); err != nil {
		if pe, ok := err.(*protocol.Error); ok {
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
	case protocol.OpPing, protocol.OpRefresh:
		return l.reply(c, protocol.AppendOK(l.out[:0], cmd.ID, nil), false)
	}
	return l.replyError(c, protocol.CodeBadRequest, "unknown op")
}

// reply writes one reply frame; the connection stays open.
func (l *loop) reply(c *conn, msg []byte, isErr bool) error {
	if isErr {
		l.tally.cmdErrors++
	}
	l.out = msg[:0]
	if !c.writeFrame(frame.OpText, msg) { // counted as a message out
		return errStop
	}
	return nil
}

func (l *loop) replyError(c *conn, code protocol.Code, msg string) error {
	return l.reply(c, protocol.AppendError(l.out[:0], l.cmd.ID, code, msg), true)
}

func (c *conn) findSub(channel []byte) int {
	if c.sess == nil {
		return -1
	}
	for i, s := range c.sess.subs {
		if s.Channel() == string(channel) {
			return i
		}
	}
	return -1
}

var ctx = context.Background()

func (l *loop) subscribe(c *conn, ns *Namespace) error {
	cmd := &l.cmd
	if c.findSub(cmd.Channel) >= 0 {
		return l.replyError(c, protocol.CodeConflict, protocol.MsgAlreadySubscribed)
	}
	srv := l.srv
	sess := c.session()
	ch := string(cmd.Channel)
	sub := &subscription{c: c, ns: ns}
	// Order matters (see DESIGN.md, "Subscribe and publish ordering"): the
	// loop is in the hub before the history position is read, so every
	// publication after that position reaches this loop.
	s, first := l.index.Add(ch, sub)
	if first && srv.hub.Add(ch, l.idx) {
		if err := srv.broker.Subscribe(ctx, ch); err != nil {
			l.dropSub(s)
			return l.replyError(c, protocol.CodeUnavailable, protocol.MsgUnavailable)
		}
	}
	sess.subs = append(sess.subs, s)
	if ns.Presence {
		if err := srv.presence.AddPresence(ctx, ch, broker.ClientInfo{ClientID: sess.clientID(), UserID: sess.user}); err != nil {
			srv.log.Warn("presence add", "channel", ch, "err", err)
		}
	}
	if ns.JoinLeave {
		srv.pushToChannel(ch, 0, protocol.AppendJoin(l.out[:0], ch, sess.clientID(), sess.user, nil))
	}
	if ns.HistorySize == 0 {
		return l.reply(c, protocol.AppendOK(l.out[:0], cmd.ID, emptyResult), false)
	}
	req := broker.HistoryRequest{Limit: 0}
	if cmd.HasSince {
		req = broker.HistoryRequest{Since: &broker.StreamPosition{Offset: cmd.Since.Offset, Epoch: string(cmd.Since.Epoch)}, Limit: srv.cfg.RecoveryMax}
	}
	res, err := srv.broker.History(ctx, ch, req)
	if err != nil {
		return l.replyError(c, protocol.CodeUnavailable, protocol.MsgUnavailable)
	}
	sub.last = res.Position.Offset
	if !cmd.HasSince {
		return l.reply(c, protocol.AppendPositionResult(l.out[:0], cmd.ID, res.Position.Offset, res.Position.Epoch), false)
	}
	out := protocol.AppendRecoveryOpen(l.out[:0], cmd.ID, res.Position.Offset, res.Position.Epoch, res.Recovered)
	for i, p := range res.Publications {
		out = protocol.AppendPublicationItem(out, i, p.Offset, p.Data)
	}
	return l.reply(c, protocol.AppendListClose(out), false)
}

var emptyResult = []byte("{}")

func (l *loop) unsubscribe(c *conn) error {
	i := c.findSub(l.cmd.Channel)
	if i < 0 {
		return l.replyError(c, protocol.CodeConflict, protocol.MsgNotSubscribed)
	}
	subs := c.sess.subs
	s := subs[i]
	subs[i] = subs[len(subs)-1]
	subs[len(subs)-1] = nil
	c.sess.subs = subs[:len(subs)-1]
	l.leave(s)
	return l.reply(c, protocol.AppendOK(l.out[:0], l.cmd.ID, nil), false)
}

// leave ends one subscription: index, hub, broker, presence, leave push.
func (l *loop) leave(s *shard.Sub[*subscription]) {
	sub := s.Conn
	if sub.lagging {
		sub.c.sess.lagging--
	}
	ch := l.dropSub(s)
	if sub.ns.Presence {
		_ = l.srv.presence.RemovePresence(ctx, ch, sub.c.sess.clientID())
	}
	if sub.ns.JoinLeave {
		l.srv.pushToChannel(ch, 0, protocol.AppendLeave(l.out[:0], ch, sub.c.sess.clientID(), sub.c.sess.user, nil))
	}
}

func (l *loop) dropSub(s *shard.Sub[*subscription]) string {
	ch, last := l.index.Remove(s)
	if last && l.srv.hub.Remove(ch, l.idx) {
		_ = l.srv.broker.Unsubscribe(ctx, ch)
	}
	return ch
}

func (l *loop) publish(c *conn, ns *Namespace) error {
	cmd := &l.cmd
	if !ns.Publish {
		return l.replyError(c, protocol.CodePermissionDenied, protocol.MsgPermissionDenied)
	}
	pos, err := l.srv.broker.Publish(ctx, string(cmd.Channel), cmd.Data,
		broker.PublishOptions{HistorySize: ns.HistorySize, HistoryTTL: ns.HistoryTTL})
	if err != nil {
		return l.replyError(c, protocol.CodeUnavailable, protocol.MsgUnavailable)
	}
	if ns.HistorySize == 0 {
		return l.reply(c, protocol.AppendOK(l.out[:0], cmd.ID, emptyResult), false)
	}
	return l.reply(c, protocol.AppendPositionResult(l.out[:0], cmd.ID, pos.Offset, pos.Epoch), false)
}

func (l *loop) history(c *conn, ns *Namespace) error {
	cmd := &l.cmd
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
	req := broker.HistoryRequest{Limit: limit}
	if cmd.HasSince {
		req.Since = &broker.StreamPosition{Offset: cmd.Since.Offset, Epoch: string(cmd.Since.Epoch)}
	}
	res, err := l.srv.broker.History(ctx, string(cmd.Channel), req)
	if err != nil {
		return l.replyError(c, protocol.CodeUnavailable, protocol.MsgUnavailable)
	}
	var out []byte
	if cmd.HasSince {
		out = protocol.AppendRecoveryOpen(l.out[:0], cmd.ID, res.Position.Offset, res.Position.Epoch, res.Recovered)
	} else {
		out = protocol.AppendHistoryOpen(l.out[:0], cmd.ID, res.Position.Offset, res.Position.Epoch)
	}
	for i, p := range res.Publications {
		out = protocol.AppendPublicationItem(out, i, p.Offset, p.Data)
	}
	return l.reply(c, protocol.AppendListClose(out), false)
}

func (l *loop) presence(c *conn, ns *Namespace) error {
	cmd := &l.cmd
	if !ns.Presence {
		return l.replyError(c, protocol.CodePermissionDenied, "namespace has no presence")
	}
	ch := string(cmd.Channel)
	if cmd.Op == protocol.OpPresenceStats {
		st, err := l.srv.presence.PresenceStats(ctx, ch)
		if err != nil {
			return l.replyError(c, protocol.CodeUnavailable, protocol.MsgUnavailable)
		}
		return l.reply(c, protocol.AppendPresenceStatsResult(l.out[:0], cmd.ID, st.NumClients, st.NumUsers), false)
	}
	members, err := l.srv.presence.Presence(ctx, ch)
	if err != nil {
		return l.replyError(c, protocol.CodeUnavailable, protocol.MsgUnavailable)
	}
	out := protocol.AppendPresenceOpen(l.out[:0], cmd.ID)
	i := 0
	for _, m := range members {
		out = protocol.AppendPresenceItem(out, i, m.ClientID, m.UserID, m.Info)
		i++
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
