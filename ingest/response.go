package ingest

import "encoding/binary"

// Response is one decoded server frame. Its slices alias the buffer given
// to ParseResponse.
type Response struct {
	Op      Op
	Seq     uint64
	Offset  uint64 // ack
	Epoch   []byte // ack
	Flags   byte   // ack
	Code    Code   // error
	Message []byte // error
	// Members is a presence result's entries as on the wire; iterate with
	// NextMember. Count is their number.
	Members []byte
	Count   int
	// Events is an event batch's entries as on the wire (iterate with
	// NextEvent, Count of them); First is the number of its first event
	// and Lost the events dropped just before it (a gap).
	Events []byte
	First  uint64
	Lost   uint32
}

// ParseResponse decodes the server frame at the start of buf, like
// ParseRequest. It does not allocate.
func ParseResponse(buf []byte, maxFrame int, r *Response) (n int, err error) {
	if n, err = frameLen(buf, maxFrame); n == 0 || err != nil {
		return 0, err
	}
	*r = Response{Op: Op(buf[5]), Seq: binary.BigEndian.Uint64(buf[6:])}
	b := buf[HeaderLen:n]
	var ok bool
	switch r.Op {
	case OpAck:
		if len(b) < 8 {
			return 0, ErrMalformed
		}
		r.Offset = binary.BigEndian.Uint64(b)
		if r.Epoch, b, ok = short(b[8:], 255); !ok || len(b) != 1 {
			return 0, ErrMalformed
		}
		r.Flags = b[0]
	case OpError:
		if len(b) < 2 {
			return 0, ErrMalformed
		}
		r.Code = Code(binary.BigEndian.Uint16(b))
		r.Message = b[2:]
	case OpMembers:
		if len(b) < 4 {
			return 0, ErrMalformed
		}
		r.Count = int(binary.BigEndian.Uint32(b))
		r.Members = b[4:]
		rest := r.Members
		for range r.Count {
			if _, _, _, rest, ok = nextMember(rest); !ok {
				return 0, ErrMalformed
			}
		}
		if len(rest) != 0 {
			return 0, ErrMalformed
		}
	case OpEventSet:
		if len(b) < 14 {
			return 0, ErrMalformed
		}
		r.First = binary.BigEndian.Uint64(b)
		r.Lost = binary.BigEndian.Uint32(b[8:])
		r.Count = int(binary.BigEndian.Uint16(b[12:]))
		r.Events = b[14:]
		rest := r.Events
		var e Event
		for range r.Count {
			if rest, ok = nextEvent(rest, &e); !ok {
				return 0, ErrMalformed
			}
		}
		if len(rest) != 0 {
			return 0, ErrMalformed
		}
	default:
		return 0, ErrUnknownOp
	}
	return n, nil
}

// NextMember returns the first entry of a presence result's Members.
func NextMember(list []byte) (client, user, info, rest []byte) {
	client, user, info, rest, _ = nextMember(list)
	return
}

func nextMember(b []byte) (client, user, info, rest []byte, ok bool) {
	if client, b, ok = short(b, 255); !ok {
		return
	}
	if user, b, ok = short(b, 255); !ok {
		return
	}
	if len(b) < 2 {
		return nil, nil, nil, b, false
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+n {
		return nil, nil, nil, b, false
	}
	return client, user, b[2 : 2+n], b[2+n:], true
}

// EventKind is what happened to a WebSocket connection.
type EventKind uint8

// Event kinds.
const (
	EventConnect     EventKind = 1
	EventDisconnect  EventKind = 2
	EventSubscribe   EventKind = 3
	EventUnsubscribe EventKind = 4
)

func (k EventKind) String() string {
	switch k {
	case EventConnect:
		return "connect"
	case EventDisconnect:
		return "disconnect"
	case EventSubscribe:
		return "subscribe"
	case EventUnsubscribe:
		return "unsubscribe"
	}
	return "event " + itoa(uint64(k))
}

// Event is one connection event. Decoded, its slices alias the frame.
type Event struct {
	Kind    EventKind
	Client  []byte
	User    []byte
	Channel []byte // subscribe, unsubscribe
	Code    uint16 // disconnect: the close code
	Reason  []byte // disconnect
}

// NextEvent decodes the first event of an event batch's Events into e.
func NextEvent(list []byte, e *Event) (rest []byte) {
	rest, _ = nextEvent(list, e)
	return rest
}

func nextEvent(b []byte, e *Event) (rest []byte, ok bool) {
	if len(b) < 1 {
		return b, false
	}
	e.Kind = EventKind(b[0])
	b = b[1:]
	if e.Client, b, ok = short(b, 255); !ok {
		return b, false
	}
	if e.User, b, ok = short(b, 255); !ok {
		return b, false
	}
	if e.Channel, b, ok = short(b, 255); !ok {
		return b, false
	}
	if len(b) < 2 {
		return b, false
	}
	e.Code = binary.BigEndian.Uint16(b)
	if e.Reason, b, ok = short(b[2:], 255); !ok {
		return b, false
	}
	return b, true
}

// AppendEventsOpen starts an event batch; add events with AppendEvent and
// end it with FinishEvents.
func AppendEventsOpen(dst []byte, first uint64, lost uint32) ([]byte, int) {
	dst, s := appendHeader(dst, OpEventSet, 0)
	dst = binary.BigEndian.AppendUint64(dst, first)
	dst = binary.BigEndian.AppendUint32(dst, lost)
	return append(dst, 0, 0), s
}

// AppendEvent appends one event (fields are cut to 255 bytes).
func AppendEvent(dst []byte, kind EventKind, client, user, channel string, code uint16, reason string) []byte {
	dst = append(dst, byte(kind))
	dst = appendShort(dst, client[:min(len(client), 255)])
	dst = appendShort(dst, user[:min(len(user), 255)])
	dst = appendShort(dst, channel[:min(len(channel), 255)])
	dst = binary.BigEndian.AppendUint16(dst, code)
	return appendShort(dst, reason[:min(len(reason), 255)])
}

// FinishEvents fills in the count and the length of an event batch.
func FinishEvents(dst []byte, start, count int) []byte {
	binary.BigEndian.PutUint16(dst[start+HeaderLen+12:], uint16(count))
	return finish(dst, start)
}
