package engine

import (
	"errors"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/wsedge/wsedge/frame"
	"github.com/wsedge/wsedge/protocol"
)

type connState uint8

const (
	stateHandshake connState = iota // accepted, upgrade request not complete
	stateOpen                       // upgraded
	stateClosing                    // our close frame is sent; waiting for the peer's
	stateClosed                     // gnet closed the socket
	stateFrozen                     // being handed to another process: not read, not written (handoff.go)
)

// conn is one connection's state, owned by its loop goroutine. It is kept
// small (see TestConnSize): an idle connection costs this struct, gnet's
// own, and nothing else.
type conn struct {
	gc           gnet.Conn
	loop         *loop
	wnext, wprev *conn // wheel slot list
	due          int64 // wheel tick this connection is filed under
	lastSeen     int64 // wheel tick of the last inbound bytes
	opened       int64 // wheel tick of accept
	parser       frame.Parser
	hsScan       uint16 // request bytes already searched for the blank line
	state        connState
	inWheel      bool
	pinged       bool      // a ping is out since lastSeen
	broken       bool      // the inbound stream is unusable: discard it
	protocol     bool      // negotiated wsedge.v1.json
	serverClose  bool      // the server sent the first close frame
	paused       bool      // reading stopped: unsent replies over the bound (listed in loop.paused)
	ipCounted    bool      // holds a slot in the per-address limiter
	hsCounted    bool      // the handshake was refused or timed out, and counted
	userCounted  bool      // holds a --max-conns-per-user slot for sess.user
	closeCode    uint16    // close code sent or received, for the connection log
	sess         *session  // protocol state, from the first command on
	bucket       cmdBucket // command rate
	stats        connStats
}

// connStats are one connection's totals, logged when it closes.
type connStats struct {
	bytesIn, bytesOut uint64
	msgsIn, msgsOut   uint32
}

// errStop ends a Parse after the connection was closed or must close now.
var errStop = errors.New("engine: stop reading")

// errPause ends a Parse because the connection's unsent bytes are over the
// bound; the rest of its input waits (see backpressure.go).
var errPause = errors.New("engine: pause reading")

// write sends b, reporting false if gnet closed the connection on a write
// error (gnet calls OnClose synchronously in that case).
func (c *conn) write(b []byte) bool {
	l := c.loop
	l.tally.bytesOut += uint64(len(b))
	c.stats.bytesOut += uint64(len(b))
	if l.batch == c {
		l.wbuf = append(l.wbuf, b...)
		return true
	}
	if _, err := c.gc.Write(b); err != nil {
		return false
	}
	return c.state != stateClosed
}

// writeFrame sends one unmasked frame: small payloads are copied behind the
// header into the loop's scratch buffer for a single write; large ones go
// out with writev.
func (c *conn) writeFrame(op frame.OpCode, payload []byte) bool {
	l := c.loop
	if op.IsData() {
		l.tally.msgsOut++
		c.stats.msgsOut++
		if z := l.compress(c, op, payload); z != nil {
			return c.write(z)
		}
	}
	if len(payload) <= cap(l.scratch)-frame.MaxHeaderSize {
		if l.batch == c {
			n := len(l.wbuf)
			l.wbuf = frame.AppendFrame(l.wbuf, op, payload)
			l.tally.bytesOut += uint64(len(l.wbuf) - n)
			c.stats.bytesOut += uint64(len(l.wbuf) - n)
			return true
		}
		return c.write(frame.AppendFrame(l.scratch[:0], op, payload))
	}
	if l.batch == c && !l.writeBatch() {
		return false
	}
	l.iov[0] = frame.AppendHeader(l.scratch[:0], true, op, len(payload))
	l.iov[1] = payload
	_, err := c.gc.Writev(l.iov[:])
	l.iov[0], l.iov[1] = nil, nil
	if err != nil {
		return false
	}
	n := uint64(frame.HeaderLen(len(payload)) + len(payload))
	l.tally.bytesOut += n
	c.stats.bytesOut += n
	return c.state != stateClosed
}

// OnMessage implements frame.Handler.
func (c *conn) OnMessage(op frame.OpCode, payload []byte) error {
	if c.state != stateOpen {
		return nil // closing: the peer's data is no longer wanted
	}
	c.loop.tally.msgsIn++
	c.stats.msgsIn++
	if c.loop.srv.cfg.Echo {
		if !c.writeFrame(op, payload) {
			return errStop
		}
	} else if err := c.loop.srv.app.OnMessage(c, op, payload); err != nil {
		return err
	}
	return c.checkBound()
}

// checkBound stops the parse when what the connection caused us to write
// is over the bound. It runs after every message and ping.
func (c *conn) checkBound() error {
	if c.state == stateOpen && c.overBound() {
		return errPause
	}
	return nil
}

// OnPing implements frame.Handler.
func (c *conn) OnPing(payload []byte) error {
	if c.state != stateOpen {
		return nil
	}
	if !c.writeFrame(frame.OpPong, payload) {
		return errStop
	}
	return c.checkBound()
}

// OnPong implements frame.Handler. lastSeen was already updated.
func (c *conn) OnPong([]byte) error { return nil }

// OnClose implements frame.Handler: the peer's close frame. If we started
// the close, this completes it; otherwise echo the code and finish. Either
// way the server closes TCP first (RFC 6455 section 7.1.1).
func (c *conn) OnClose(code frame.CloseCode, _ []byte) error {
	if c.state == stateOpen {
		if code == frame.CloseNoStatus {
			code = frame.CloseNormal
		}
		c.closeCode = uint16(code)
		c.write(frame.AppendClose(c.loop.scratch[:0], code, ""))
	}
	return errStop
}

// disconnect ends a protocol connection: a disconnect push telling the
// client why and whether to reconnect, then the close handshake.
func (c *conn) disconnect(code protocol.DisconnectCode, reason string, closeCode frame.CloseCode) {
	c.disconnectDelay(code, reason, closeCode, 0)
}

// disconnectDelay is disconnect with a reconnect delay in the push
// (milliseconds, none when 0): the least the client waits before it comes
// back.
func (c *conn) disconnectDelay(code protocol.DisconnectCode, reason string, closeCode frame.CloseCode, delayMs uint64) {
	if c.state != stateOpen {
		return
	}
	if c.protocol && !c.writeFrame(frame.OpText, protocol.AppendDisconnectDelay(c.loop.out[:0], code, reason, code.Reconnect(), delayMs)) {
		return
	}
	c.startClose(closeCode, reason, false)
}

// startClose sends a close frame and waits (up to CloseTimeout) for the
// peer's. With broken set the inbound stream cannot be parsed any more, so
// the write side is shut after the close frame: the peer sees our close and
// EOF, answers, and closes its side.
func (c *conn) startClose(code frame.CloseCode, reason string, broken bool) {
	if c.state != stateOpen {
		return
	}
	l := c.loop
	c.serverClose, c.closeCode = true, uint16(code)
	if !c.write(frame.AppendClose(l.scratch[:0], code, reason)) {
		return
	}
	c.state = stateClosing
	c.broken = broken
	if l.batch == c && !l.writeBatch() {
		return
	}
	if broken && c.gc.OutboundBuffered() == 0 {
		_ = unix.Shutdown(c.gc.Fd(), unix.SHUT_WR)
		// Its input cannot be parsed any more: stop reading it rather
		// than discarding whatever it streams until the close timeout.
		// A peer that closes is still seen (EPOLLHUP once both sides
		// are shut).
		l.setReading(c, false)
	}
	l.wheel.reschedule(c, l.wheel.now+l.closeTicks)
}
