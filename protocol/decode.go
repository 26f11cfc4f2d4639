package protocol

import (
	"fmt"

	"github.com/valyala/fastjson"
)

// NoLimit is Command.Limit when a history command carries no "limit".
const NoLimit = -1

// Position is a place in a channel's history stream: the offset of the last
// publication seen and the epoch of the stream it belongs to. Inside a
// Command it is owned, and Epoch stays valid, like the Command's slices.
type Position struct {
	Offset uint64
	Epoch  []byte
}

// Command is one decoded client command. Only the fields of its Op are set;
// the others are zero (Limit is NoLimit).
//
// A Command is filled by Decoder.Decode and owned by the goroutine that owns
// the Decoder. Its byte slices alias the message or the Decoder's buffers
// and stay valid until the next Decode with the same Decoder or until the
// message buffer is reused, whichever comes first: copy what must outlive
// that (a publish's Data is copied by the broker).
type Command struct {
	ID       uint64
	Op       Op
	Channel  []byte   // subscribe, unsubscribe, publish, history, presence, presence_stats; validated by ParseChannel
	Data     []byte   // publish: the JSON value, token for token as sent (see Decode)
	Since    Position // subscribe, history: valid when HasSince
	HasSince bool
	Limit    int    // history: >= 0, or NoLimit when absent
	Token    []byte // refresh
}

// Decoder decodes client commands. It owns a reusable fastjson.Parser and a
// buffer, so it is owned by one goroutine (one per event loop) and is not
// safe for concurrent use. The zero value is ready to use.
type Decoder struct {
	p    fastjson.Parser
	data []byte
}

// Decode parses one message (a whole text frame) into cmd, overwriting all
// of cmd. On error it returns an *Error carrying the reply code, a
// client-facing message and, when the id was readable, the command id; the
// connection should be kept and the error answered with AppendError.
//
// Data is the publish value with the insignificant whitespace between
// tokens removed and nothing else changed: strings keep their escapes and
// numbers their digits, nothing is unescaped, converted or re-escaped, so
// the bytes are embedded verbatim into publication pushes.
//
// Unknown fields, and fields that do not belong to the op, are ignored; if
// a field appears twice the first occurrence counts.
//
// Decode does not allocate in steady state (after the Decoder has seen
// messages of the same size) for commands without backslash escapes in
// their keys, channel or token; errors allocate.
func (d *Decoder) Decode(msg []byte, cmd *Command) error {
	*cmd = Command{Limit: NoLimit}
	v, err := d.p.ParseBytes(msg)
	if err != nil {
		return &Error{Code: CodeBadRequest, Message: "bad JSON", Err: fmt.Errorf("%w: %v", ErrBadJSON, err)}
	}
	o, err := v.Object()
	if err != nil {
		return &Error{Code: CodeBadRequest, Message: "bad JSON", Err: ErrNotObject}
	}
	var f fields
	o.Visit(f.set)

	if f.id == nil {
		return missing(0, "missing id")
	}
	if cmd.ID, err = uintField(f.id); err != nil || cmd.ID == 0 {
		return bad(0, "bad id")
	}
	id := cmd.ID
	if f.op == nil {
		return missing(id, "missing op")
	}
	if f.op.Type() != fastjson.TypeString {
		return bad(id, "bad op")
	}
	if cmd.Op = parseOp(f.op.GetStringBytes()); cmd.Op == OpUnknown {
		return &Error{ID: id, Code: CodeBadRequest, Message: "unknown op", Err: ErrUnknownOp}
	}

	if cmd.Op.needsChannel() {
		if f.channel == nil {
			return missing(id, "missing channel")
		}
		if f.channel.Type() != fastjson.TypeString {
			return bad(id, "bad channel")
		}
		cmd.Channel = f.channel.GetStringBytes()
		if _, _, err := ParseChannel(cmd.Channel); err != nil {
			return &Error{ID: id, Code: CodeBadRequest, Message: "bad channel", Err: err}
		}
	}

	switch cmd.Op {
	case OpPublish:
		if f.data == nil {
			return missing(id, "missing data")
		}
		// MarshalTo writes unescaped-on-demand strings back verbatim as long
		// as nobody asked for their value, which Decode never does inside data.
		d.data = f.data.MarshalTo(d.data[:0])
		// The parser is lenient inside strings (raw control characters, bad
		// escapes); data goes verbatim to other clients, so hold it to the
		// strict grammar.
		if fastjson.ValidateBytes(d.data) != nil {
			return bad(id, "bad data")
		}
		cmd.Data = d.data
	case OpSubscribe, OpHistory:
		if f.since != nil {
			if err := decodeSince(id, f.since, &cmd.Since); err != nil {
				return err
			}
			cmd.HasSince = true
		}
		if cmd.Op == OpHistory && f.limit != nil {
			n, err := uintField(f.limit)
			if err != nil || n > uint64(maxInt) {
				return bad(id, "bad limit")
			}
			cmd.Limit = int(n)
		}
	case OpRefresh:
		if f.token == nil {
			return missing(id, "missing token")
		}
		if f.token.Type() != fastjson.TypeString {
			return bad(id, "bad token")
		}
		cmd.Token = f.token.GetStringBytes()
	}
	return nil
}

const maxInt = int(^uint(0) >> 1)

// fields collects the top-level members of a command in one pass.
type fields struct {
	id, op, channel, data, since, limit, token *fastjson.Value
}

func (f *fields) set(k []byte, v *fastjson.Value) {
	var p **fastjson.Value
	switch string(k) {
	case "id":
		p = &f.id
	case "op":
		p = &f.op
	case "channel":
		p = &f.channel
	case "data":
		p = &f.data
	case "since":
		p = &f.since
	case "limit":
		p = &f.limit
	case "token":
		p = &f.token
	default:
		return
	}
	if *p == nil {
		*p = v
	}
}

func decodeSince(id uint64, v *fastjson.Value, pos *Position) error {
	if v.Type() != fastjson.TypeObject {
		return bad(id, "bad since")
	}
	o, _ := v.Object()
	off, ep := o.Get("offset"), o.Get("epoch")
	if off == nil {
		return missing(id, "missing since.offset")
	}
	if ep == nil {
		return missing(id, "missing since.epoch")
	}
	n, err := uintField(off)
	if err != nil {
		return bad(id, "bad since.offset")
	}
	if ep.Type() != fastjson.TypeString {
		return bad(id, "bad since.epoch")
	}
	pos.Offset = n
	pos.Epoch = ep.GetStringBytes()
	return nil
}

// uintField reads a non-negative integer without fastjson's allocating
// error path for the common wrong-type case.
func uintField(v *fastjson.Value) (uint64, error) {
	if v.Type() != fastjson.TypeNumber {
		return 0, ErrBadField
	}
	return v.Uint64()
}

func missing(id uint64, msg string) error {
	return &Error{ID: id, Code: CodeBadRequest, Message: msg, Err: fmt.Errorf("%w: %s", ErrMissingField, msg)}
}

func bad(id uint64, msg string) error {
	return &Error{ID: id, Code: CodeBadRequest, Message: msg, Err: fmt.Errorf("%w: %s", ErrBadField, msg)}
}
