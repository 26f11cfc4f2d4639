package engine

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsedge/wsedge/handoff"
)

// The old process's side of a handoff: one goroutine accepts the new
// process on the handoff socket and runs the session. After the hellos
// and the new process's "ready" (it listens on the same port), the loops
// stop accepting, then freeze their connections in batches; the session
// sends each batch with its descriptors and, per acknowledged batch, the
// loops release what was taken and thaw what was refused. When no
// connection is left it says done and waits for the new process's done:
// only then is the handoff complete.

// handoffBatchesPerLoop is how many batches a loop freezes per round.
const handoffBatchesPerLoop = 4

// handoffWait is how long the old process waits, once every connection it
// could freeze is gone, for the rest (mid-handshake, closing, or with
// output the client does not read) to become ready. Those left after it
// stay and are drained as on shutdown.
const handoffWait = 10 * time.Second

// ServeHandoff listens on path (wsedge serve --handoff-socket) for a new
// process that takes this one's connections over. done is called, on the
// handoff goroutine, once a handoff completed; the caller then stops the
// server. A failed handoff is logged and this process goes on serving
// everything it still holds; the socket stays open for another attempt.
func (s *Server) ServeHandoff(path string, done func()) (io.Closer, error) {
	ln, err := handoff.Listen(handoff.SocketPath(path))
	if err != nil {
		return nil, fmt.Errorf("engine: handoff socket: %w", err)
	}
	go func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return // closed
			}
			err = s.giveAway(handoff.NewLink(c))
			c.Close()
			if err == nil {
				// The socket is free at once for the new process's own
				// handoff socket (the next upgrade).
				ln.Close()
				done()
				return
			}
			s.log.Error("handoff failed; this process keeps serving every connection it did not hand over", "err", err)
		}
	}()
	return ln, nil
}

// giveLoop is one loop's part of a session; only its loop touches todo.
type giveLoop struct {
	l     *loop
	todo  []*conn
	retry []*conn
	began bool
}

// frozenBatch is what one loop froze for one message.
type frozenBatch struct {
	gl      *giveLoop
	conns   []*conn
	seqs    []uint32
	fds     []int
	payload []byte
}

// roundResult is one loop's answer to a round.
type roundResult struct {
	batches []*frozenBatch
	left    int // connections not ready yet
}

// giveAway runs one session with a new process.
func (s *Server) giveAway(link *handoff.Link) error {
	select {
	case s.ho.giving <- struct{}{}:
		defer func() { <-s.ho.giving }()
	default:
		_ = link.Send(handoff.TypeRefuse, []byte(errHandoffBusy.Error()), nil)
		return errHandoffBusy
	}
	conn := link.Conn()
	_ = conn.SetDeadline(time.Now().Add(handoffHelloTimeout))
	typ, payload, fds, err := link.Recv()
	handoff.CloseFDs(fds)
	if err != nil {
		return err
	}
	if typ != handoff.TypeHello {
		return fmt.Errorf("%w: message %d before hello", handoff.ErrMalformed, typ)
	}
	h, err := handoff.DecodeHello(payload)
	if err == nil {
		err = s.compatible(h)
	}
	if err != nil {
		_ = link.Send(handoff.TypeRefuse, []byte(err.Error()), nil)
		return err
	}
	if err := link.Send(handoff.TypeHello, handoff.AppendHello(nil, s.helloInfo()), nil); err != nil {
		return err
	}
	// The new process boots, then says it listens.
	_ = conn.SetDeadline(time.Now().Add(2 * handoffHelloTimeout))
	typ, payload, fds, err = link.Recv()
	handoff.CloseFDs(fds)
	switch {
	case err != nil:
		return err
	case typ == handoff.TypeRefuse:
		return fmt.Errorf("refused by the new process: %s", payload)
	case typ != handoff.TypeReady:
		return fmt.Errorf("%w: message %d instead of ready", handoff.ErrMalformed, typ)
	}
	start := time.Now()
	<-s.ho.loopsUp
	loops := s.allLoops()
	stopped := s.onLoops(loops, func(l *loop) any { return l.stopListening() })
	s.draining.Store(true) // not ready; a connection accepted just before gets 503
	g := &giver{s: s, link: link}
	err = g.run(loops)
	if err != nil {
		g.fail()
		for i, l := range loops {
			fds := stopped[i].([]int)
			s.onLoops([]*loop{l}, func(l *loop) any { return l.listenAgain(fds) })
		}
		s.draining.Store(false)
		return fmt.Errorf("after %d connections handed over: %w", g.sent, err)
	}
	s.log.Info("handoff done", "connections", g.sent, "left_behind", g.left, "refused", g.refused, "took", time.Since(start).Round(time.Millisecond))
	if g.left+g.refused > 0 {
		// They are drained when this process stops (close 1001 spread
		// over the grace): their clients reconnect to the new process.
		s.log.Warn("handoff: connections the new process did not take are drained", "count", g.left+g.refused)
	}
	return nil
}

// giver is the state of a running session on the handoff goroutine.
type giver struct {
	s        *Server
	link     *handoff.Link
	inflight []*frozenBatch // sent, not acknowledged, in order
	sent     int
	left     int // not ready in time
	refused  int // refused by the new process, resumed here
	acks     []handoff.Ack
}

func (g *giver) run(loops []*loop) error {
	s := g.s
	gls := make([]*giveLoop, len(loops))
	for i, l := range loops {
		gls[i] = &giveLoop{l: l}
	}
	var seq atomic.Uint32
	waitUntil := time.Time{}
	for {
		results := make(chan roundResult, len(gls))
		for _, gl := range gls {
			if err := gl.l.el.Execute(context.Background(), runnable(func() {
				results <- gl.collect(&seq)
			})); err != nil {
				return err
			}
		}
		left, batches := 0, 0
		t0 := time.Now()
		var tc, ts time.Duration
		for range gls {
			r := <-results
			tc = time.Since(t0)
			left += r.left
			for _, b := range r.batches {
				batches++
				if err := g.send(b); err != nil {
					g.inflight = append(g.inflight, b) // thawed by fail
					return err
				}
			}
		}
		ts = time.Since(t0)
		for len(g.inflight) > 0 {
			if err := g.ack(); err != nil {
				return err
			}
		}
		s.log.Debug("handoff round", "batches", batches, "frozen_in", tc, "sent_in", ts, "acked_in", time.Since(t0), "not_ready", left)
		if left == 0 && batches == 0 {
			break
		}
		if batches > 0 {
			waitUntil = time.Time{} // progress: the wait for stragglers starts again
		} else {
			// Only connections that are not ready: wait for them, for
			// a bounded time (a shutdown poll, not a synchronisation).
			if waitUntil.IsZero() {
				waitUntil = time.Now().Add(handoffWait)
			}
			if time.Now().After(waitUntil) {
				g.left = left
				s.log.Warn("handoff: connections not ready in time stay and are drained", "count", left)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	conn := g.link.Conn()
	_ = conn.SetDeadline(time.Now().Add(handoffHelloTimeout))
	if err := g.link.Send(handoff.TypeDone, nil, nil); err != nil {
		return err
	}
	typ, _, fds, err := g.link.Recv()
	handoff.CloseFDs(fds)
	if err != nil {
		return err
	}
	if typ != handoff.TypeDone {
		return fmt.Errorf("%w: message %d instead of done", handoff.ErrMalformed, typ)
	}
	return nil
}

// send writes one batch; the descriptors are duplicates the loop made,
// closed here once the kernel has copied them into the message.
func (g *giver) send(b *frozenBatch) error {
	_ = g.link.Conn().SetDeadline(time.Now().Add(handoffHelloTimeout))
	err := g.link.Send(handoff.TypeBatch, b.payload, b.fds)
	for _, fd := range b.fds {
		unix.Close(fd)
	}
	b.fds = nil
	if err != nil {
		return err
	}
	g.inflight = append(g.inflight, b)
	return nil
}

// ack reads the acknowledgement of the oldest batch in flight and has its
// loop release what was taken and thaw what was refused.
func (g *giver) ack() error {
	typ, payload, fds, err := g.link.Recv()
	handoff.CloseFDs(fds)
	if err != nil {
		return err
	}
	if typ == handoff.TypeRefuse {
		return fmt.Errorf("refused by the new process: %s", payload)
	}
	if typ != handoff.TypeAck {
		return fmt.Errorf("%w: message %d instead of an ack", handoff.ErrMalformed, typ)
	}
	b := g.inflight[0]
	if g.acks, err = handoff.DecodeAcks(g.acks[:0], payload); err != nil {
		return err
	}
	if len(g.acks) != len(b.seqs) {
		return fmt.Errorf("%w: %d acks for %d connections", handoff.ErrMalformed, len(g.acks), len(b.seqs))
	}
	taken := make([]bool, len(b.seqs))
	for i, a := range g.acks {
		if a.Seq != b.seqs[i] {
			return fmt.Errorf("%w: ack for %d, expected %d", handoff.ErrMalformed, a.Seq, b.seqs[i])
		}
		taken[i] = a.Taken
	}
	g.inflight = g.inflight[1:]
	for _, t := range taken {
		if t {
			g.sent++
		} else {
			g.refused++
		}
	}
	conns := b.conns
	l := b.gl.l
	_ = l.el.Execute(context.Background(), runnable(func() {
		for i, c := range conns {
			if taken[i] {
				l.release(c)
			} else {
				l.thaw(c)
			}
		}
	}))
	return nil
}

// fail thaws every connection sent but not acknowledged.
func (g *giver) fail() {
	for _, b := range g.inflight {
		for _, fd := range b.fds {
			unix.Close(fd)
		}
		l, conns := b.gl.l, b.conns
		_ = l.el.Execute(context.Background(), runnable(func() {
			for _, c := range conns {
				l.thaw(c)
			}
		}))
	}
	g.inflight = nil
}

// collect freezes up to handoffBatchesPerLoop batches of this loop's
// connections. On the loop goroutine.
func (gl *giveLoop) collect(seq *atomic.Uint32) roundResult {
	l := gl.l
	if !gl.began {
		gl.began = true
		l.wheel.each(func(c *conn) { gl.todo = append(gl.todo, c) })
	}
	var (
		res roundResult
		b   *frozenBatch
		rec handoff.Conn
	)
	for len(gl.todo) > 0 && len(res.batches) < handoffBatchesPerLoop {
		c := gl.todo[len(gl.todo)-1]
		gl.todo = gl.todo[:len(gl.todo)-1]
		if c.state == stateClosed {
			continue
		}
		n := seq.Add(1)
		fd, ok := l.freeze(c, n, &rec)
		if !ok {
			if c.state != stateClosed {
				gl.retry = append(gl.retry, c)
			}
			if fd == fdsExhausted {
				break // a server at its file limit: what is sent frees them
			}
			continue
		}
		if b == nil {
			b = &frozenBatch{gl: gl, payload: handoff.StartBatch(nil)}
		}
		b.payload = handoff.AppendBatchRecord(b.payload, &rec)
		b.conns = append(b.conns, c)
		b.seqs = append(b.seqs, n)
		b.fds = append(b.fds, fd)
		if len(b.conns) == handoff.MaxBatch || len(b.payload) >= handoff.BatchBytes {
			res.batches = append(res.batches, b)
			b = nil
		}
	}
	if b != nil {
		res.batches = append(res.batches, b)
	}
	if len(gl.todo) == 0 {
		gl.todo, gl.retry = gl.retry, gl.todo[:0]
	}
	res.left = len(gl.todo) + len(gl.retry)
	if len(res.batches) > 0 {
		res.left = max(res.left, 1) // another round looks again
	}
	return res
}

// allLoops returns every event loop's shard, creating those no connection
// has reached yet.
func (s *Server) allLoops() []*loop {
	els := eventLoops(s.eng)
	if els == nil {
		return *s.list.Load()
	}
	loops := make([]*loop, 0, len(els))
	for _, el := range els {
		loops = append(loops, s.loopFor(el))
	}
	return loops
}

// onLoops runs fn on each loop's goroutine and returns the results in order.
func (s *Server) onLoops(loops []*loop, fn func(*loop) any) []any {
	out := make([]any, len(loops))
	var wg sync.WaitGroup
	for i, l := range loops {
		wg.Add(1)
		if err := l.el.Execute(context.Background(), runnable(func() {
			out[i] = fn(l)
			wg.Done()
		})); err != nil {
			wg.Done()
		}
	}
	wg.Wait()
	return out
}
