package ingest

import (
	"bytes"
	"testing"
)

// FuzzIngest feeds arbitrary bytes to the request parser the way the
// server does: appended to a buffer in chunks whose sizes come from the
// input, parsing every whole frame at the front, stopping at a fatal
// error. Properties:
//   - resource bound: the parser never leaves more than maxFrame bytes
//     buffered while it waits for the rest of a frame (a length over the
//     bound is refused before its body is read);
//   - split independence: however the bytes are cut, the same requests
//     are decoded (op, seq and the fields re-encoded) and the stream ends
//     with the same error;
//   - every accepted request re-encodes to the very bytes it came from.
func FuzzIngest(f *testing.F) {
	f.Add(byte(3), AppendPublish(nil, 1, "chat:a", []byte("k"), []byte(`{"x":1}`)))
	f.Add(byte(1), AppendPublishMany(nil, 2, []string{"chat:a", "chat:b"}, nil, []byte(`2`)))
	f.Add(byte(5), AppendDisconnect(AppendBroadcast(nil, 3, "chat", []byte(`3`)), 4, "alice", 4007, "bye"))
	f.Add(byte(2), AppendPresence(AppendUnsubscribe(nil, 5, "u", "chat:a"), 6, "chat:a"))
	f.Add(byte(7), AppendSimple(AppendSimple(nil, OpEvents, 7), OpPing, 8))
	f.Add(byte(1), []byte{0x7f, 0xff, 0xff, 0xff})
	f.Add(byte(4), []byte{0, 0, 0, 10, 2, 1, 0, 0, 0, 0, 0, 0, 0, 1})
	const maxFrame = 512
	f.Fuzz(func(t *testing.T, chunk byte, data []byte) {
		whole, wholeErr := feed(t, data, len(data)+1, maxFrame)
		split, splitErr := feed(t, data, int(chunk%32)+1, maxFrame)
		if wholeErr != splitErr || !bytes.Equal(whole, split) {
			t.Fatalf("whole: %x %v; split by %d: %x %v", whole, wholeErr, int(chunk%32)+1, split, splitErr)
		}
	})
}

// feed parses data delivered in chunks of size step and returns the
// requests re-encoded, and the error that ended the stream.
func feed(t *testing.T, data []byte, step, maxFrame int) ([]byte, error) {
	var buf, out []byte
	var r Request
	for len(data) > 0 {
		k := min(step, len(data))
		buf = append(buf, data[:k]...)
		data = data[k:]
		for {
			n, err := ParseRequest(buf, maxFrame, &r)
			if err == ErrUnknownOp {
				out = append(out, 0xee)
				buf = buf[n:]
				continue
			}
			if err != nil {
				return out, err
			}
			if n == 0 {
				if len(buf) > maxFrame {
					t.Fatalf("%d bytes buffered waiting for a frame, bound %d", len(buf), maxFrame)
				}
				break
			}
			enc := reencode(&r)
			if !bytes.Equal(enc, buf[:n]) {
				t.Fatalf("re-encoded %x, from %x", enc, buf[:n])
			}
			out = append(out, enc...)
			buf = buf[n:]
		}
	}
	return out, nil
}

func reencode(r *Request) []byte {
	switch r.Op {
	case OpPublish:
		return AppendPublish(nil, r.Seq, string(r.Channel), r.Key, r.Payload)
	case OpPublishMany:
		var chans []string
		for list := r.Channels; len(list) > 0; {
			var ch []byte
			ch, list = NextChannel(list)
			chans = append(chans, string(ch))
		}
		return AppendPublishMany(nil, r.Seq, chans, r.Key, r.Payload)
	case OpBroadcast:
		return AppendBroadcast(nil, r.Seq, string(r.Namespace), r.Payload)
	case OpDisconnect:
		return AppendDisconnect(nil, r.Seq, string(r.User), r.Code, string(r.Reason))
	case OpUnsubscribe:
		return AppendUnsubscribe(nil, r.Seq, string(r.User), string(r.Channel))
	case OpPresence:
		return AppendPresence(nil, r.Seq, string(r.Channel))
	}
	return AppendSimple(nil, r.Op, r.Seq)
}
