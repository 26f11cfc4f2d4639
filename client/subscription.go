package client

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsedge/wsedge/protocol"
)

// Publication is one message on a channel, as the handler receives it.
type Publication struct {
	Channel string
	Offset  uint64 // 0 on a channel without history
	Epoch   string // "" on a channel without history
	Data    json.RawMessage
}

// SubOption configures one subscription.
type SubOption func(*Subscription)

// OnUnrecovered sets the callback for a resubscription that could not
// recover what was missed (new epoch, history trimmed or expired, more
// than the server returns in one reply, or a lagged push the history no
// longer covers): publications since the last one delivered may be lost,
// so the application refetches its state. pos is the channel's position
// the subscription continues from.
func OnUnrecovered(fn func(pos Position)) SubOption {
	return func(s *Subscription) { s.onUnrecovered = fn }
}

// OnEnd sets the callback for a subscription the server ended or refused
// after Subscribe succeeded (a resubscribe refused with 403/404, an
// unsubscribed push, the client closed).
func OnEnd(fn func(err error)) SubOption { return func(s *Subscription) { s.onEnd = fn } }

// Subscription is one channel the client stays subscribed to across
// reconnects, until Unsubscribe. Its fields are guarded by the Client's mu.
type Subscription struct {
	c             *Client
	channel       string
	handler       func(Publication)
	onUnrecovered func(Position)
	onEnd         func(error)

	pos     Position
	hasPos  bool
	gen     uint64 // the connection the subscribe went out on
	pending bool   // subscribe or history reply awaited: pushes wait in buffer
	buffer  []buffered
	ready   chan struct{}
	readyO  sync.Once
	err     error
	gone    atomic.Bool
}

type buffered struct {
	offset uint64
	data   json.RawMessage
}

// Channel returns the subscription's channel.
func (s *Subscription) Channel() string { return s.channel }

// Position returns the position of the last publication delivered (or of
// the channel when subscribed, if nothing was delivered since).
func (s *Subscription) Position() Position {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.pos
}

// Subscribe subscribes to channel and calls handler for each publication,
// on the dispatcher goroutine, in offset order and never twice for one
// offset. It returns once the server has confirmed the subscription (a
// client that is reconnecting waits for the connection); on error, ctx's
// end or the command timeout it returns an error and is not subscribed.
// The subscription then survives reconnects: it is sent again with the
// last position seen, and what was missed is delivered before anything
// newer (or OnUnrecovered says it could not be).
func (c *Client) Subscribe(ctx context.Context, channel string, handler func(Publication), opts ...SubOption) (*Subscription, error) {
	if _, _, err := protocol.ParseChannel([]byte(channel)); err != nil {
		return nil, errors.Join(ErrBadChannel, err)
	}
	s := &Subscription{c: c, channel: channel, handler: handler, ready: make(chan struct{})}
	for _, o := range opts {
		o(s)
	}
	c.mu.Lock()
	if c.state == StateClosed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	if c.subs[channel] != nil {
		c.mu.Unlock()
		return nil, ErrAlreadySubscribed
	}
	c.subs[channel] = s
	cn := c.cur
	var msg []byte
	if cn != nil {
		msg = c.subscribeCmd(cn, s)
	}
	c.mu.Unlock()
	if msg != nil {
		_ = cn.write(msg, c.o.commandTimeout)
	}
	t := time.NewTimer(c.o.commandTimeout)
	defer t.Stop()
	var err error
	select {
	case <-s.ready:
		if s.err != nil {
			return nil, s.err
		}
		return s, nil
	case <-t.C:
		err = ErrTimeout
	case <-ctx.Done():
		err = ctx.Err()
	}
	// Given up: unless it was confirmed meanwhile, forget it here and on
	// the server.
	c.mu.Lock()
	select {
	case <-s.ready:
		c.mu.Unlock()
		if s.err != nil {
			return nil, s.err
		}
		return s, nil
	default:
	}
	if c.subs[channel] == s {
		delete(c.subs, channel)
	}
	s.gone.Store(true)
	cn = c.cur
	sent := cn != nil && s.gen == cn.gen
	c.mu.Unlock()
	if sent {
		c.send(cn, &protocol.Command{Op: protocol.OpUnsubscribe, Channel: []byte(channel)}, func(*reply, error) {})
	}
	return nil, err
}

// Unsubscribe ends the subscription; no publication is delivered after it
// returns... except those already queued for the handler.
func (s *Subscription) Unsubscribe(ctx context.Context) error {
	c := s.c
	c.mu.Lock()
	if c.subs[s.channel] == s {
		delete(c.subs, s.channel)
	}
	s.gone.Store(true)
	cn := c.cur
	sent := cn != nil && s.gen == cn.gen
	c.mu.Unlock()
	if !sent {
		return nil
	}
	_, err := c.roundTrip(ctx, &protocol.Command{Op: protocol.OpUnsubscribe, Channel: []byte(s.channel)})
	var e *Error
	if errors.As(err, &e) && e.Code == int(protocol.CodeConflict) {
		return nil // not subscribed: done
	}
	if errors.Is(err, ErrConnectionLost) || errors.Is(err, ErrOffline) {
		return nil // the next connection does not subscribe it
	}
	return err
}

// subscribeCmd registers s's subscribe command on cn, with since when s
// has a position, and returns the message to write; c.mu held.
func (c *Client) subscribeCmd(cn *wsConn, s *Subscription) []byte {
	s.gen, s.pending, s.buffer = cn.gen, true, nil
	cmd := &protocol.Command{Op: protocol.OpSubscribe, Channel: []byte(s.channel)}
	since := s.hasPos
	if since {
		cmd.HasSince = true
		cmd.Since = protocol.Position{Offset: s.pos.Offset, Epoch: []byte(s.pos.Epoch)}
	}
	k := c.newCall(cmd, func(r *reply, err error) { c.onPosition(cn, s, since, r, err) })
	cn.calls[k.id] = k
	return k.msg
}

// historyCmd registers a history since the last position, to fill the gap
// a lagged push announced; c.mu held.
func (c *Client) historyCmd(cn *wsConn, s *Subscription) []byte {
	s.buffer = nil
	return c.historyCmdKeep(cn, s)
}

// historyCmdKeep is historyCmd keeping the pushes already held back.
func (c *Client) historyCmdKeep(cn *wsConn, s *Subscription) []byte {
	s.pending = true
	cmd := &protocol.Command{Op: protocol.OpHistory, Channel: []byte(s.channel), Limit: protocol.NoLimit,
		HasSince: true, Since: protocol.Position{Offset: s.pos.Offset, Epoch: []byte(s.pos.Epoch)}}
	k := c.newCall(cmd, func(r *reply, err error) { c.onPosition(cn, s, true, r, err) })
	cn.calls[k.id] = k
	return k.msg
}

// onPosition handles the reply of a subscribe or of a lag's history
// (reader goroutine, or the manager failing the connection's calls).
func (c *Client) onPosition(cn *wsConn, s *Subscription, since bool, r *reply, err error) {
	if err != nil {
		return // the connection is gone; the next one subscribes again
	}
	c.mu.Lock()
	if c.subs[s.channel] != s || s.gen != cn.gen {
		c.mu.Unlock()
		return
	}
	if r.err != nil {
		switch r.err.Code {
		case int(protocol.CodeConflict):
			// Already subscribed on this connection: the server did it
			// itself (the token's subs claim). Its subscribed push named
			// the position it started from; publications since then (or
			// since ours) come from history, pushes meanwhile wait.
			if p, ok := cn.serverSubs[s.channel]; ok && !s.hasPos && p.Epoch != "" {
				s.pos, s.hasPos = p, true
			}
			if s.hasPos && cn.calls != nil {
				m := c.historyCmdKeep(cn, s)
				c.mu.Unlock()
				_ = cn.write(m, c.o.commandTimeout)
				return
			}
		case int(protocol.CodeBadRequest), int(protocol.CodePermissionDenied), int(protocol.CodeUnknownNamespace), int(protocol.CodeTooLarge):
			delete(c.subs, s.channel)
			c.mu.Unlock()
			s.fail(r.err)
			return
		default:
			// 429, 500, 503: the subscription cannot be restored now;
			// a new connection (with backoff) tries again.
			c.mu.Unlock()
			cn.close()
			return
		}
	} else {
		var res result
		if err := json.Unmarshal(r.result, &res); err != nil {
			c.mu.Unlock()
			cn.close()
			return
		}
		switch {
		case !since:
			s.pos, s.hasPos = Position{Offset: res.Offset, Epoch: res.Epoch}, res.Epoch != ""
		case res.Recovered != nil && *res.Recovered && res.Epoch == s.pos.Epoch:
			for _, p := range res.Publications {
				s.deliver(p.Offset, p.Data)
			}
		default:
			s.pos, s.hasPos = Position{Offset: res.Offset, Epoch: res.Epoch}, res.Epoch != ""
			if fn := s.onUnrecovered; fn != nil {
				pos := s.pos
				c.disp.push(func() {
					if !s.gone.Load() {
						fn(pos)
					}
				})
			}
		}
	}
	s.pending = false
	for _, b := range s.buffer {
		s.deliver(b.offset, b.data)
	}
	s.buffer = nil
	s.readyO.Do(func() { close(s.ready) })
	c.mu.Unlock()
}

// push takes a publication push for s; c.mu held.
func (s *Subscription) push(offset uint64, data json.RawMessage) {
	if s.pending {
		s.buffer = append(s.buffer, buffered{offset, data})
		return
	}
	s.deliver(offset, data)
}

// deliver hands a publication to the handler unless it is not newer than
// the last one delivered; c.mu held.
func (s *Subscription) deliver(offset uint64, data json.RawMessage) {
	if s.hasPos {
		if offset <= s.pos.Offset {
			return
		}
		s.pos.Offset = offset
	}
	p := Publication{Channel: s.channel, Offset: offset, Epoch: s.pos.Epoch, Data: data}
	s.c.disp.push(func() {
		if !s.gone.Load() {
			s.handler(p)
		}
	})
}

// fail ends s with err: Subscribe's waiter gets it, or OnEnd once
// Subscribe has returned.
func (s *Subscription) fail(err error) {
	s.gone.Store(true)
	first := false
	s.readyO.Do(func() {
		s.err = err
		first = true
		close(s.ready)
	})
	if !first && s.onEnd != nil {
		fn := s.onEnd
		s.c.disp.push(func() { fn(err) })
	}
}
