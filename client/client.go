package client

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/wsedge/wsedge/protocol"
)

// State is where a Client is in its life.
type State int

// The states: Disconnected → Connecting → Connected, back to Disconnected
// when a connection ends, and Closed, terminal, after Close or a disconnect
// push that forbids reconnecting.
const (
	StateDisconnected State = iota
	StateConnecting
	StateConnected
	StateClosed
)

func (s State) String() string {
	switch s {
	case StateDisconnected:
		return "disconnected"
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateClosed:
		return "closed"
	}
	return "unknown"
}

// StateChange is one transition.
type StateChange struct {
	From, To State
	// Reason says why, for humans: "dial", "reconnect", the server's
	// disconnect reason, "no traffic", "closed by the application", ...
	Reason string
	// Err is the error that caused it, if any (a dial error, a
	// *DisconnectError, ErrClosed).
	Err error
	// Delay is, entering Disconnected, how long the client waits before
	// its next attempt.
	Delay time.Duration
}

// Position is a place in a channel's history stream.
type Position struct {
	Offset uint64
	Epoch  string
}

// Client is a connection to a wsedge server that reconnects by itself. It
// is safe for concurrent use.
type Client struct {
	url string
	o   options

	mu      sync.Mutex
	state   State
	cur     *wsConn // the live connection while Connected
	gen     uint64  // connections made so far
	subs    map[string]*Subscription
	queue   []*call // publishes waiting for a connection, in order
	lastErr error   // what ended the client, once Closed

	nextID atomic.Uint64
	disp   dispatcher
	quit   chan struct{} // closed by Close
	done   chan struct{} // closed when the manager has exited
	first  chan error    // the first connection's outcome, for Dial
	firstO sync.Once
	refr   chan struct{} // the server asked for a token refresh
	closeO sync.Once
	ctx    context.Context // of dials and token calls, cancelled by Close
	cancel context.CancelFunc
}

// Dial connects to url (ws://host:port/ws) and keeps the client connected
// until Close. It returns once the first connection is up; if ctx ends
// first, or the server refuses the client for good, it returns the error
// and the client is closed.
func Dial(ctx context.Context, url string, opts ...Option) (*Client, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.backoff.validate(); err != nil {
		return nil, err
	}
	if o.readTimeout < 10*time.Millisecond || o.commandTimeout <= 0 || o.dialTimeout <= 0 || o.queueSize < 0 {
		return nil, errorf("options: timeouts must be positive (read timeout at least 10ms), the queue size not negative")
	}
	if o.rand == nil {
		o.rand = rand.Float64
	}
	c := &Client{
		url:   url,
		o:     o,
		subs:  map[string]*Subscription{},
		quit:  make(chan struct{}),
		done:  make(chan struct{}),
		first: make(chan error, 1),
		refr:  make(chan struct{}, 1),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.disp.init()
	go c.disp.run(c.done)
	go c.run()
	select {
	case err := <-c.first:
		if err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	case <-ctx.Done():
		c.Close()
		return nil, ctx.Err()
	}
}

// State returns the current state.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Close ends the client: the connection closes (1000), waiting commands
// and queued publishes fail with ErrClosed, and Close returns when every
// goroutine of the client has exited. Not from a handler (see the package
// doc). Calling it again does nothing.
func (c *Client) Close() error {
	c.closeO.Do(func() {
		close(c.quit)
		c.cancel()
	})
	<-c.done
	c.disp.wait()
	return nil
}

// setState records a transition and queues its event; c.mu held.
func (c *Client) setState(to State, reason string, err error, delay time.Duration) {
	from := c.state
	if from == to && to != StateDisconnected {
		return
	}
	c.state = to
	switch to {
	case StateConnected:
		c.firstO.Do(func() { c.first <- nil })
	case StateClosed:
		c.firstO.Do(func() {
			if err == nil {
				err = ErrClosed
			}
			c.first <- err
		})
	}
	if fn := c.o.onState; fn != nil {
		ev := StateChange{From: from, To: to, Reason: reason, Err: err, Delay: delay}
		c.disp.push(func() { fn(ev) })
	}
}

// run is the manager goroutine: connect, watch, wait, again.
func (c *Client) run() {
	defer close(c.done)
	ctx := c.ctx
	attempt := 0
	var wait time.Duration
	reason := "dial"
	for {
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-c.quit:
				t.Stop()
				c.terminate("closed by the application", ErrClosed)
				return
			}
		}
		select {
		case <-c.quit:
			c.terminate("closed by the application", ErrClosed)
			return
		default:
		}
		c.mu.Lock()
		c.setState(StateConnecting, reason, nil, 0)
		c.mu.Unlock()
		cn, err := c.dial(ctx)
		if err != nil {
			if errors.Is(err, ErrRefused) {
				c.terminate("refused", err)
				return
			}
			if ctx.Err() != nil {
				c.terminate("closed by the application", ErrClosed)
				return
			}
			wait = c.o.backoff.Delay(attempt, c.o.rand())
			attempt++
			reason = "reconnect"
			c.mu.Lock()
			c.setState(StateDisconnected, "dial failed", err, wait)
			c.mu.Unlock()
			continue
		}
		up := time.Now()
		c.connected(cn)
		why, err := c.watch(ctx, cn)
		c.lost(cn)
		if why == "" {
			c.terminate("closed by the application", ErrClosed)
			return
		}
		if d := cn.disc; d != nil {
			if !d.Reconnect {
				c.terminate(d.Reason, d)
				return
			}
			why, err = d.Reason, d
		}
		if time.Since(up) >= c.o.healthyAfter {
			attempt = 0
		}
		wait = c.o.backoff.Delay(attempt, c.o.rand())
		attempt++
		if cn.disc != nil && cn.disc.Delay > wait {
			wait = cn.disc.Delay
		}
		reason = "reconnect"
		c.mu.Lock()
		c.setState(StateDisconnected, why, err, wait)
		c.mu.Unlock()
	}
}

// connected makes cn the live connection: every subscription is sent again
// (with its last position), then the offline queue.
func (c *Client) connected(cn *wsConn) {
	c.mu.Lock()
	c.gen++
	cn.gen = c.gen
	c.cur = cn
	go c.read(cn)
	c.setState(StateConnected, "connected", nil, 0)
	var msgs [][]byte
	for _, s := range c.subs {
		msgs = append(msgs, c.subscribeCmd(cn, s))
	}
	c.mu.Unlock()
	for _, m := range msgs {
		if cn.write(m, c.o.commandTimeout) != nil {
			return
		}
	}
	c.flush(cn)
}

// watch waits for cn to end: read error, silence past the read timeout, or
// Close (then it returns ""). It sends a ping command after half the read
// timeout of silence and the refresh command when the server asks.
func (c *Client) watch(ctx context.Context, cn *wsConn) (string, error) {
	step := max(c.o.readTimeout/8, 5*time.Millisecond)
	tick := time.NewTicker(step)
	defer tick.Stop()
	pinged := int64(0)
	for {
		select {
		case <-cn.done:
			if cn.disc != nil {
				return cn.disc.Reason, cn.disc
			}
			return "connection lost", cn.err
		case <-c.quit:
			cn.writeClose(ws.StatusNormalClosure)
			cn.close()
			<-cn.done
			return "", nil
		case <-c.refr:
			c.refresh(ctx, cn)
		case now := <-tick.C:
			heard := cn.heard.Load()
			silent := time.Duration(now.UnixNano() - heard)
			switch {
			case silent >= c.o.readTimeout:
				cn.close()
				<-cn.done
				return "no traffic", errorf("nothing heard for %v", silent.Round(time.Millisecond))
			case silent >= c.o.readTimeout/2 && pinged != heard:
				pinged = heard
				c.send(cn, &protocol.Command{Op: protocol.OpPing}, func(*reply, error) {})
			}
		}
	}
}

// refresh gets a new token and sends it; a failure is left to the server,
// which disconnects (4004) and so makes the client dial with a new token.
func (c *Client) refresh(ctx context.Context, cn *wsConn) {
	if c.o.token == nil {
		return
	}
	tctx, cancel := context.WithTimeout(ctx, c.o.commandTimeout)
	tok, err := c.o.token(tctx)
	cancel()
	if err != nil {
		return
	}
	c.send(cn, &protocol.Command{Op: protocol.OpRefresh, Token: []byte(tok)}, func(*reply, error) {})
}

// lost forgets cn: its waiting commands fail with ErrConnectionLost.
func (c *Client) lost(cn *wsConn) {
	c.mu.Lock()
	if c.cur == cn {
		c.cur = nil
	}
	calls := cn.calls
	cn.calls = nil
	for _, s := range c.subs {
		s.pending = false
		s.buffer = nil
	}
	c.mu.Unlock()
	for _, k := range calls {
		k.resolve(nil, ErrConnectionLost)
	}
}

// terminate closes the client for good (manager goroutine).
func (c *Client) terminate(reason string, err error) {
	c.mu.Lock()
	if c.lastErr == nil {
		c.lastErr = err
	}
	c.setState(StateClosed, reason, err, 0)
	q := c.queue
	c.queue = nil
	subs := c.subs
	c.subs = map[string]*Subscription{}
	c.mu.Unlock()
	for _, k := range q {
		k.resolve(nil, err)
	}
	for _, s := range subs {
		s.fail(err)
	}
}

// read is the reader goroutine of cn.
func (c *Client) read(cn *wsConn) {
	defer close(cn.done)
	defer cn.close()
	for {
		msg, err := cn.readMessage(c.o.maxMessage)
		if err != nil {
			cn.err = err
			return
		}
		var in inbound
		if err := json.Unmarshal(msg, &in); err != nil {
			cn.err = errorf("server sent bad JSON: %w", err)
			return
		}
		if !c.handle(cn, &in) {
			return
		}
	}
}

// handle acts on one message from the server (reader goroutine). It
// reports false when the connection must end.
func (c *Client) handle(cn *wsConn, in *inbound) bool {
	switch {
	case in.ID != nil:
		c.mu.Lock()
		k := cn.calls[*in.ID]
		delete(cn.calls, *in.ID)
		c.mu.Unlock()
		if k != nil {
			r := &reply{result: in.Result}
			if in.Error != nil {
				r.err = &Error{Code: in.Error.Code, Message: in.Error.Message}
			}
			k.resolve(r, nil)
		}
	case in.Channel != nil:
		c.mu.Lock()
		if s := c.subs[*in.Channel]; s != nil && s.gen == cn.gen {
			s.push(in.Offset, in.Data)
		}
		c.mu.Unlock()
	case in.Disconnect != nil:
		d := in.Disconnect
		cn.disc = &DisconnectError{Code: d.Code, Reason: d.Reason, Reconnect: d.Reconnect,
			Delay: time.Duration(max(d.Delay, 0)) * time.Millisecond}
	case in.Refresh != nil:
		select {
		case c.refr <- struct{}{}:
		default:
		}
	case in.Lagged != nil:
		c.mu.Lock()
		s := c.subs[in.Lagged.Channel]
		var m []byte
		if s != nil && s.gen == cn.gen && !s.pending {
			m = c.historyCmd(cn, s)
		}
		c.mu.Unlock()
		if m != nil && cn.write(m, c.o.commandTimeout) != nil {
			return false
		}
	case in.Reset != nil:
		// The channel's stream restarted with a new epoch while we
		// stayed subscribed: what the old one had after our position
		// may be lost (the application refetches), and the new one
		// continues from the reset's position.
		c.mu.Lock()
		s := c.subs[in.Reset.Channel]
		if s == nil || s.gen != cn.gen {
			c.mu.Unlock()
			break
		}
		if s.pending {
			// A subscribe or history reply is awaited for the old
			// position: start over on a new connection, whose
			// resubscribe answers recovered false.
			c.mu.Unlock()
			cn.close()
			return false
		}
		s.pos, s.hasPos = Position{Offset: in.Reset.Offset, Epoch: in.Reset.Epoch}, true
		pos, fn := s.pos, s.onUnrecovered
		c.mu.Unlock()
		if fn != nil {
			c.disp.push(func() { fn(pos) })
		}
	case in.Subscribed != nil:
		c.mu.Lock()
		if cn.serverSubs == nil {
			cn.serverSubs = map[string]Position{}
		}
		cn.serverSubs[in.Subscribed.Channel] = Position{Offset: in.Subscribed.Offset, Epoch: in.Subscribed.Epoch}
		c.mu.Unlock()
	case in.Unsubscribed != nil:
		c.mu.Lock()
		s := c.subs[in.Unsubscribed.Channel]
		if s != nil {
			delete(c.subs, s.channel)
		}
		c.mu.Unlock()
		if s != nil {
			s.fail(&Error{Code: int(protocol.CodePermissionDenied), Message: "unsubscribed by the server"})
		}
	}
	return true
}

// call is a command waiting for its reply. Whoever removes it from its
// connection's calls (or from the offline queue) resolves it, once.
type call struct {
	id  uint64
	msg []byte
	fn  func(*reply, error)
	cn  *wsConn // the connection it was sent on; c.mu guards it
}

func (k *call) resolve(r *reply, err error) { k.fn(r, err) }

// send registers and writes a command on cn, fn to be called with its
// reply or error. It reports whether the command was written.
func (c *Client) send(cn *wsConn, cmd *protocol.Command, fn func(*reply, error)) bool {
	c.mu.Lock()
	if cn.calls == nil {
		c.mu.Unlock()
		fn(nil, ErrConnectionLost)
		return false
	}
	k := c.newCall(cmd, fn)
	cn.calls[k.id] = k
	k.cn = cn
	c.mu.Unlock()
	return cn.write(k.msg, c.o.commandTimeout) == nil
}

func (c *Client) newCall(cmd *protocol.Command, fn func(*reply, error)) *call {
	cmd.ID = c.nextID.Add(1)
	return &call{id: cmd.ID, msg: protocol.AppendCommand(nil, cmd), fn: fn}
}

// roundTrip sends cmd on the live connection and waits for the reply.
func (c *Client) roundTrip(ctx context.Context, cmd *protocol.Command) (*reply, error) {
	ch := make(chan struct {
		r   *reply
		err error
	}, 1)
	c.mu.Lock()
	cn := c.cur
	if c.state == StateClosed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	if cn == nil {
		c.mu.Unlock()
		return nil, ErrOffline
	}
	k := c.newCall(cmd, func(r *reply, err error) {
		ch <- struct {
			r   *reply
			err error
		}{r, err}
	})
	cn.calls[k.id] = k
	k.cn = cn
	c.mu.Unlock()
	_ = cn.write(k.msg, c.o.commandTimeout)
	return c.await(ctx, k, ch)
}

// await waits for k's outcome; on timeout or ctx it takes k back if it is
// still unanswered.
func (c *Client) await(ctx context.Context, k *call, ch chan struct {
	r   *reply
	err error
}) (*reply, error) {
	t := time.NewTimer(c.o.commandTimeout)
	defer t.Stop()
	var err error
	select {
	case out := <-ch:
		if out.err == nil && out.r.err != nil {
			return nil, out.r.err
		}
		return out.r, out.err
	case <-t.C:
		err = ErrTimeout
	case <-ctx.Done():
		err = ctx.Err()
	}
	if c.takeBack(k) {
		return nil, err
	}
	out := <-ch // being resolved right now
	if out.err == nil && out.r.err != nil {
		return nil, out.r.err
	}
	return out.r, out.err
}

// takeBack removes k from cn's calls or from the offline queue; it
// reports whether k was still there (and so is the caller's to resolve).
func (c *Client) takeBack(k *call) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cn := k.cn; cn != nil && cn.calls != nil && cn.calls[k.id] == k {
		delete(cn.calls, k.id)
		return true
	}
	for i, q := range c.queue {
		if q == k {
			c.queue = append(c.queue[:i], c.queue[i+1:]...)
			return true
		}
	}
	return false
}

// dispatcher runs the application's callbacks one at a time, in order, on
// its own goroutine. Its queue is unbounded: a slow handler delays
// delivery but never the reader.
type dispatcher struct {
	mu      sync.Mutex
	q       []func()
	wake    chan struct{}
	stopped chan struct{}
}

func (d *dispatcher) init() {
	d.wake = make(chan struct{}, 1)
	d.stopped = make(chan struct{})
}

func (d *dispatcher) push(fn func()) {
	d.mu.Lock()
	d.q = append(d.q, fn)
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// run delivers until done is closed and the queue is empty.
func (d *dispatcher) run(done <-chan struct{}) {
	defer close(d.stopped)
	for {
		d.mu.Lock()
		q := d.q
		d.q = nil
		d.mu.Unlock()
		for _, fn := range q {
			fn()
		}
		if len(q) > 0 {
			continue
		}
		select {
		case <-d.wake:
		case <-done:
			d.mu.Lock()
			n := len(d.q)
			d.mu.Unlock()
			if n == 0 {
				return
			}
		}
	}
}

func (d *dispatcher) wait() { <-d.stopped }
