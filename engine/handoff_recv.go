package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	vm "github.com/VictoriaMetrics/metrics"
	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/wsedge/wsedge/auth"
	"github.com/wsedge/wsedge/handoff"
)

// The new process's side of a handoff: it dials the old one's socket,
// says hello before it listens (to learn where its client ids start),
// says ready once it listens on the same port, then enrolls every batch
// of descriptors into its loops, acknowledges the batch, and only then
// activates its connections.

// handoffState is the server's handoff bookkeeping.
type handoffState struct {
	sent, received, resumed, refused *vm.Counter
	giving                           chan struct{} // held while this process gives its connections away
	loopsOnce                        sync.Once
	loopsUp                          chan struct{} // closed by the first tick: gnet's loops exist
}

// ticking is called on every tick; the first says gnet's loops exist.
func (h *handoffState) ticking() { h.loopsOnce.Do(func() { close(h.loopsUp) }) }

func newHandoffState(set *vm.Set) *handoffState {
	return &handoffState{
		sent:     set.NewCounter(`wsedge_handoff_connections_total{dir="sent"}`),
		received: set.NewCounter(`wsedge_handoff_connections_total{dir="received"}`),
		resumed:  set.NewCounter(`wsedge_handoff_connections_total{dir="resumed"}`),
		refused:  set.NewCounter(`wsedge_handoff_connections_total{dir="refused"}`),
		giving:   make(chan struct{}, 1),
		loopsUp:  make(chan struct{}),
	}
}

// handoffHelloTimeout bounds each step of the session but the batches'.
const handoffHelloTimeout = 30 * time.Second

// clientIDGap separates the new process's client ids from the old one's,
// which it keeps numbering until it stops accepting.
const clientIDGap = 1 << 40

// Takeover is a new process's handoff session. Its methods run on the
// caller's goroutine (one at a time).
type Takeover struct {
	s    *Server
	link *handoff.Link
	acks []handoff.Ack

	// failAfter > 0 (tests) makes Run give up at that batch without
	// answering it, as a process that dies half-way.
	failAfter int
}

// DialTakeover connects to the old process's handoff socket and exchanges
// hellos (versions, mode, client ids). Call it after New and before Run;
// then call Run on the Takeover once the server listens.
func (s *Server) DialTakeover(path string) (*Takeover, error) {
	link, err := handoff.Dial(handoff.SocketPath(path))
	if err != nil {
		return nil, fmt.Errorf("engine: takeover: %w", err)
	}
	t := &Takeover{s: s, link: link}
	if err := t.hello(); err != nil {
		link.Close()
		return nil, fmt.Errorf("engine: takeover: %w", err)
	}
	return t, nil
}

func (t *Takeover) hello() error {
	s, l := t.s, t.link
	_ = l.Conn().SetDeadline(time.Now().Add(handoffHelloTimeout))
	if err := l.Send(handoff.TypeHello, handoff.AppendHello(nil, s.helloInfo()), nil); err != nil {
		return err
	}
	typ, payload, fds, err := l.Recv()
	handoff.CloseFDs(fds)
	if err != nil {
		return err
	}
	if typ == handoff.TypeRefuse {
		return fmt.Errorf("refused by the running process: %s", payload)
	}
	if typ != handoff.TypeHello {
		return fmt.Errorf("%w: message %d before hello", handoff.ErrMalformed, typ)
	}
	h, err := handoff.DecodeHello(payload)
	if err != nil {
		_ = l.Send(handoff.TypeRefuse, []byte(err.Error()), nil)
		return err
	}
	if err := s.compatible(h); err != nil {
		_ = l.Send(handoff.TypeRefuse, []byte(err.Error()), nil)
		return err
	}
	s.nextClientID.Store(h.NextClientID)
	return nil
}

func (s *Server) helloInfo() handoff.Hello {
	return handoff.Hello{Echo: s.cfg.Echo, NextClientID: s.nextClientID.Load() + clientIDGap, MaxMessage: uint32(s.cfg.MaxMessage)}
}

// compatible refuses a peer whose connections this process could not serve.
func (s *Server) compatible(h handoff.Hello) error {
	if h.Echo != s.cfg.Echo {
		return fmt.Errorf("engine: handoff between an echo and a protocol server (echo %v here, %v there)", s.cfg.Echo, h.Echo)
	}
	return nil
}

// Run tells the old process that this one listens, then takes over its
// connections until it says it has none left. It returns how many it took.
// On an error the connections already taken stay here, the rest with the
// old process.
func (t *Takeover) Run() (int, error) {
	s, l := t.s, t.link
	defer l.Close()
	<-s.ho.loopsUp
	if err := l.Send(handoff.TypeReady, nil, nil); err != nil {
		return 0, fmt.Errorf("engine: takeover: %w", err)
	}
	taken, batches := 0, 0
	for {
		// The old process may wait for slow connections: generous.
		_ = l.Conn().SetDeadline(time.Now().Add(2 * handoffHelloTimeout))
		typ, payload, fds, err := l.Recv()
		if err != nil {
			return taken, fmt.Errorf("engine: takeover: %w", err)
		}
		switch typ {
		case handoff.TypeBatch:
			if batches++; batches == t.failAfter {
				handoff.CloseFDs(fds)
				return taken, errors.New("engine: takeover: failing on purpose (test)")
			}
			n, err := t.batch(payload, fds)
			taken += n
			if err != nil {
				return taken, fmt.Errorf("engine: takeover: %w", err)
			}
		case handoff.TypeDone:
			handoff.CloseFDs(fds)
			if err := l.Send(handoff.TypeDone, nil, nil); err != nil {
				return taken, fmt.Errorf("engine: takeover: %w", err)
			}
			return taken, nil
		case handoff.TypeRefuse:
			handoff.CloseFDs(fds)
			return taken, fmt.Errorf("engine: takeover: the running process gave up: %s", payload)
		default:
			handoff.CloseFDs(fds)
			return taken, fmt.Errorf("engine: takeover: %w: message type %d", handoff.ErrMalformed, typ)
		}
	}
}

// restoring is the gnet context of a descriptor being enrolled: OnOpen
// builds the connection from rec and leaves it frozen in c.
type restoring struct {
	rec handoff.Conn
	c   *conn
	why string // refused: the reason
}

// batch enrolls one batch, acknowledges it, then activates what it took.
func (t *Takeover) batch(payload []byte, fds []int) (int, error) {
	s := t.s
	recs, err := handoff.SplitBatch(payload)
	if err == nil && len(recs) != len(fds) {
		err = fmt.Errorf("%w: %d records, %d descriptors", handoff.ErrMalformed, len(recs), len(fds))
	}
	if err != nil {
		handoff.CloseFDs(fds)
		return 0, err
	}
	t0 := time.Now()
	rs := make([]*restoring, len(recs))
	waits := make([]<-chan gnet.RegisteredResult, len(recs))
	t.acks = t.acks[:0]
	for i, b := range recs {
		r := &restoring{}
		rs[i] = r
		if r.rec, err = handoff.DecodeConn(b); err != nil {
			// Its seq cannot be read, so the batch cannot be answered:
			// what was enrolled of it goes without a word, and the
			// session ends (the old process resumes the whole batch).
			handoff.CloseFDs(fds[i:])
			t.wait(rs, waits, 0, i)
			s.dropRestored(rs[:i])
			return 0, err
		}
		fd := fds[i]
		if !fdIsSocket(fd) {
			unix.Close(fd)
			r.why = "not a socket"
			continue
		}
		f := os.NewFile(uintptr(fd), "handoff")
		nc, ferr := net.FileConn(f)
		f.Close()
		if ferr != nil {
			r.why = ferr.Error()
			continue
		}
		ctx := gnet.NewNetConnContext(gnet.NewContext(context.Background(), r), nc)
		if waits[i], err = s.eng.Register(ctx); err != nil {
			nc.Close()
			r.why = err.Error()
		}
		if i >= enrollAtOnce {
			t.wait(rs, waits, i-enrollAtOnce, i-enrollAtOnce+1) // a sliding window
		}
	}
	t.wait(rs, waits, 0, len(rs))
	s.log.Debug("handoff batch enrolled", "connections", len(rs), "took", time.Since(t0))
	taken := 0
	for _, r := range rs {
		ok := r.c != nil && r.why == ""
		if ok {
			taken++
		} else {
			s.ho.refused.Inc()
			s.log.Warn("handoff: connection refused", "reason", r.why)
		}
		t.acks = append(t.acks, handoff.Ack{Seq: r.rec.Seq, Taken: ok})
	}
	if err := t.link.Send(handoff.TypeAck, handoff.AppendAcks(nil, t.acks), nil); err != nil {
		// The old process may not have seen the ack: it resumes them, so
		// these must go without a word (closing this copy sends nothing).
		s.dropRestored(rs)
		return 0, err
	}
	s.activate(rs)
	return taken, nil
}

// enrollAtOnce bounds the enrollments in flight: gnet runs each on a
// worker goroutine of its pool until the loop has registered it, so this
// bounds those goroutines, whatever the number of connections.
const enrollAtOnce = 32

// wait collects the enrollment results of rs[from:to] not collected yet.
func (t *Takeover) wait(rs []*restoring, waits []<-chan gnet.RegisteredResult, from, to int) {
	for i := from; i < to; i++ {
		if waits[i] == nil {
			continue
		}
		if res := <-waits[i]; res.Err != nil && rs[i].why == "" {
			rs[i].why = res.Err.Error()
		}
		waits[i] = nil
	}
}

// activate hands each taken connection to its loop to be started.
func (s *Server) activate(rs []*restoring) {
	byLoop := map[*loop][]*restoring{}
	for _, r := range rs {
		if r.c != nil && r.why == "" {
			byLoop[r.c.loop] = append(byLoop[r.c.loop], r)
		}
	}
	for l, list := range byLoop {
		_ = l.el.Execute(context.Background(), runnable(func() {
			for _, r := range list {
				l.activate(r.c, r.rec.Subs)
			}
		}))
	}
}

// dropRestored closes connections enrolled but not acknowledged.
func (s *Server) dropRestored(rs []*restoring) {
	for _, r := range rs {
		if r.c != nil {
			c := r.c
			_ = c.loop.el.Execute(context.Background(), runnable(func() { c.loop.release(c) }))
		}
	}
}

// openRestored is OnOpen for an enrolled descriptor: it builds the
// connection from its record, frozen until activate, or refuses it (the
// old process keeps it).
func (s *Server) openRestored(gc gnet.Conn, r *restoring) ([]byte, gnet.Action) {
	refuse := func(why string) ([]byte, gnet.Action) {
		r.why = why
		gc.SetContext(nil)
		return nil, gnet.Close // closes this process's copy only: nothing is sent
	}
	rec := &r.rec
	switch {
	case s.draining.Load():
		return refuse("draining")
	case len(rec.Compression) > 0:
		return refuse("compression state of an unknown version")
	case rec.Flags&handoff.FlagProtocol != 0 && s.cfg.Echo, rec.Flags&handoff.FlagProtocol == 0 && !s.cfg.Echo:
		return refuse("echo and protocol mode differ")
	}
	if s.m.AddOpen(1) > s.maxConns {
		s.m.AddOpen(-1)
		return refuse("connection ceiling")
	}
	l := s.loopFor(gc.EventLoop())
	c := &conn{gc: gc, loop: l, state: stateFrozen, protocol: rec.Flags&handoff.FlagProtocol != 0}
	fail := func(why string) ([]byte, gnet.Action) {
		c.parser.Reset()
		s.m.AddOpen(-1)
		return refuse(why)
	}
	if _, err := c.parser.RestoreState(rec.Parser, s.cfg.MaxMessage); err != nil {
		return fail(err.Error())
	}
	now := l.wheel.now
	ms := int64(wheelTick / time.Millisecond)
	c.lastSeen = now - int64(rec.IdleMs)/ms
	c.opened = now - int64(min(rec.AgeMs, 1<<40))/ms
	c.pinged = rec.Flags&handoff.FlagPinged != 0
	c.stats = connStats{bytesIn: rec.BytesIn, bytesOut: rec.BytesOut, msgsIn: rec.MsgsIn, msgsOut: rec.MsgsOut}
	c.bucket = cmdBucket{debt: rec.CmdDebt, last: uint32(now)}
	if c.protocol {
		id, _, err := auth.DecodeIdentity(rec.Identity, s.auth.v)
		if err != nil {
			return fail(err.Error())
		}
		sess := &session{cid: rec.ClientID, id: id, user: id.Sub()}
		if rec.RefreshMs >= 0 {
			sess.refreshBy = now + max(rec.RefreshMs/ms, 1)
		}
		c.sess = sess
		if rec.Flags&handoff.FlagUserCounted != 0 && s.auth.users != nil {
			// The user had this connection already: it is counted even
			// if this node's count is full.
			c.userCounted = s.auth.users.acquire(sess.user)
		}
	}
	if !injectInbound(gc, rec.Inbound) {
		if c.userCounted {
			s.auth.users.release(c.sess.user)
		}
		return fail("cannot restore input")
	}
	gc.SetContext(c)
	l.conns++
	l.setFrozen(c) // not read until activate
	r.c = c
	return nil, gnet.None
}

// activate starts a connection received from the old process: wheel,
// subscriptions resumed from their last delivered offsets, reading.
func (l *loop) activate(c *conn, subs []handoff.Sub) {
	if c.state != stateFrozen {
		return // closed meanwhile
	}
	s := l.srv
	c.state = stateOpen
	l.schedule(c)
	l.batch = c
	if sess := c.sess; sess != nil {
		for _, sb := range subs {
			ns := s.nsOf([]byte(sb.Channel))
			at, found := c.findSub([]byte(sb.Channel))
			if ns == nil || found || len(sess.subs) >= s.cfg.MaxSubsPerConn {
				s.log.Warn("handoff: subscription not resumed (namespace unknown here, duplicate, or over --max-subs-per-conn)", "channel", sb.Channel)
				continue
			}
			op := l.join(c, ns, sb.Channel, at, opResume)
			op.sub.last, op.sub.epoch = sb.Offset, sb.Epoch
			if sb.Lagging {
				op.sub.lagging = true
				sess.lagging++
			}
			l.resumeSub(op)
			if c.state != stateOpen {
				break
			}
		}
	}
	l.endBatch()
	if c.sess != nil && c.state == stateOpen {
		l.flush(c)
	}
	l.readAgain(c)
	s.ho.received.Inc()
}

var errHandoffBusy = errors.New("engine: a handoff is already running")
