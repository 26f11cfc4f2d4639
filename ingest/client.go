package ingest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	mrand "math/rand/v2"
	"net"
	"strings"
	"sync"
	"time"
)

// Options tune a Client; zero fields take the defaults.
type Options struct {
	// MaxInFlight bounds the requests sent and not yet answered (and
	// those waiting to be resent): PublishAsync blocks beyond it.
	// Default 8192.
	MaxInFlight int
	// RetryFor is how long a request keeps being retried across
	// reconnects before it is returned with the last error. Default 30 s.
	RetryFor time.Duration
	// MinBackoff and MaxBackoff bound the reconnect back-off (doubling,
	// with jitter). Defaults 20 ms and 2 s.
	MinBackoff, MaxBackoff time.Duration
	// DialTimeout bounds one connection attempt. Default 2 s.
	DialTimeout time.Duration
}

func (o *Options) defaults() {
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 8192
	}
	if o.RetryFor <= 0 {
		o.RetryFor = 30 * time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 20 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(2*time.Second, o.MinBackoff)
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 2 * time.Second
	}
}

// Errors of the client.
var (
	ErrClosed  = errors.New("ingest: client closed")
	ErrTimeout = errors.New("ingest: not acknowledged within RetryFor")
)

// ServerError is an error response.
type ServerError struct {
	Code    Code
	Message string
}

func (e *ServerError) Error() string {
	return fmt.Sprintf("ingest: %s (%d): %s", e.Code, e.Code, e.Message)
}

// Call is one request in flight. Its result fields are valid once Done is
// closed; the Client never touches it afterwards.
type Call struct {
	Offset    uint64 // the publication's offset (publish-many, broadcast: channels published; disconnect: loops told)
	Epoch     string
	Duplicate bool     // answered from the server's idempotency window
	Members   []Member // presence
	Err       error    // nil, *ServerError, ErrTimeout or ErrClosed
	Done      chan struct{}

	seq      uint64
	frame    []byte // the encoded request, resent after a reconnect
	deadline time.Time
}

// Client publishes to a wsedge node over its ingest socket, pipelining
// requests on one connection. It reconnects with back-off when the
// connection drops and resends every request not yet answered; publishes
// carry idempotency keys (generated unless given), so the server publishes
// each once however often it is resent. A request is answered exactly
// once: with its ack, a server error, or ErrTimeout after RetryFor.
//
// A Client is safe for concurrent use. It runs one goroutine that
// connects and writes, and one reader per live connection.
type Client struct {
	addr string
	opt  Options

	mu       sync.Mutex
	conn     net.Conn
	gen      uint64 // connection generation
	nextSeq  uint64
	pending  map[uint64]*Call
	order    []*Call // pending and answered calls in seq order; compacted on resend
	wbuf     []byte
	drained  chan struct{} // closed when pending empties; nil while nobody waits
	closed   bool
	lastErr  error
	events   chan EventBatch
	evNext   uint64
	evLost   uint64
	evActive bool

	slots chan struct{}
	kick  chan struct{}
	stop  chan struct{}
	done  chan struct{}

	keyPrefix [8]byte
	keyN      uint64
}

// Dial connects to addr ("unix:///path/to.sock"). It waits for the first
// connection (retrying with back-off until ctx ends); afterwards the
// Client reconnects on its own.
func Dial(ctx context.Context, addr string, opts ...Options) (*Client, error) {
	path, ok := strings.CutPrefix(addr, "unix://")
	if !ok || path == "" {
		return nil, fmt.Errorf("ingest: address %q is not unix:///path", addr)
	}
	c := &Client{
		addr:    path,
		pending: make(map[uint64]*Call),
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	if len(opts) > 0 {
		c.opt = opts[0]
	}
	c.opt.defaults()
	c.slots = make(chan struct{}, c.opt.MaxInFlight)
	_, _ = rand.Read(c.keyPrefix[:])
	conn, err := c.dialRetry(ctx)
	if err != nil {
		return nil, err
	}
	c.attach(conn)
	go c.run()
	return c, nil
}

func (c *Client) dialRetry(ctx context.Context) (net.Conn, error) {
	backoff := c.opt.MinBackoff
	for {
		d := net.Dialer{Timeout: c.opt.DialTimeout}
		conn, err := d.DialContext(ctx, "unix", c.addr)
		if err == nil {
			return conn, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("ingest: dial %s: %w (last: %v)", c.addr, ctx.Err(), err)
		case <-time.After(jitter(backoff)):
		}
		backoff = min(2*backoff, c.opt.MaxBackoff)
	}
}

func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(mrand.Int64N(int64(d/2)+1))
}

// attach makes conn the live connection, queues every pending request
// (in seq order) to be resent, and starts its reader.
func (c *Client) attach(conn net.Conn) {
	c.mu.Lock()
	c.conn = conn
	c.gen++
	gen := c.gen
	c.wbuf = c.wbuf[:0]
	if c.evActive {
		c.wbuf = AppendSimple(c.wbuf, OpEvents, 0)
	}
	live := c.order[:0]
	for _, call := range c.order {
		if _, ok := c.pending[call.seq]; ok {
			live = append(live, call)
			c.wbuf = append(c.wbuf, call.frame...)
		}
	}
	clear(c.order[len(live):])
	c.order = live
	c.mu.Unlock()
	c.signal()
	go c.read(conn, gen)
}

func (c *Client) signal() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// run writes what is queued, and reconnects when the connection is lost.
func (c *Client) run() {
	defer close(c.done)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var out []byte
	for {
		select {
		case <-c.stop:
			return
		case <-c.kick:
		case <-tick.C:
			c.expire()
		}
		c.mu.Lock()
		conn, gen := c.conn, c.gen
		out, c.wbuf = c.wbuf, out[:0]
		c.mu.Unlock()
		if conn == nil {
			c.reconnect()
			continue
		}
		if len(out) > 0 {
			if _, err := conn.Write(out); err != nil {
				c.lost(gen, err)
			}
		}
	}
}

// lost drops connection generation gen (once): its unanswered requests
// stay pending and are resent on the next connection.
func (c *Client) lost(gen uint64, err error) {
	c.mu.Lock()
	if c.gen != gen || c.conn == nil {
		c.mu.Unlock()
		return
	}
	c.conn.Close()
	c.conn = nil
	c.lastErr = err
	c.mu.Unlock()
	c.signal()
}

func (c *Client) reconnect() {
	backoff := c.opt.MinBackoff
	for {
		select {
		case <-c.stop:
			return
		case <-time.After(jitter(backoff)):
		}
		c.expire()
		d := net.Dialer{Timeout: c.opt.DialTimeout}
		conn, err := d.Dial("unix", c.addr)
		if err == nil {
			c.attach(conn)
			return
		}
		c.mu.Lock()
		c.lastErr = err
		c.mu.Unlock()
		backoff = min(2*backoff, c.opt.MaxBackoff)
	}
}

// expire returns the requests past their retry deadline with ErrTimeout.
func (c *Client) expire() {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, call := range c.order {
		if _, ok := c.pending[call.seq]; ok && now.After(call.deadline) {
			err := ErrTimeout
			if c.lastErr != nil {
				err = fmt.Errorf("%w (last: %v)", ErrTimeout, c.lastErr)
			}
			c.finishLocked(call, err)
		}
	}
}

// read handles the responses of one connection.
func (c *Client) read(conn net.Conn, gen uint64) {
	br := bufio.NewReaderSize(conn, 64<<10)
	var hdr [4]byte
	buf := make([]byte, 0, 4096)
	var r Response
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			c.lost(gen, err)
			return
		}
		n := 4 + int(binary.BigEndian.Uint32(hdr[:]))
		if n > 64<<20 || n < HeaderLen {
			c.lost(gen, fmt.Errorf("ingest: server frame of %d bytes", n))
			return
		}
		buf = append(buf[:0], hdr[:]...)
		buf = append(buf, make([]byte, n-4)...)
		if _, err := io.ReadFull(br, buf[4:]); err != nil {
			c.lost(gen, err)
			return
		}
		if _, err := ParseResponse(buf, n, &r); err != nil {
			c.lost(gen, fmt.Errorf("ingest: bad server frame: %w", err))
			return
		}
		c.handle(&r)
		if cap(buf) > 1<<20 {
			buf = make([]byte, 0, 4096)
		}
	}
}

func (c *Client) handle(r *Response) {
	if r.Op == OpEventSet {
		c.deliverEvents(r)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	call := c.pending[r.Seq]
	if call == nil {
		return // answered already (an ack from a connection since dropped), or the events ack
	}
	switch r.Op {
	case OpAck:
		call.Offset, call.Epoch, call.Duplicate = r.Offset, string(r.Epoch), r.Flags&AckDuplicate != 0
		c.finishLocked(call, nil)
	case OpMembers:
		for list, i := r.Members, 0; i < r.Count; i++ {
			var cl, u, info []byte
			cl, u, info, list = NextMember(list)
			call.Members = append(call.Members, Member{Client: string(cl), User: string(u), Info: append([]byte(nil), info...)})
		}
		c.finishLocked(call, nil)
	case OpError:
		if r.Code == CodeInProgress || r.Code == CodeShuttingDown {
			// The server will know the answer later (the same key in
			// flight) or another process will (a drain): resend after
			// a pause, still within RetryFor.
			frame, gen := call.frame, c.gen
			time.AfterFunc(c.opt.MinBackoff, func() {
				c.mu.Lock()
				if _, ok := c.pending[call.seq]; ok && c.gen == gen && c.conn != nil {
					c.wbuf = append(c.wbuf, frame...)
				}
				c.mu.Unlock()
				c.signal()
			})
			return
		}
		c.finishLocked(call, &ServerError{Code: r.Code, Message: string(r.Message)})
	}
}

func (c *Client) finishLocked(call *Call, err error) {
	delete(c.pending, call.seq)
	call.Err = err
	call.frame = nil
	close(call.Done)
	<-c.slots
	if len(c.pending) == 0 && c.drained != nil {
		close(c.drained)
		c.drained = nil
	}
}

// send queues one encoded request; it blocks while MaxInFlight requests
// are unanswered.
func (c *Client) send(ctx context.Context, encode func(dst []byte, seq uint64) []byte) (*Call, error) {
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.stop:
		return nil, ErrClosed
	}
	call := &Call{Done: make(chan struct{}), deadline: time.Now().Add(c.opt.RetryFor)}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		<-c.slots
		return nil, ErrClosed
	}
	c.nextSeq++
	call.seq = c.nextSeq
	call.frame = encode(nil, call.seq)
	c.pending[call.seq] = call
	c.order = append(c.order, call)
	if len(c.order) > 2*c.opt.MaxInFlight {
		live := c.order[:0]
		for _, cl := range c.order {
			if _, ok := c.pending[cl.seq]; ok {
				live = append(live, cl)
			}
		}
		clear(c.order[len(live):])
		c.order = live
	}
	if c.conn != nil {
		c.wbuf = append(c.wbuf, call.frame...)
	}
	c.mu.Unlock()
	c.signal()
	return call, nil
}

// NewKey returns a fresh idempotency key: 8 random bytes of this Client
// and a counter.
func (c *Client) NewKey() []byte {
	c.mu.Lock()
	c.keyN++
	n := c.keyN
	c.mu.Unlock()
	k := make([]byte, 16)
	copy(k, c.keyPrefix[:])
	binary.BigEndian.PutUint64(k[8:], n)
	return k
}

// PublishAsync queues a publish and returns its Call. key is its
// idempotency key (at most 64 bytes); nil generates one.
func (c *Client) PublishAsync(ctx context.Context, channel string, payload, key []byte) (*Call, error) {
	if len(channel) > MaxChannel || len(key) > MaxKey {
		return nil, fmt.Errorf("ingest: channel over %d or key over %d bytes", MaxChannel, MaxKey)
	}
	if key == nil {
		key = c.NewKey()
	}
	return c.send(ctx, func(dst []byte, seq uint64) []byte { return AppendPublish(dst, seq, channel, key, payload) })
}

// Publish publishes payload (one JSON value) to channel and waits for its
// ack: the publication's offset (0 in a namespace without history).
func (c *Client) Publish(ctx context.Context, channel string, payload []byte) (uint64, error) {
	call, err := c.PublishAsync(ctx, channel, payload, nil)
	if err != nil {
		return 0, err
	}
	if err := c.Wait(ctx, call); err != nil {
		return 0, err
	}
	return call.Offset, nil
}

// PublishMany publishes payload to several channels at once; the result is
// the number of channels published to.
func (c *Client) PublishMany(ctx context.Context, channels []string, payload []byte) (int, error) {
	key := c.NewKey()
	return c.count(ctx, func(dst []byte, seq uint64) []byte { return AppendPublishMany(dst, seq, channels, key, payload) })
}

// Broadcast publishes payload to every channel of namespace with
// subscribers on the node.
func (c *Client) Broadcast(ctx context.Context, namespace string, payload []byte) (int, error) {
	return c.count(ctx, func(dst []byte, seq uint64) []byte { return AppendBroadcast(dst, seq, namespace, payload) })
}

// Disconnect closes every WebSocket connection of user on the node, with
// close code 4000-4999 (0: 4007) and a reason.
func (c *Client) Disconnect(ctx context.Context, user string, code uint16, reason string) error {
	_, err := c.count(ctx, func(dst []byte, seq uint64) []byte { return AppendDisconnect(dst, seq, user, code, reason) })
	return err
}

// Unsubscribe removes user's connections on the node from channel.
func (c *Client) Unsubscribe(ctx context.Context, user, channel string) error {
	_, err := c.count(ctx, func(dst []byte, seq uint64) []byte { return AppendUnsubscribe(dst, seq, user, channel) })
	return err
}

// Presence returns who is in channel.
func (c *Client) Presence(ctx context.Context, channel string) ([]Member, error) {
	call, err := c.send(ctx, func(dst []byte, seq uint64) []byte { return AppendPresence(dst, seq, channel) })
	if err != nil {
		return nil, err
	}
	if err := c.Wait(ctx, call); err != nil {
		return nil, err
	}
	return call.Members, nil
}

func (c *Client) count(ctx context.Context, enc func([]byte, uint64) []byte) (int, error) {
	call, err := c.send(ctx, enc)
	if err != nil {
		return 0, err
	}
	if err := c.Wait(ctx, call); err != nil {
		return 0, err
	}
	return int(call.Offset), nil
}

// Wait waits for call's answer and returns its error. If ctx ends first
// the call goes on (it is answered later; see Flush).
func (c *Client) Wait(ctx context.Context, call *Call) error {
	select {
	case <-call.Done:
		return call.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Flush waits until every request queued so far is answered.
func (c *Client) Flush(ctx context.Context) error {
	c.mu.Lock()
	if len(c.pending) == 0 {
		c.mu.Unlock()
		return nil
	}
	if c.drained == nil {
		c.drained = make(chan struct{})
	}
	ch := c.drained
	c.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops the client; unanswered requests are returned with ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
	c.mu.Unlock()
	close(c.stop)
	<-c.done
	c.mu.Lock()
	for _, call := range c.order {
		if _, ok := c.pending[call.seq]; ok {
			c.finishLocked(call, ErrClosed)
		}
	}
	c.order = nil
	if c.events != nil {
		close(c.events)
		c.events = nil
	}
	c.mu.Unlock()
	return nil
}

// EventBatch is a batch of connection events. Lost counts events the
// client did not get just before this batch (the server's ring moved on,
// the client's channel was full, or the connection was replaced); Restart
// says the node's numbering restarted (the node restarted).
type EventBatch struct {
	First   uint64
	Lost    uint64
	Restart bool
	Events  []EventCopy
}

// EventCopy is an Event whose fields the receiver owns.
type EventCopy struct {
	Kind    EventKind
	Client  string
	User    string
	Channel string
	Code    uint16
	Reason  string
}

// Events asks the node for the connection event stream (also after each
// reconnect) and returns the channel its batches arrive on, buffering at
// most 256 batches: a consumer that does not keep up is told in the next
// batch's Lost. The channel is closed by Close.
func (c *Client) Events(ctx context.Context) (<-chan EventBatch, error) {
	c.mu.Lock()
	if c.evActive {
		c.mu.Unlock()
		return nil, errors.New("ingest: Events called twice")
	}
	c.evActive = true
	c.events = make(chan EventBatch, 256)
	ch := c.events
	if c.conn != nil {
		c.wbuf = AppendSimple(c.wbuf, OpEvents, 0)
	}
	c.mu.Unlock()
	c.signal()
	return ch, nil
}

func (c *Client) deliverEvents(r *Response) {
	b := EventBatch{First: r.First, Events: make([]EventCopy, 0, r.Count)}
	var e Event
	for list, i := r.Events, 0; i < r.Count; i++ {
		list = NextEvent(list, &e)
		b.Events = append(b.Events, EventCopy{e.Kind, string(e.Client), string(e.User), string(e.Channel), e.Code, string(e.Reason)})
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.events == nil {
		return
	}
	switch {
	case c.evNext == 0:
		c.evLost += uint64(r.Lost)
	case r.First < c.evNext:
		b.Restart = true
	case r.First > c.evNext:
		c.evLost += r.First - c.evNext // r.Lost is part of that gap
	}
	b.Lost = c.evLost
	c.evNext = r.First + uint64(r.Count)
	select {
	case c.events <- b:
		c.evLost = 0
	default:
		c.evLost, _ = bits.Add64(c.evLost, uint64(r.Count), 0)
	}
}
