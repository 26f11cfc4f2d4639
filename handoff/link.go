package handoff

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// Message types. Each message is a type byte, a 4-byte length and the
// payload; a batch carries its connections' descriptors as SCM_RIGHTS
// on its first byte.
const (
	TypeHello  byte = 1 // both ways first: magic, version, the sender's settings
	TypeRefuse byte = 2 // either way: a reason; the session ends
	TypeBatch  byte = 3 // old → new: records, with one fd each
	TypeAck    byte = 4 // new → old: per record, taken or refused
	TypeDone   byte = 5 // old → new: nothing left; new → old: every ack is sent
	TypeReady  byte = 6 // new → old: listening on the port; stop accepting and send
)

// MaxBatch is the most connections in one batch: the kernel passes at
// most 253 descriptors in one message (SCM_MAX_FD).
const MaxBatch = 250

// MaxPayload bounds one message. A batch stops growing past BatchBytes,
// so only a single very large record comes near it.
const (
	MaxPayload = 64 << 20
	BatchBytes = 4 << 20
)

// magic opens every hello, so a stray peer is refused, not misread.
var magic = [8]byte{'w', 's', 'e', 'd', 'g', 'e', 'H', 'O'}

// Hello is what each side says first.
type Hello struct {
	Version      uint16
	Echo         bool   // the sender runs in echo mode
	NextClientID uint64 // old → new: the new process numbers its clients from here
	MaxMessage   uint32 // the sender's message limit
}

// AppendHello encodes h (its Version is ignored: this build's Version is sent).
func AppendHello(dst []byte, h Hello) []byte {
	dst = append(dst, magic[:]...)
	dst = binary.BigEndian.AppendUint16(dst, Version)
	var flags uint16
	if h.Echo {
		flags |= 1
	}
	dst = binary.BigEndian.AppendUint16(dst, flags)
	dst = binary.BigEndian.AppendUint64(dst, h.NextClientID)
	return binary.BigEndian.AppendUint32(dst, h.MaxMessage)
}

// DecodeHello reads a hello. A peer of another version gets a
// *VersionError before anything else of its message is looked at.
func DecodeHello(b []byte) (Hello, error) {
	if len(b) < 10 || [8]byte(b[:8]) != magic {
		return Hello{}, fmt.Errorf("%w: not a wsedge handoff peer", ErrMalformed)
	}
	h := Hello{Version: binary.BigEndian.Uint16(b[8:10])}
	if h.Version != Version {
		return h, &VersionError{Ours: Version, Theirs: h.Version}
	}
	if len(b) != 24 {
		return Hello{}, ErrMalformed
	}
	h.Echo = binary.BigEndian.Uint16(b[10:12])&1 != 0
	h.NextClientID = binary.BigEndian.Uint64(b[12:20])
	h.MaxMessage = binary.BigEndian.Uint32(b[20:24])
	return h, nil
}

// Ack is the answer to one record.
type Ack struct {
	Seq   uint32
	Taken bool // false: refused, the old process keeps it
}

// AppendAcks encodes acks.
func AppendAcks(dst []byte, acks []Ack) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(acks)))
	for _, a := range acks {
		dst = binary.BigEndian.AppendUint32(dst, a.Seq)
		t := byte(0)
		if a.Taken {
			t = 1
		}
		dst = append(dst, t)
	}
	return dst
}

// DecodeAcks reads an ack message into dst.
func DecodeAcks(dst []Ack, b []byte) ([]Ack, error) {
	if len(b) < 2 {
		return dst, ErrMalformed
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if n > MaxBatch || len(b) != 5*n {
		return dst, ErrMalformed
	}
	for i := range n {
		r := b[5*i:]
		if r[4] > 1 {
			return dst, ErrMalformed
		}
		dst = append(dst, Ack{Seq: binary.BigEndian.Uint32(r), Taken: r[4] == 1})
	}
	return dst, nil
}

// AppendBatchRecord appends one encoded record to a batch payload being
// built (start it with StartBatch).
func AppendBatchRecord(batch []byte, c *Conn) []byte {
	at := len(batch)
	batch = append(batch, 0, 0, 0, 0)
	batch = AppendConn(batch, c)
	binary.BigEndian.PutUint32(batch[at:], uint32(len(batch)-at-4))
	n := binary.BigEndian.Uint16(batch)
	binary.BigEndian.PutUint16(batch, n+1)
	return batch
}

// StartBatch begins a batch payload in dst.
func StartBatch(dst []byte) []byte { return append(dst[:0], 0, 0) }

// BatchLen is the number of records in a batch payload.
func BatchLen(batch []byte) int { return int(binary.BigEndian.Uint16(batch)) }

// SplitBatch returns the records of a batch payload (aliasing it).
func SplitBatch(b []byte) ([][]byte, error) {
	if len(b) < 2 {
		return nil, ErrMalformed
	}
	n := int(binary.BigEndian.Uint16(b))
	if n > MaxBatch {
		return nil, ErrMalformed
	}
	b = b[2:]
	recs := make([][]byte, 0, n)
	for range n {
		if len(b) < 4 {
			return nil, ErrMalformed
		}
		l := binary.BigEndian.Uint32(b)
		if uint64(l) > uint64(len(b)-4) {
			return nil, ErrMalformed
		}
		recs = append(recs, b[4:4+l])
		b = b[4+l:]
	}
	if len(b) != 0 {
		return nil, ErrMalformed
	}
	return recs, nil
}

// Link is one end of a handoff session. It is not safe for concurrent use.
type Link struct {
	c   *net.UnixConn
	hdr [5]byte
	oob []byte
	buf []byte
}

// NewLink wraps a connected Unix stream socket.
func NewLink(c *net.UnixConn) *Link {
	return &Link{c: c, oob: make([]byte, unix.CmsgSpace(4*(MaxBatch+3)))}
}

// Conn is the underlying socket (for deadlines and Close).
func (l *Link) Conn() *net.UnixConn { return l.c }

// Send writes one message; fds (at most MaxBatch) ride on its first byte.
// The caller keeps its descriptors: the kernel has duplicated them into
// the message once Send returns.
func (l *Link) Send(typ byte, payload []byte, fds []int) error {
	if len(payload) > MaxPayload {
		return ErrTooLarge
	}
	if len(fds) > MaxBatch {
		return fmt.Errorf("handoff: %d descriptors in one message, at most %d", len(fds), MaxBatch)
	}
	l.hdr[0] = typ
	binary.BigEndian.PutUint32(l.hdr[1:], uint32(len(payload)))
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	n, oobn, err := l.c.WriteMsgUnix(l.hdr[:], oob, nil)
	if err != nil {
		return err
	}
	if n != len(l.hdr) || oobn != len(oob) {
		return io.ErrShortWrite
	}
	if len(payload) == 0 {
		return nil // a zero-byte write could fail on a peer that already read and closed
	}
	_, err = l.c.Write(payload)
	return err
}

// Recv reads one message. payload is valid until the next Recv; the fds
// are the caller's to close.
func (l *Link) Recv() (typ byte, payload []byte, fds []int, err error) {
	n, oobn, flags, _, err := l.c.ReadMsgUnix(l.hdr[:], l.oob)
	if oobn > 0 {
		fds, err = parseRights(l.oob[:oobn], err)
	}
	if err != nil {
		closeAll(fds)
		return 0, nil, nil, err
	}
	if flags&unix.MSG_CTRUNC != 0 {
		closeAll(fds)
		return 0, nil, nil, fmt.Errorf("%w: descriptors truncated", ErrMalformed)
	}
	if n < len(l.hdr) {
		if _, err = io.ReadFull(l.c, l.hdr[n:]); err != nil {
			closeAll(fds)
			return 0, nil, nil, err
		}
	}
	size := binary.BigEndian.Uint32(l.hdr[1:])
	if size > MaxPayload {
		closeAll(fds)
		return 0, nil, nil, ErrTooLarge
	}
	if cap(l.buf) < int(size) {
		l.buf = make([]byte, size)
	}
	l.buf = l.buf[:size]
	if _, err = io.ReadFull(l.c, l.buf); err != nil {
		closeAll(fds)
		return 0, nil, nil, err
	}
	if cap(l.buf) > BatchBytes*2 {
		p := l.buf
		l.buf = nil // one huge message does not pin its buffer
		return l.hdr[0], p, fds, nil
	}
	return l.hdr[0], l.buf, fds, nil
}

func parseRights(oob []byte, err error) ([]int, error) {
	msgs, perr := unix.ParseSocketControlMessage(oob)
	if perr != nil && err == nil {
		err = perr
	}
	var fds []int
	for i := range msgs {
		got, rerr := unix.ParseUnixRights(&msgs[i])
		if rerr == nil {
			fds = append(fds, got...)
		}
	}
	return fds, err
}

// Close closes the socket.
func (l *Link) Close() error { return l.c.Close() }

func closeAll(fds []int) {
	for _, fd := range fds {
		_ = unix.Close(fd)
	}
}

// CloseFDs closes descriptors received with a message that is not used.
func CloseFDs(fds []int) { closeAll(fds) }

// Listen opens the old process's handoff socket at path (a stale socket
// file is replaced), readable and writable by its owner only.
func Listen(path string) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("handoff: %s: another process listens there", path)
		}
		_ = os.Remove(path)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// Dial connects the new process to the old one's handoff socket.
func Dial(path string) (*Link, error) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	return NewLink(c), nil
}

// SocketPath accepts "unix:///run/x.sock", "unix:/run/x.sock" or a plain path.
func SocketPath(s string) string {
	for _, p := range []string{"unix://", "unix:"} {
		if len(s) > len(p) && s[:len(p)] == p {
			return s[len(p):]
		}
	}
	return s
}
