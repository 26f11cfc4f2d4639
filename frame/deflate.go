package frame

import (
	"errors"
	"io"

	"github.com/klauspost/compress/flate"
)

// permessage-deflate (RFC 7692) data transforms. Both sides run without
// context takeover: every message is compressed and inflated on its own, so
// a Deflater or an Inflater holds no state between messages and one per
// event loop serves all of its connections.

// ErrBadDeflate is a compressed message that does not inflate.
var ErrBadDeflate = &Error{CloseInvalidPayload, "invalid compressed data"}

// syncTail is the empty stored block that ends every flushed deflate
// stream; a sender strips it from the message (RFC 7692 section 7.2.1).
var syncTail = [4]byte{0x00, 0x00, 0xff, 0xff}

// inflateTail is appended to a received message before inflating: the
// stripped sync block, then an empty stored block with BFINAL set, so that
// the inflater ends the stream with io.EOF instead of waiting for more.
var inflateTail = [9]byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

// MinDeflateWindowBits and MaxDeflateWindowBits bound the window sizes of
// RFC 7692 section 7.1.2.
const (
	MinDeflateWindowBits = 8
	MaxDeflateWindowBits = 15
)

// Deflater compresses whole messages for permessage-deflate without context
// takeover. It is owned by one goroutine (an event loop); the klauspost
// compressor inside it costs several hundred KiB, which is why there is one
// per loop and never one per connection.
type Deflater struct {
	w   *flate.Writer
	out appender
}

// appender is the io.Writer the compressor writes into: it appends to a
// caller's slice.
type appender struct{ b []byte }

func (a *appender) Write(p []byte) (int, error) {
	a.b = append(a.b, p...)
	return len(p), nil
}

// NewDeflater returns a compressor at level (flate.BestSpeed to
// flate.BestCompression) whose back-references reach at most 2^windowBits
// bytes (RFC 7692 server_max_window_bits; 15 is deflate's full window).
func NewDeflater(level int, windowBits int) (*Deflater, error) {
	d := &Deflater{}
	var err error
	if windowBits < MaxDeflateWindowBits {
		if windowBits < MinDeflateWindowBits {
			return nil, errors.New("frame: deflate window bits below 8")
		}
		d.w, err = flate.NewWriterWindow(&d.out, 1<<windowBits)
	} else {
		d.w, err = flate.NewWriter(&d.out, level)
	}
	if err != nil {
		return nil, err
	}
	return d, nil
}

// Append appends the compressed form of payload to dst as it goes on the
// wire in a message with RSV1 set: the deflate stream of the message alone
// (no context takeover), flushed, without its final 00 00 ff ff. It does
// not allocate when dst has room; the compressed form may be a few bytes
// longer than payload for incompressible data (the caller then sends the
// message plain).
func (d *Deflater) Append(dst, payload []byte) []byte {
	d.out.b = dst
	d.w.Reset(&d.out)
	// Writes into appender cannot fail.
	_, _ = d.w.Write(payload)
	_ = d.w.Flush()
	b := d.out.b
	d.out.b = nil
	if n := len(b) - len(syncTail); n >= len(dst) && [4]byte(b[n:]) == syncTail {
		b = b[:n]
	}
	return b
}

// Inflater decompresses messages received with RSV1 set, with a bound on
// the inflated size. It is owned by one goroutine (an event loop) and
// serves all of its connections: peers are told client_no_context_takeover,
// so no message depends on the one before.
type Inflater struct {
	r   io.ReadCloser // klauspost's decompressor; also a flate.Resetter
	src tailReader
	out []byte
}

// maxKeptInflate is the largest output buffer an Inflater keeps between
// messages; one huge message does not pin its buffer.
const maxKeptInflate = 1 << 20

// NewInflater returns an Inflater. The decompressor's window (32 KiB) is
// allocated here, once.
func NewInflater() *Inflater {
	f := &Inflater{}
	f.r = flate.NewReader(&f.src)
	return f
}

// Inflate inflates one message's payload (as received, without the tail).
// The result aliases the Inflater's buffer and is valid until the next
// call. A message that would inflate to more than limit bytes is ErrTooLarge
// as soon as the bound is crossed: the output buffer never grows past
// limit+1 bytes, whatever the compression ratio. Data that is not a valid
// deflate stream is ErrBadDeflate. It does not allocate once its buffer
// has grown to the size of the messages it sees.
func (f *Inflater) Inflate(payload []byte, limit int) ([]byte, error) {
	if cap(f.out) > maxKeptInflate {
		f.out = nil
	}
	if len(payload) == 0 {
		// Not a deflate stream (section 7.2.3.6 sends an empty message
		// as one 00 byte), but there is only one sensible reading.
		return f.out[:0], nil
	}
	f.src = tailReader{p: payload}
	if err := f.r.(flate.Resetter).Reset(&f.src, nil); err != nil {
		return nil, ErrBadDeflate
	}
	out := f.out[:0]
	for {
		if len(out) == cap(out) {
			if len(out) > limit {
				f.out = out[:0]
				return nil, ErrTooLarge
			}
			// Grow geometrically, but never past max+1: one byte over
			// the bound is enough to know the message is too large.
			want := min(max(2*cap(out), 512), limit+1)
			grown := make([]byte, len(out), want)
			copy(grown, out)
			out = grown
		}
		n, err := f.r.Read(out[len(out):cap(out)])
		out = out[:len(out)+n]
		if len(out) > limit {
			f.out = out[:0]
			return nil, ErrTooLarge
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			f.out = out[:0]
			return nil, ErrBadDeflate
		}
	}
	f.out = out
	return out, nil
}

// tailReader reads a message's payload and then inflateTail. It is the
// flate.Reader (io.ByteReader included) the decompressor reads from
// directly, so that the decompressor does not wrap it in a bufio.Reader that
// would allocate on every Reset.
type tailReader struct {
	p []byte
	t int // bytes of inflateTail read
}

func (r *tailReader) Read(b []byte) (int, error) {
	if len(r.p) > 0 {
		n := copy(b, r.p)
		r.p = r.p[n:]
		return n, nil
	}
	if r.t < len(inflateTail) {
		n := copy(b, inflateTail[r.t:])
		r.t += n
		return n, nil
	}
	return 0, io.EOF
}

func (r *tailReader) ReadByte() (byte, error) {
	if len(r.p) > 0 {
		c := r.p[0]
		r.p = r.p[1:]
		return c, nil
	}
	if r.t < len(inflateTail) {
		c := inflateTail[r.t]
		r.t++
		return c, nil
	}
	return 0, io.EOF
}

// AppendCompressedHeader appends an unmasked server frame header with RSV1
// set (the first frame of a compressed message, RFC 7692 section 6). It
// does not allocate when dst has 10 bytes of spare capacity.
func AppendCompressedHeader(dst []byte, fin bool, op OpCode, length int) []byte {
	n := len(dst)
	dst = AppendHeader(dst, fin, op, length)
	dst[n] |= 0x40
	return dst
}
