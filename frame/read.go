package frame

import (
	"encoding/binary"
	"sync"

	"github.com/gobwas/ws"
)

// Handler receives what a Parser finds. Every payload slice aliases either
// the bytes given to Parse or the parser's assembly buffer and is valid only
// until the callback returns. A callback that returns an error stops Parse,
// which returns that error.
type Handler interface {
	// OnMessage gets a complete data message, already unmasked and, for
	// text, validated as UTF-8.
	OnMessage(op OpCode, payload []byte) error
	// OnPing and OnPong get control frames, which may arrive between the
	// fragments of a message.
	OnPing(payload []byte) error
	OnPong(payload []byte) error
	// OnClose gets a validated close frame; Parse returns right after it
	// and reads nothing more.
	OnClose(code CloseCode, reason []byte) error
}

// DeflateHandler is the Handler of a connection that negotiated
// permessage-deflate (see Parser.SetDeflate).
type DeflateHandler interface {
	Handler
	// OnCompressed gets a complete data message sent with RSV1 set: its
	// payload is the raw deflate data (RFC 7692 section 7.2.2, without the
	// 00 00 ff ff tail), unmasked, not yet inflated nor checked as UTF-8.
	// Its length is bounded by Parse's max like any message's.
	OnCompressed(op OpCode, payload []byte) error
}

// Parser is the per-connection state of an incremental frame reader. The
// zero value is ready. It is owned by the connection's loop goroutine.
//
// Frames that arrive whole are unmasked in place and handed over without a
// copy; only a message that is fragmented or spans several reads is
// assembled in a buffer taken from a pool and returned when the message is
// delivered, so an idle connection holds no buffer.
type Parser struct {
	mask      [4]byte // mask of the frame whose payload is partly consumed
	utf8      UTF8
	remaining int64 // payload bytes of that frame still to come
	maskOff   uint8
	inFrame   bool   // a data frame's payload is partly consumed
	fin       bool   // that frame ends its message
	msgOp     OpCode // opcode of the message being assembled; 0 if none
	deflate   uint8  // negotiated permessage-deflate: the server's window bits; 0 if not
	msgRsv1   bool   // the message being assembled is compressed
	msgLen    int
	buf       *[]byte
}

// maxPooled is the largest assembly buffer returned to the pool; bigger ones
// are left to the GC so that one huge message does not pin memory.
const maxPooled = 1 << 20

var bufPool = sync.Pool{New: func() any {
	b := make([]byte, 0, 4096)
	return &b
}}

// Reset drops any partial message and returns its buffer to the pool. Call it
// when the connection closes.
func (p *Parser) Reset() {
	p.release()
	*p = Parser{}
}

// SetDeflate records that the connection negotiated permessage-deflate
// with the server compressing in a window of 2^windowBits bytes (0: not
// negotiated). From then on a data message whose first frame has RSV1 set
// is delivered compressed to the handler's OnCompressed; the handler must
// then be a DeflateHandler.
func (p *Parser) SetDeflate(windowBits int) { p.deflate = uint8(windowBits) }

// DeflateBits returns what SetDeflate recorded.
func (p *Parser) DeflateBits() int { return int(p.deflate) }

// Buffered reports the bytes held in the assembly buffer.
func (p *Parser) Buffered() int {
	if p.buf == nil {
		return 0
	}
	return len(*p.buf)
}

func (p *Parser) release() {
	if p.buf == nil {
		return
	}
	if cap(*p.buf) <= maxPooled {
		*p.buf = (*p.buf)[:0]
		bufPool.Put(p.buf)
	}
	p.buf = nil
}

func (p *Parser) appendPayload(b []byte) {
	if p.buf == nil {
		p.buf = bufPool.Get().(*[]byte)
	}
	*p.buf = append(*p.buf, b...)
}

// Parse reads as many frames from b as are complete or can be consumed, and
// reports how many bytes it consumed; the caller discards exactly those and
// passes the rest again with more bytes later. max bounds a message's
// payload (ErrTooLarge), checked as soon as a frame's length is in, so the
// assembly buffer never holds more than max bytes. b is modified (unmasked)
// in place. Parse does not allocate once the pool holds an assembly buffer.
//
// Unless it returns an error or has just delivered a close frame, Parse
// leaves unconsumed only an incomplete frame header (at most
// MaxHeaderSize-1 bytes) or an incomplete control frame (at most 6+125-1
// bytes): the caller never has to hold more than that between reads.
func (p *Parser) Parse(b []byte, max int, h Handler) (n int, err error) {
	for {
		if p.inFrame {
			k := int(min(p.remaining, int64(len(b)-n)))
			if err := p.consumePayload(b[n : n+k]); err != nil {
				return n, err
			}
			n += k
			if p.remaining > 0 {
				return n, nil
			}
			p.inFrame = false
			if p.fin {
				if err := p.deliver(h); err != nil {
					return n, err
				}
			}
			continue
		}
		rest := b[n:]
		if len(rest) < 2 {
			return n, nil
		}
		// Validate as soon as the first two bytes are in, before the
		// extended length and the mask arrive (fail fast).
		fh, whole := ParseHeader(rest)
		fin, op := fh.Fin, fh.Op
		if op.IsReserved() {
			return n, ErrReservedOpcode
		}
		if fh.Rsv != 0 {
			if err := p.checkRsv(fh.Rsv, op); err != nil {
				return n, err
			}
		}
		if !fh.Masked {
			return n, ErrUnmasked
		}
		control := op.IsControl()
		switch {
		case control && !fin:
			return n, ErrControlFragmented
		case control && rest[1]&0x7f > 125:
			// The 7-bit indicator decides, whether or not the extended
			// length has arrived (it may even encode a small value).
			return n, ErrControlTooLong
		case op == OpContinuation && p.msgOp == 0:
			return n, ErrUnexpectedCont
		case !control && op != OpContinuation && p.msgOp != 0:
			return n, ErrExpectedCont
		}
		length, known, lerr := payloadLength(rest)
		if !known || lerr != nil {
			return n, lerr
		}
		// Nothing is added to length, which may be near 2^63: msgLen only
		// grows after passing this check, so max-msgLen cannot wrap either.
		if !control && length > int64(max-p.msgLen) {
			return n, ErrTooLarge
		}
		if !whole {
			return n, nil
		}
		hlen, mask := fh.Size, fh.Mask

		if control {
			if int64(len(rest)) < int64(hlen)+length {
				return n, nil // control frames are at most 131 bytes: wait for all of it
			}
			payload := rest[hlen : hlen+int(length)]
			ws.Cipher(payload, mask, 0)
			n += hlen + int(length)
			switch op {
			case OpPing:
				err = h.OnPing(payload)
			case OpPong:
				err = h.OnPong(payload)
			case OpClose:
				code, reason, cerr := ParseClose(payload)
				if cerr != nil {
					return n, cerr
				}
				return n, h.OnClose(code, reason)
			}
			if err != nil {
				return n, err
			}
			continue
		}

		if op != OpContinuation {
			p.msgOp = op
			p.msgRsv1 = fh.Rsv != 0
			p.utf8.Reset()
		}
		p.msgLen += int(length)
		n += hlen
		arrived := int64(len(rest)-hlen) >= length
		if arrived && fin && op != OpContinuation {
			// The common case: a single-frame message that arrived whole.
			payload := rest[hlen : hlen+int(length)]
			ws.Cipher(payload, mask, 0)
			n += int(length)
			p.msgOp, p.msgLen = 0, 0
			if p.msgRsv1 {
				p.msgRsv1 = false
				if err := h.(DeflateHandler).OnCompressed(op, payload); err != nil {
					return n, err
				}
				continue
			}
			if op == OpText && !(p.utf8.Write(payload) && p.utf8.Complete()) {
				return n, ErrInvalidUTF8
			}
			if err := h.OnMessage(op, payload); err != nil {
				return n, err
			}
			continue
		}
		p.mask, p.maskOff, p.remaining, p.fin, p.inFrame = mask, 0, length, fin, true
	}
}

// payloadLength decodes the payload length of the frame header at the
// start of b (at least 2 bytes) as soon as its length bytes are in, without
// waiting for the mask as ParseHeader does, so that a hostile length is
// refused at once. known is false while the extended length is incomplete.
// A length not in its shortest form, which includes a 64-bit length with the
// top bit set, is ErrBadLength (RFC 6455 section 5.2).
func payloadLength(b []byte) (length int64, known bool, err error) {
	switch ind := b[1] & 0x7f; ind {
	case 126:
		if len(b) < 4 {
			return 0, false, nil
		}
		length = int64(binary.BigEndian.Uint16(b[2:]))
		if length < 126 {
			return 0, true, ErrBadLength
		}
	case 127:
		if len(b) < 10 {
			return 0, false, nil
		}
		length = int64(binary.BigEndian.Uint64(b[2:]))
		if length <= 0xffff {
			return 0, true, ErrBadLength
		}
	default:
		length = int64(ind)
	}
	return length, true, nil
}

// consumePayload unmasks chunk in place, checks it and appends it to the
// message being assembled.
func (p *Parser) consumePayload(chunk []byte) error {
	ws.Cipher(chunk, p.mask, int(p.maskOff))
	p.maskOff = uint8((int(p.maskOff) + len(chunk)) & 3)
	p.remaining -= int64(len(chunk))
	if p.msgOp == OpText && !p.msgRsv1 && !p.utf8.Write(chunk) {
		return ErrInvalidUTF8
	}
	p.appendPayload(chunk)
	return nil
}

func (p *Parser) deliver(h Handler) error {
	op := p.msgOp
	if op == OpText && !p.msgRsv1 && !p.utf8.Complete() {
		return ErrInvalidUTF8
	}
	var payload []byte
	if p.buf != nil {
		payload = *p.buf
	}
	p.msgOp, p.msgLen = 0, 0
	var err error
	if p.msgRsv1 {
		p.msgRsv1 = false
		err = h.(DeflateHandler).OnCompressed(op, payload)
	} else {
		err = h.OnMessage(op, payload)
	}
	p.release()
	return err
}

// checkRsv validates the RSV bits of a frame: only RSV1, only with
// permessage-deflate negotiated, and only on the first frame of a data
// message (RFC 7692 section 6.1: control frames and continuation frames
// never carry it).
func (p *Parser) checkRsv(rsv byte, op OpCode) error {
	switch {
	case rsv != 4 || p.deflate == 0:
		return ErrReservedBits
	case op.IsControl():
		return ErrCompressedControl
	case op == OpContinuation:
		return ErrCompressedContinuation
	}
	return nil
}
