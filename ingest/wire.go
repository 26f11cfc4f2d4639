package ingest

import (
	"encoding/binary"
	"errors"
)

// Version is the protocol version byte every frame carries.
const Version = 1

// HeaderLen is the fixed part of every frame: length (4), version (1),
// op (1), sequence (8). The length counts the bytes after itself.
const HeaderLen = 14

// minLen is the smallest value of the length field: version, op, sequence.
const minLen = HeaderLen - 4

// Limits of the fields, checked by the decoder.
const (
	MaxChannel   = 255 // bytes of a channel name (as in the WebSocket protocol)
	MaxKey       = 64  // bytes of an idempotency key
	MaxUser      = 255 // bytes of a user id
	MaxReason    = 123 // bytes of a disconnect reason (a close frame's limit)
	MaxChannels  = 1024
	DefaultFrame = 1 << 20 // the server's default largest frame (--ingest-max-frame)
)

// Op is a request's operation (client → server) or a response's kind
// (server → client, high bit set).
type Op uint8

// Requests.
const (
	OpPublish     Op = 0x01 // one channel
	OpPublishMany Op = 0x02 // the same payload to several channels
	OpBroadcast   Op = 0x03 // every channel of a namespace with subscribers on the node
	OpDisconnect  Op = 0x04 // every connection of a user
	OpUnsubscribe Op = 0x05 // a user's connections from one channel
	OpPresence    Op = 0x06 // who is in a channel
	OpEvents      Op = 0x07 // start the connection event stream on this connection
	OpPing        Op = 0x08 // answered with an Ack; for health checks
)

// Responses.
const (
	OpAck      Op = 0x81
	OpError    Op = 0x82
	OpMembers  Op = 0x83 // presence result
	OpEventSet Op = 0x84 // a batch of connection events (sequence 0)
)

// Code is an error response's code.
type Code uint16

// Error codes. After Malformed, BadVersion and FrameTooLarge the server
// closes the connection (the stream cannot be parsed any further); the
// others answer one request and the connection goes on.
const (
	CodeMalformed        Code = 1  // the frame does not follow the format; connection closed
	CodeBadVersion       Code = 2  // version byte is not 1; connection closed
	CodeFrameTooLarge    Code = 3  // length over the server's frame limit; connection closed
	CodeUnknownOp        Code = 4  // op not known to this server
	CodeBadChannel       Code = 5  // channel name not ns:name or over 255 bytes
	CodeUnknownNamespace Code = 6  // namespace not configured
	CodePayloadTooLarge  Code = 7  // payload over the server's --ingest-max-payload
	CodeOverloaded       Code = 8  // shard inboxes stayed full; retry later
	CodeUnavailable      Code = 9  // the broker failed; retry later
	CodeInProgress       Code = 10 // a request with the same idempotency key is still in flight; retry later
	CodeShuttingDown     Code = 11 // the server is draining; retry on another node or later
	CodeNotFound         Code = 12 // presence off for the namespace, or nothing to act on
	CodeBadRequest       Code = 13 // a field out of range (code), or a result over the frame limit
	CodeBadPayload       Code = 14 // the payload is not one JSON value
)

var codeText = [...]string{
	CodeMalformed:        "malformed frame",
	CodeBadVersion:       "unsupported version",
	CodeFrameTooLarge:    "frame too large",
	CodeUnknownOp:        "unknown op",
	CodeBadChannel:       "bad channel name",
	CodeUnknownNamespace: "unknown namespace",
	CodePayloadTooLarge:  "payload too large",
	CodeOverloaded:       "overloaded",
	CodeUnavailable:      "broker unavailable",
	CodeInProgress:       "same idempotency key in flight",
	CodeShuttingDown:     "shutting down",
	CodeNotFound:         "not found",
	CodeBadRequest:       "bad request",
	CodeBadPayload:       "payload is not JSON",
}

func (c Code) String() string {
	if int(c) < len(codeText) && codeText[c] != "" {
		return codeText[c]
	}
	return "code " + itoa(uint64(c))
}

// Fatal reports whether the server closes the connection after this error.
func (c Code) Fatal() bool {
	return c == CodeMalformed || c == CodeBadVersion || c == CodeFrameTooLarge
}

// Retryable reports whether the same request may succeed later.
func (c Code) Retryable() bool {
	return c == CodeOverloaded || c == CodeUnavailable || c == CodeInProgress || c == CodeShuttingDown
}

// Decoding errors. A *FrameError carries the code the server answers with.
var (
	ErrMalformed  = errors.New("ingest: malformed frame")
	ErrVersion    = errors.New("ingest: unsupported version")
	ErrFrameLarge = errors.New("ingest: frame too large")
	ErrUnknownOp  = errors.New("ingest: unknown op")
)

// CodeOf maps a decoding error to its error code.
func CodeOf(err error) Code {
	switch err {
	case ErrVersion:
		return CodeBadVersion
	case ErrFrameLarge:
		return CodeFrameTooLarge
	case ErrUnknownOp:
		return CodeUnknownOp
	}
	return CodeMalformed
}

// Request is one decoded request. Its slices alias the buffer given to
// ParseRequest and are valid only until that buffer is modified or
// discarded; the server copies what it keeps.
type Request struct {
	Op      Op
	Seq     uint64
	Channel []byte // publish, unsubscribe, presence
	Key     []byte // publish, publish-many: idempotency key (may be empty)
	Payload []byte // publish, publish-many, broadcast
	// Channels is publish-many's list as on the wire (each a length byte
	// and the name); iterate with NextChannel. NumChannels counts them.
	Channels    []byte
	NumChannels int
	Namespace   []byte // broadcast
	User        []byte // disconnect, unsubscribe
	Code        uint16 // disconnect: the close code (4000-4999), 0 for the default
	Reason      []byte // disconnect
}

// NextChannel returns the first channel of list and the rest (publish-many).
// list must come from a Request that ParseRequest accepted.
func NextChannel(list []byte) (channel, rest []byte) {
	n := int(list[0])
	return list[1 : 1+n], list[1+n:]
}

// FrameLen returns the size of the frame at the start of buf (header
// included) once its length field is there, else 0. It does not check the
// frame.
func FrameLen(buf []byte) int {
	if len(buf) < 4 {
		return 0
	}
	return 4 + int(binary.BigEndian.Uint32(buf))
}

// ParseRequest decodes the frame at the start of buf into r. It returns the
// frame's size n, or n = 0 and a nil error when buf holds only part of it.
// maxFrame bounds the whole frame: a longer length is ErrFrameLarge before
// its body arrives, so a peer cannot make the caller buffer more. With
// ErrUnknownOp n is the frame's size and r.Seq is set: the caller answers
// it and goes on. ErrMalformed and ErrVersion mean the stream cannot be
// parsed further. It does not allocate.
func ParseRequest(buf []byte, maxFrame int, r *Request) (n int, err error) {
	if n, err = frameLen(buf, maxFrame); n == 0 || err != nil {
		return 0, err
	}
	*r = Request{Op: Op(buf[5]), Seq: binary.BigEndian.Uint64(buf[6:])}
	b := buf[HeaderLen:n]
	var ok bool
	switch r.Op {
	case OpPublish:
		if r.Channel, b, ok = short(b, MaxChannel); !ok {
			return 0, ErrMalformed
		}
		if r.Key, b, ok = short(b, MaxKey); !ok {
			return 0, ErrMalformed
		}
		r.Payload = b
	case OpPublishMany:
		if r.Key, b, ok = short(b, MaxKey); !ok || len(b) < 2 {
			return 0, ErrMalformed
		}
		cnt := int(binary.BigEndian.Uint16(b))
		b = b[2:]
		if cnt == 0 || cnt > MaxChannels {
			return 0, ErrMalformed
		}
		start := b
		for range cnt {
			if _, b, ok = short(b, MaxChannel); !ok {
				return 0, ErrMalformed
			}
		}
		r.Channels = start[:len(start)-len(b)]
		r.NumChannels = cnt
		r.Payload = b
	case OpBroadcast:
		if r.Namespace, b, ok = short(b, MaxChannel); !ok {
			return 0, ErrMalformed
		}
		r.Payload = b
	case OpDisconnect:
		if r.User, b, ok = short(b, MaxUser); !ok || len(b) < 2 || len(b)-2 > MaxReason {
			return 0, ErrMalformed
		}
		r.Code = binary.BigEndian.Uint16(b)
		r.Reason = b[2:]
	case OpUnsubscribe:
		if r.User, b, ok = short(b, MaxUser); !ok {
			return 0, ErrMalformed
		}
		if r.Channel, b, ok = short(b, MaxChannel); !ok || len(b) != 0 {
			return 0, ErrMalformed
		}
	case OpPresence:
		if r.Channel, b, ok = short(b, MaxChannel); !ok || len(b) != 0 {
			return 0, ErrMalformed
		}
	case OpEvents, OpPing:
		if len(b) != 0 {
			return 0, ErrMalformed
		}
	default:
		return n, ErrUnknownOp
	}
	return n, nil
}

// short reads a field of a length byte and up to max bytes.
func short(b []byte, max int) (field, rest []byte, ok bool) {
	if len(b) < 1 {
		return nil, b, false
	}
	n := int(b[0])
	if n > max || len(b) < 1+n {
		return nil, b, false
	}
	return b[1 : 1+n], b[1+n:], true
}

// appendHeader starts a frame; finish fills its length in.
func appendHeader(dst []byte, op Op, seq uint64) ([]byte, int) {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, Version, byte(op))
	return binary.BigEndian.AppendUint64(dst, seq), start
}

func finish(dst []byte, start int) []byte {
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst
}

func appendShort[S ~string | ~[]byte](dst []byte, s S) []byte {
	return append(append(dst, byte(len(s))), s...)
}

// Field lengths are the caller's to respect (see the Max constants): the
// encoders below truncate nothing, and a server answers an over-long field
// with CodeMalformed.

// AppendPublish appends a publish request.
func AppendPublish(dst []byte, seq uint64, channel string, key, payload []byte) []byte {
	dst, s := appendHeader(dst, OpPublish, seq)
	dst = appendShort(appendShort(dst, channel), key)
	return finish(append(dst, payload...), s)
}

// AppendPublishMany appends a publish-many request.
func AppendPublishMany(dst []byte, seq uint64, channels []string, key, payload []byte) []byte {
	dst, s := appendHeader(dst, OpPublishMany, seq)
	dst = appendShort(dst, key)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(channels)))
	for _, ch := range channels {
		dst = appendShort(dst, ch)
	}
	return finish(append(dst, payload...), s)
}

// AppendBroadcast appends a broadcast request.
func AppendBroadcast(dst []byte, seq uint64, namespace string, payload []byte) []byte {
	dst, s := appendHeader(dst, OpBroadcast, seq)
	return finish(append(appendShort(dst, namespace), payload...), s)
}

// AppendDisconnect appends a disconnect request.
func AppendDisconnect(dst []byte, seq uint64, user string, code uint16, reason string) []byte {
	dst, s := appendHeader(dst, OpDisconnect, seq)
	dst = binary.BigEndian.AppendUint16(appendShort(dst, user), code)
	return finish(append(dst, reason...), s)
}

// AppendUnsubscribe appends an unsubscribe request.
func AppendUnsubscribe(dst []byte, seq uint64, user, channel string) []byte {
	dst, s := appendHeader(dst, OpUnsubscribe, seq)
	return finish(appendShort(appendShort(dst, user), channel), s)
}

// AppendPresence appends a presence request.
func AppendPresence(dst []byte, seq uint64, channel string) []byte {
	dst, s := appendHeader(dst, OpPresence, seq)
	return finish(appendShort(dst, channel), s)
}

// AppendSimple appends a request without a body (OpEvents, OpPing).
func AppendSimple(dst []byte, op Op, seq uint64) []byte {
	dst, s := appendHeader(dst, op, seq)
	return finish(dst, s)
}

// Ack flags.
const (
	AckDuplicate = 1 << 0 // answered from the idempotency window: published before, not again
)

// AppendAck appends an acknowledgement: the publication's offset and epoch
// (0 and "" in a namespace without history; for other requests, a count).
func AppendAck(dst []byte, seq, offset uint64, epoch string, flags byte) []byte {
	dst, s := appendHeader(dst, OpAck, seq)
	dst = binary.BigEndian.AppendUint64(dst, offset)
	dst = appendShort(dst, epoch[:min(len(epoch), 255)])
	return finish(append(dst, flags), s)
}

// AppendError appends an error response.
func AppendError(dst []byte, seq uint64, code Code, msg string) []byte {
	dst, s := appendHeader(dst, OpError, seq)
	dst = binary.BigEndian.AppendUint16(dst, uint16(code))
	return finish(append(dst, msg...), s)
}

// Member is one presence entry.
type Member struct {
	Client, User string
	Info         []byte
}

// AppendMembersOpen starts a presence result; add entries with
// AppendMember and end it with FinishMembers.
func AppendMembersOpen(dst []byte, seq uint64) ([]byte, int) {
	dst, s := appendHeader(dst, OpMembers, seq)
	return append(dst, 0, 0, 0, 0), s
}

// AppendMember appends one presence entry (fields longer than their length
// byte allows are cut: ids are short by construction, Info to 65,535).
func AppendMember(dst []byte, client, user string, info []byte) []byte {
	dst = appendShort(dst, client[:min(len(client), 255)])
	dst = appendShort(dst, user[:min(len(user), 255)])
	info = info[:min(len(info), 65535)]
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(info)))
	return append(dst, info...)
}

// FinishMembers fills in the count and the length of a presence result.
func FinishMembers(dst []byte, start, count int) []byte {
	binary.BigEndian.PutUint32(dst[start+HeaderLen:], uint32(count))
	return finish(dst, start)
}

func itoa(v uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return string(b[i:])
}

// frameLen checks the length prefix and version of the frame at the start
// of buf (either direction) and returns its whole size, or 0 while it is
// not all in buf.
func frameLen(buf []byte, maxFrame int) (int, error) {
	if len(buf) < 4 {
		return 0, nil
	}
	l := binary.BigEndian.Uint32(buf)
	if l < minLen {
		return 0, ErrMalformed
	}
	if uint64(l)+4 > uint64(maxFrame) {
		return 0, ErrFrameLarge
	}
	n := 4 + int(l)
	if len(buf) >= 5 && buf[4] != Version {
		return 0, ErrVersion
	}
	if len(buf) < n {
		return 0, nil
	}
	return n, nil
}
