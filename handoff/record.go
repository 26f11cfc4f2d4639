package handoff

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Version is the encoding of every message after the hellos. Any change to
// a record's layout changes it; peers of different versions refuse each
// other (ErrVersion) rather than guess.
const Version uint16 = 1

// Errors.
var (
	ErrMalformed = errors.New("handoff: malformed message")
	ErrTooLarge  = errors.New("handoff: message over the size limit")
)

// VersionError says that the peer speaks another version of the encoding.
type VersionError struct{ Ours, Theirs uint16 }

func (e *VersionError) Error() string {
	return fmt.Sprintf("handoff: state encoding version %d, the peer speaks %d: both sides must run builds with the same encoding", e.Ours, e.Theirs)
}

// Conn flags.
const (
	FlagProtocol    uint16 = 1 << iota // negotiated wsedge.v1.json
	FlagPinged                         // a ping is out since the last inbound bytes
	FlagUserCounted                    // held a --max-conns-per-user slot
)

// Conn is one connection's state. The file descriptor travels beside it.
// Times are relative (milliseconds before the moment it was written), so
// the two processes' clocks and tick origins do not matter.
type Conn struct {
	Seq      uint32 // the sender's number for it, echoed in the ack
	Flags    uint16
	IdleMs   uint32 // since the last inbound bytes
	AgeMs    uint64 // since accept
	BytesIn  uint64
	BytesOut uint64
	MsgsIn   uint32
	MsgsOut  uint32
	Parser   []byte // frame.Parser.AppendState
	Inbound  []byte // input read but not parsed (at most a frame header or control frame, or commands waiting)
	// Compression is the negotiated permessage-deflate state; empty when
	// none. Its first byte is its own version, owned by whoever writes
	// it: a receiver that does not know it refuses the connection.
	Compression []byte

	// Protocol session (FlagProtocol).
	ClientID  uint64
	Identity  []byte // auth.Identity.AppendBinary
	RefreshMs int64  // a refreshed token is due in this many ms; -1 if not asked
	CmdDebt   uint32 // the command bucket's debt (engine cmdBucket)
	Subs      []Sub
}

// Sub is one subscription and its position: Offset is the last publication
// delivered (written to the socket) or known from the subscribe reply.
type Sub struct {
	Channel string
	Offset  uint64
	Epoch   string
	Lagging bool // publications were dropped (slow-consumer policy "lag"): the client must be told
}

// AppendConn appends c's encoding to dst.
func AppendConn(dst []byte, c *Conn) []byte {
	be := binary.BigEndian
	dst = be.AppendUint32(dst, c.Seq)
	dst = be.AppendUint16(dst, c.Flags)
	dst = be.AppendUint32(dst, c.IdleMs)
	dst = be.AppendUint64(dst, c.AgeMs)
	dst = be.AppendUint64(dst, c.BytesIn)
	dst = be.AppendUint64(dst, c.BytesOut)
	dst = be.AppendUint32(dst, c.MsgsIn)
	dst = be.AppendUint32(dst, c.MsgsOut)
	dst = appendBytes(dst, c.Parser)
	dst = appendBytes(dst, c.Inbound)
	dst = appendBytes(dst, c.Compression)
	dst = be.AppendUint64(dst, c.ClientID)
	dst = appendBytes(dst, c.Identity)
	dst = be.AppendUint64(dst, uint64(c.RefreshMs))
	dst = be.AppendUint32(dst, c.CmdDebt)
	dst = be.AppendUint32(dst, uint32(len(c.Subs)))
	for _, s := range c.Subs {
		dst = appendBytes(dst, []byte(s.Channel))
		dst = be.AppendUint64(dst, s.Offset)
		dst = appendBytes(dst, []byte(s.Epoch))
		lag := byte(0)
		if s.Lagging {
			lag = 1
		}
		dst = append(dst, lag)
	}
	return dst
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(b)))
	return append(dst, b...)
}

// Limits a decoder applies whatever the record says.
const (
	MaxSubs       = 1 << 16
	MaxChannelLen = 255
	MaxEpochLen   = 255
)

// DecodeConn reads one record written by AppendConn; b must hold exactly
// it. The byte slices alias b.
func DecodeConn(b []byte) (Conn, error) {
	r := reader{b: b}
	var c Conn
	c.Seq = r.u32()
	c.Flags = r.u16()
	c.IdleMs = r.u32()
	c.AgeMs = r.u64()
	c.BytesIn = r.u64()
	c.BytesOut = r.u64()
	c.MsgsIn = r.u32()
	c.MsgsOut = r.u32()
	c.Parser = r.bytes(len(b))
	c.Inbound = r.bytes(len(b))
	c.Compression = r.bytes(len(b))
	c.ClientID = r.u64()
	c.Identity = r.bytes(len(b))
	c.RefreshMs = int64(r.u64())
	c.CmdDebt = r.u32()
	n := r.u32()
	if n > MaxSubs || int(n) > len(b) {
		return Conn{}, ErrMalformed
	}
	if n > 0 {
		c.Subs = make([]Sub, n)
	}
	for i := range c.Subs {
		s := &c.Subs[i]
		s.Channel = string(r.bytes(MaxChannelLen))
		s.Offset = r.u64()
		s.Epoch = string(r.bytes(MaxEpochLen))
		lag := r.u8()
		if lag > 1 {
			r.bad = true
		}
		s.Lagging = lag == 1
	}
	if r.bad || len(r.b) != 0 || c.Flags&^(FlagProtocol|FlagPinged|FlagUserCounted) != 0 {
		return Conn{}, ErrMalformed
	}
	return c, nil
}

// reader consumes big-endian fields; a short read sets bad and yields zeros.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) take(n int) []byte {
	if r.bad || n > len(r.b) || n < 0 {
		r.bad = true
		return nil
	}
	b := r.b[:n:n]
	r.b = r.b[n:]
	return b
}

func (r *reader) u8() byte {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if b := r.take(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if b := r.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if b := r.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (r *reader) bytes(max int) []byte {
	n := r.u32()
	if r.bad || uint64(n) > uint64(max) {
		r.bad = true
		return nil
	}
	b := r.take(int(n))
	if len(b) == 0 {
		return nil
	}
	return b
}
