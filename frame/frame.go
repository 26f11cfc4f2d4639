package frame

import (
	"encoding/binary"

	"github.com/gobwas/ws"
)

// OpCode is the RFC 6455 frame opcode.
type OpCode = ws.OpCode

// Opcodes used by wsedge.
const (
	OpContinuation = ws.OpContinuation
	OpText         = ws.OpText
	OpBinary       = ws.OpBinary
	OpClose        = ws.OpClose
	OpPing         = ws.OpPing
	OpPong         = ws.OpPong
)

// CloseCode is a WebSocket close status code (RFC 6455 section 7.4).
type CloseCode uint16

// Close codes wsedge sends or checks. 4000–4999 are for the application
// protocol (see docs/PROTOCOL.md).
const (
	CloseNormal          CloseCode = 1000
	CloseGoingAway       CloseCode = 1001
	CloseProtocolError   CloseCode = 1002
	CloseUnsupported     CloseCode = 1003
	CloseNoStatus        CloseCode = 1005 // never sent: "no code in the frame"
	CloseAbnormal        CloseCode = 1006 // never sent: "no close frame at all"
	CloseInvalidPayload  CloseCode = 1007
	ClosePolicyViolation CloseCode = 1008
	CloseTooLarge        CloseCode = 1009
	CloseMandatoryExt    CloseCode = 1010
	CloseInternalError   CloseCode = 1011
	CloseServiceRestart  CloseCode = 1012
	CloseTryAgainLater   CloseCode = 1013
)

// ValidReceived reports whether a peer may send code in a close frame.
// 1005, 1006 and 1015 are reserved for local use, 1004 and 1016–2999 are
// unassigned or reserved for future RFCs, and nothing below 1000 or above
// 4999 exists.
func (c CloseCode) ValidReceived() bool {
	switch {
	case c >= 1000 && c <= 1003:
		return true
	case c >= 1007 && c <= 1014:
		return true
	case c >= 3000 && c <= 4999:
		return true
	}
	return false
}

// Error is a protocol violation that closes the connection with Code.
// The package's sentinel errors are all *Error values; compare them with
// errors.Is.
type Error struct {
	Code   CloseCode
	Reason string
}

func (e *Error) Error() string { return "websocket: " + e.Reason }

// Errors the parser returns. Each carries the close code to answer with.
var (
	ErrReservedBits       = &Error{CloseProtocolError, "reserved bits set"}
	ErrReservedOpcode     = &Error{CloseProtocolError, "reserved opcode"}
	ErrUnmasked           = &Error{CloseProtocolError, "client frame not masked"}
	ErrControlFragmented  = &Error{CloseProtocolError, "fragmented control frame"}
	ErrControlTooLong     = &Error{CloseProtocolError, "control frame payload over 125 bytes"}
	ErrUnexpectedCont     = &Error{CloseProtocolError, "continuation frame without a message"}
	ErrExpectedCont       = &Error{CloseProtocolError, "new data frame inside a fragmented message"}
	ErrBadLength          = &Error{CloseProtocolError, "non-minimal or oversized length encoding"}
	ErrCloseLength        = &Error{CloseProtocolError, "close payload of 1 byte"}
	ErrCloseCode          = &Error{CloseProtocolError, "invalid close code"}
	ErrInvalidUTF8        = &Error{CloseInvalidPayload, "invalid UTF-8 in text message"}
	ErrInvalidCloseReason = &Error{CloseInvalidPayload, "invalid UTF-8 in close reason"}
	ErrTooLarge           = &Error{CloseTooLarge, "message too large"}

	ErrCompressedControl      = &Error{CloseProtocolError, "RSV1 set on a control frame"}
	ErrCompressedContinuation = &Error{CloseProtocolError, "RSV1 set on a continuation frame"}
)

// MaxHeaderSize is the largest frame header: 2 + 8 length bytes + 4 mask bytes.
const MaxHeaderSize = 14

// Header is a parsed frame header, of a client or a server frame.
type Header struct {
	Fin    bool
	Rsv    byte // RSV1–3 as bits 2, 1, 0
	Op     OpCode
	Masked bool
	Mask   [4]byte
	Length int64 // payload length; negative if the 64-bit length has its top bit set
	Size   int   // header bytes, payload starts at b[Size]
}

// ParseHeader parses the frame header at the start of b and reports whether
// all of it is there. Given at least 2 bytes it fills Fin, Rsv, Op and
// Masked even when the header is not complete, and Length with the 7-bit
// length indicator, so that a reader can reject a bad frame before the rest
// of its header arrives. It does not allocate.
func ParseHeader(b []byte) (h Header, whole bool) {
	if len(b) < 2 {
		return h, false
	}
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] >> 4) & 7
	h.Op = OpCode(b[0] & 0x0f)
	h.Masked = b[1]&0x80 != 0
	h.Length = int64(b[1] & 0x7f)
	h.Size = 2
	switch h.Length {
	case 126:
		h.Size = 4
	case 127:
		h.Size = 10
	}
	if h.Masked {
		h.Size += 4
	}
	if len(b) < h.Size {
		return h, false
	}
	switch h.Length {
	case 126:
		h.Length = int64(binary.BigEndian.Uint16(b[2:]))
	case 127:
		h.Length = int64(binary.BigEndian.Uint64(b[2:])) // negative if the top bit is set
	}
	if h.Masked {
		copy(h.Mask[:], b[h.Size-4:h.Size])
	}
	return h, true
}

// AppendHeader appends an unmasked server frame header to dst. It does not
// allocate when dst has 10 bytes of spare capacity.
func AppendHeader(dst []byte, fin bool, op OpCode, length int) []byte {
	b0 := byte(op)
	if fin {
		b0 |= 0x80
	}
	switch {
	case length <= 125:
		return append(dst, b0, byte(length))
	case length <= 0xffff:
		return append(dst, b0, 126, byte(length>>8), byte(length))
	default:
		dst = append(dst, b0, 127)
		return binary.BigEndian.AppendUint64(dst, uint64(length))
	}
}

// HeaderLen is the size of the header AppendHeader writes for length.
func HeaderLen(length int) int {
	switch {
	case length <= 125:
		return 2
	case length <= 0xffff:
		return 4
	default:
		return 10
	}
}

// AppendFrame appends a complete unmasked server frame. It does not allocate
// when dst has room for the header and payload.
func AppendFrame(dst []byte, op OpCode, payload []byte) []byte {
	dst = AppendHeader(dst, true, op, len(payload))
	return append(dst, payload...)
}

// AppendClose appends a close frame carrying code and reason. The reason is
// cut to fit the 125-byte control payload, at a UTF-8 boundary.
func AppendClose(dst []byte, code CloseCode, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:utf8Cut(reason, 123)]
	}
	dst = AppendHeader(dst, true, OpClose, 2+len(reason))
	dst = binary.BigEndian.AppendUint16(dst, uint16(code))
	return append(dst, reason...)
}

// utf8Cut returns the largest n <= max such that s[:n] ends on a rune boundary.
func utf8Cut(s string, max int) int {
	n := max
	for n > 0 && s[n]&0xc0 == 0x80 {
		n--
	}
	return n
}

// ParseClose validates a received close payload and splits it. An empty
// payload means no status (CloseNoStatus). reason aliases payload.
func ParseClose(payload []byte) (code CloseCode, reason []byte, err error) {
	switch len(payload) {
	case 0:
		return CloseNoStatus, nil, nil
	case 1:
		return 0, nil, ErrCloseLength
	}
	code = CloseCode(binary.BigEndian.Uint16(payload))
	if !code.ValidReceived() {
		return 0, nil, ErrCloseCode
	}
	reason = payload[2:]
	var u UTF8
	if !u.Write(reason) || !u.Complete() {
		return 0, nil, ErrInvalidCloseReason
	}
	return code, reason, nil
}

// AppendClientFrame appends a complete masked client frame (clients must
// mask, RFC 6455 section 5.3). It does not allocate when dst has room.
func AppendClientFrame(dst []byte, fin bool, op OpCode, payload []byte, mask [4]byte) []byte {
	dst = AppendHeader(dst, fin, op, len(payload))
	dst[len(dst)-HeaderLen(len(payload))+1] |= 0x80
	dst = append(dst, mask[:]...)
	start := len(dst)
	dst = append(dst, payload...)
	ws.Cipher(dst[start:], mask, 0)
	return dst
}
