package protocol

import (
	"bytes"
	"errors"
	"testing"
	"unicode/utf8"

	"github.com/valyala/fastjson"
)

// FuzzProtocol decodes arbitrary messages. Decoding must never panic; an
// error must be a 400 *Error whose reply is valid JSON; a decoded command
// must re-encode (AppendCommand) into a message that decodes to the same
// command, and its channel and data must encode into a valid publication
// push that reads back the same. Seeds live in testdata/fuzz/FuzzProtocol.
func FuzzProtocol(f *testing.F) {
	f.Add([]byte(`{"id":1,"op":"subscribe","channel":"chat:room42","since":{"offset":17,"epoch":"k3"}}`))
	f.Add([]byte(`{"id":2,"op":"publish","channel":"chat:room42","data":{"text":"hi"}}`))
	f.Fuzz(func(t *testing.T, msg []byte) {
		var d Decoder
		var cmd Command
		err := d.Decode(msg, &cmd)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) || pe.Code != CodeBadRequest || pe.Message == "" {
				t.Fatalf("Decode(%q) error %v is not a 400 *Error", msg, err)
			}
			if reply := AppendError(nil, pe.ID, pe.Code, pe.Message); fastjson.ValidateBytes(reply) != nil {
				t.Fatalf("invalid error reply %s", reply)
			}
			return
		}
		if cmd.ID == 0 || cmd.Op == OpUnknown {
			t.Fatalf("Decode(%q) accepted id %d op %v", msg, cmd.ID, cmd.Op)
		}
		enc := AppendCommand(nil, &cmd)
		if err := fastjson.ValidateBytes(enc); err != nil {
			t.Fatalf("AppendCommand produced invalid JSON %s: %v", enc, err)
		}
		var d2 Decoder
		var cmd2 Command
		if err := d2.Decode(enc, &cmd2); err != nil {
			t.Fatalf("re-decoding %s: %v", enc, err)
		}
		// Invalid UTF-8 in free-form strings is replaced when encoding.
		if !utf8.Valid(cmd.Token) {
			cmd2.Token = cmd.Token
		}
		if !utf8.Valid(cmd.Since.Epoch) {
			cmd2.Since.Epoch = cmd.Since.Epoch
		}
		if err := equalCommand(&cmd2, &cmd); err != nil {
			t.Fatalf("round trip of %q via %s: %v", msg, enc, err)
		}
		if cmd.Op != OpPublish {
			return
		}
		push := AppendPublication(nil, string(cmd.Channel), cmd.ID, cmd.Data)
		var p fastjson.Parser
		v, err := p.ParseBytes(push)
		if err != nil || fastjson.ValidateBytes(push) != nil {
			t.Fatalf("invalid publication push %s: %v", push, err)
		}
		if !bytes.Equal(v.GetStringBytes("channel"), cmd.Channel) || v.GetUint64("offset") != cmd.ID {
			t.Fatalf("publication push %s does not carry channel %q offset %d", push, cmd.Channel, cmd.ID)
		}
		if got := v.Get("data").MarshalTo(nil); !bytes.Equal(got, cmd.Data) {
			t.Fatalf("publication push data = %s, want %s", got, cmd.Data)
		}
	})
}
