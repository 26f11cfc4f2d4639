package frame

import (
	"encoding/binary"
	"errors"
)

// Parser state across a process handoff (engine's connection handoff,
// docs/DESIGN.md "Handoff"): a connection moved to another process keeps
// its place in the inbound stream, including a frame whose payload is
// partly consumed and a fragmented message partly assembled.

// parserStateVersion is the layout of AppendState. A permessage-deflate
// decompressor's state, once it exists, needs a new version (or travels
// beside it in the connection's own compression slot).
const parserStateVersion = 1

// ErrParserState is returned by RestoreState for bytes it cannot read.
var ErrParserState = errors.New("frame: bad parser state")

// AppendState appends p's state to dst: the partly consumed frame (mask,
// offset in the mask, bytes still to come, fin), the message being
// assembled (opcode, length so far, pending UTF-8 bytes) and the assembly
// buffer's bytes. It does not change p.
func (p *Parser) AppendState(dst []byte) []byte {
	var flags byte
	if p.inFrame {
		flags |= 1
	}
	if p.fin {
		flags |= 2
	}
	dst = append(dst, parserStateVersion, flags, byte(p.msgOp), p.maskOff, p.utf8.n)
	dst = append(dst, p.mask[:]...)
	dst = append(dst, p.utf8.pend[:]...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(p.remaining))
	dst = binary.BigEndian.AppendUint64(dst, uint64(p.msgLen))
	var buf []byte
	if p.buf != nil {
		buf = *p.buf
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(buf)))
	return append(dst, buf...)
}

// parserStateFixed is the length of AppendState's output before the buffer.
const parserStateFixed = 5 + 4 + 3 + 8 + 8 + 4

// RestoreState reads a state written by AppendState into p (which must be
// fresh or Reset) and reports how many bytes it read. max is the message
// limit of the receiving side: a state whose message is already over it,
// or that is inconsistent, is refused with ErrParserState and p is left
// unchanged.
func (p *Parser) RestoreState(b []byte, max int) (int, error) {
	if len(b) < parserStateFixed || b[0] != parserStateVersion {
		return 0, ErrParserState
	}
	flags, op, maskOff, un := b[1], OpCode(b[2]), b[3], b[4]
	var q Parser
	q.inFrame, q.fin = flags&1 != 0, flags&2 != 0
	q.msgOp, q.maskOff, q.utf8.n = op, maskOff, un
	copy(q.mask[:], b[5:9])
	copy(q.utf8.pend[:], b[9:12])
	q.remaining = int64(binary.BigEndian.Uint64(b[12:20]))
	msgLen := binary.BigEndian.Uint64(b[20:28])
	n := int(binary.BigEndian.Uint32(b[28:32]))
	switch {
	case flags&^3 != 0, maskOff > 3, un > 3, q.remaining < 0,
		op != 0 && op != OpText && op != OpBinary,
		msgLen > uint64(max), q.remaining > int64(max)-int64(msgLen),
		n > len(b)-parserStateFixed, uint64(n)+uint64(q.remaining) != msgLen,
		!q.inFrame && q.remaining != 0, q.inFrame && op == 0,
		op == 0 && (msgLen != 0 || n != 0 || un != 0):
		return 0, ErrParserState
	}
	q.msgLen = int(msgLen)
	if n > 0 {
		q.appendPayload(b[parserStateFixed : parserStateFixed+n])
	}
	*p = q
	return parserStateFixed + n, nil
}
