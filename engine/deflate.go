package engine

import (
	"unicode/utf8"

	"github.com/gobwas/httphead"

	"github.com/wsedge/wsedge/frame"
	"github.com/wsedge/wsedge/shard"
)

// permessage-deflate (RFC 7692), as the engine uses it:
//
//   - Negotiation (upgrader.negotiate): the first valid offer is accepted and
//     answered with server_no_context_takeover and client_no_context_takeover,
//     so no connection has compression state of its own. What a connection
//     negotiated is one byte in its parser (frame.Parser.SetDeflate: the
//     window bits the server may use).
//   - Publications: the plain frame is encoded once (encodePush); the first
//     loop with a subscriber that negotiated compression builds its
//     compressed twin (shard.Frame.Twin) with its own compressor, and every
//     such subscriber on every loop queues that one twin.
//   - Replies, echoes and other per-connection writes are compressed one by
//     one with the loop's compressor (conn.writeFrame).
//   - Inbound compressed messages are inflated by the loop's inflater with
//     the --max-message bound (conn.OnCompressed).
//
// Everything here runs on the loop goroutine, except Twin's build, which
// runs on the goroutine of whichever loop asks first, with that loop's
// compressor.

// loopDeflate is one loop's compression state, made on first use so that a
// server whose clients never negotiate compression does not pay for it.
type loopDeflate struct {
	level   int
	minSize int
	def     [frame.MaxDeflateWindowBits + 1]*frame.Deflater // by window bits, made on first use
	inf     *frame.Inflater
	buf     []byte                          // a compressed reply or echo, valid until the next
	twinFn  func(*shard.Frame) *shard.Frame // l.buildTwin, bound once
}

// deflateRoom is the room left in front of compressed output for the
// longest frame header, which is written once the length is known.
const deflateRoom = 10

// maxKeptDeflate is the largest reply buffer a loop keeps after use.
const maxKeptDeflate = 1 << 20

func (l *loop) zs() *loopDeflate {
	if l.z == nil {
		cfg := &l.srv.cfg
		l.z = &loopDeflate{level: cfg.CompressionLevel, minSize: cfg.CompressionMinSize}
		l.z.twinFn = l.buildTwin
	}
	return l.z
}

// deflater returns the loop's compressor for a window of 2^bits bytes.
func (z *loopDeflate) deflater(bits int) *frame.Deflater {
	d := z.def[bits]
	if d == nil {
		var err error
		if d, err = frame.NewDeflater(z.level, bits); err != nil {
			// The level and window were validated with the config.
			panic("BUG: " + err.Error())
		}
		z.def[bits] = d
	}
	return d
}

// deflateOffers is the upgrader's state while it reads the extension
// offers of one request.
type deflateOffers struct {
	idx    int                                                // index of the offer being read
	offer  httphead.Option                                    // its name and parameters, aliasing the request
	resp   [1]httphead.Option                                 // the accepted offer's response
	scanFn func(int, []byte, []byte, []byte) httphead.Control // h.scanOffer, bound once
}

// extensions is the Upgrader's ExtensionCustom hook, called with each
// Sec-WebSocket-Extensions header: it accepts the first valid
// permessage-deflate offer (frame.NegotiateDeflate) and declines the rest.
// gobwas' Negotiate hook would do the same but appends every accepted
// option to a fresh slice (about 450 bytes of garbage per handshake);
// this one hands back the upgrader's own one-element slice.
func (h *upgrader) extensions(v []byte, dst []httphead.Option) ([]httphead.Option, bool) {
	o := &h.offers
	o.idx, o.offer = -1, httphead.Option{}
	ok := httphead.ScanOptions(v, o.scanFn)
	if ok {
		h.takeOffer()
	}
	o.offer = httphead.Option{} // it aliases the request's bytes
	if !ok {
		return dst, false
	}
	if h.deflate != 0 {
		return o.resp[:], true
	}
	return dst, true
}

func (h *upgrader) scanOffer(i int, name, attr, val []byte) httphead.Control {
	o := &h.offers
	if i != o.idx {
		h.takeOffer()
		o.idx, o.offer = i, httphead.Option{Name: name}
	}
	if attr != nil {
		o.offer.Parameters.Set(attr, val)
	}
	return httphead.ControlContinue
}

// takeOffer accepts the offer just read if none was accepted yet.
func (h *upgrader) takeOffer() {
	o := &h.offers
	if h.deflate != 0 || o.offer.Name == nil {
		return
	}
	if resp, bits, ok := frame.NegotiateDeflate(o.offer); ok {
		h.deflate, o.resp[0] = bits, resp
	}
}

// compress returns the frame to write for a data message to c compressed
// (RSV1 set), or nil when it goes plain: c did not negotiate compression,
// the message is under --compression-min-size, or compressing does not
// make it smaller. The result is valid until the next call on the loop.
// It does not allocate once the loop's buffer has grown.
func (l *loop) compress(c *conn, op frame.OpCode, payload []byte) []byte {
	bits := c.parser.DeflateBits()
	if bits == 0 || !op.IsData() || len(payload) < l.srv.cfg.CompressionMinSize {
		return nil
	}
	z := l.zs()
	if cap(z.buf) > maxKeptDeflate {
		z.buf = nil
	}
	b := append(z.buf[:0], make([]byte, deflateRoom)...)
	b = z.deflater(bits).Append(b, payload)
	z.buf = b
	n := len(b) - deflateRoom
	if n >= len(payload) {
		return nil
	}
	h := frame.HeaderLen(n)
	frame.AppendCompressedHeader(b[deflateRoom-h:deflateRoom-h], true, op, n)
	return b[deflateRoom-h:]
}

// OnCompressed implements frame.DeflateHandler: a message that arrived
// with RSV1 set is inflated, bounded by --max-message (1009 as soon as
// the output would cross it), checked (1007 for bad data or invalid UTF-8
// in a text message) and handled like any message.
func (c *conn) OnCompressed(op frame.OpCode, payload []byte) error {
	if c.state != stateOpen {
		return nil
	}
	l := c.loop
	z := l.zs()
	if z.inf == nil {
		z.inf = frame.NewInflater()
	}
	msg, err := z.inf.Inflate(payload, l.srv.cfg.MaxMessage)
	if err != nil {
		return err
	}
	if op == frame.OpText && !utf8.Valid(msg) {
		return frame.ErrInvalidUTF8
	}
	return c.OnMessage(op, msg)
}

// frameFor returns the frame of a publication that c should queue: f for a
// connection without compression, else f's compressed twin, built once for
// all loops. A connection that limited the server's window below the
// message's size gets f: the shared twin was compressed with the full
// window, and an uncompressed message is always allowed.
func (l *loop) frameFor(c *conn, f *shard.Frame) *shard.Frame {
	bits := c.parser.DeflateBits()
	if bits == 0 {
		return f
	}
	if bits < frame.MaxDeflateWindowBits {
		if h, _ := frame.ParseHeader(f.Buf); h.Length > 1<<bits {
			return f
		}
	}
	return f.Twin(l.zs().twinFn)
}

// buildTwin compresses a publication's frame into a new one, or returns
// nil when the message is under --compression-min-size or does not get
// smaller. It runs on whichever loop first needs the twin.
func (l *loop) buildTwin(f *shard.Frame) *shard.Frame {
	h, _ := frame.ParseHeader(f.Buf)
	payload := f.Buf[h.Size:]
	z := l.zs()
	if len(payload) < z.minSize {
		return nil
	}
	t := shard.NewFrame(len(payload) + deflateRoom)
	b := append(t.Buf[:0], make([]byte, deflateRoom)...)
	b = z.deflater(frame.MaxDeflateWindowBits).Append(b, payload)
	n := len(b) - deflateRoom
	if n >= len(payload) {
		t.Buf = b
		t.Release()
		return nil
	}
	hl := frame.HeaderLen(n)
	frame.AppendCompressedHeader(b[:0], true, h.Op, n)
	copy(b[hl:], b[deflateRoom:])
	t.Buf = b[:hl+n]
	return t
}
