package frame

import (
	"bytes"
	"testing"
)

// TestParserStateRoundTrip splits a fragmented text message at every byte,
// moves the parser's state to a fresh parser at the split, and checks the
// fresh parser delivers the same message.
func TestParserStateRoundTrip(t *testing.T) {
	msg := []byte("héllo, wörld: a message in three fragments")
	var wire []byte
	wire = append(wire, hoFrame(false, OpText, msg[:10])...)
	wire = append(wire, hoFrame(true, OpPing, []byte("p"))...)
	wire = append(wire, hoFrame(false, OpContinuation, msg[10:20])...)
	wire = append(wire, hoFrame(true, OpContinuation, msg[20:])...)
	for cut := 0; cut <= len(wire); cut++ {
		in := bytes.Clone(wire)
		var a Parser
		var got hoCollect
		n, err := a.Parse(in[:cut], 1<<20, &got)
		if err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		state := a.AppendState(nil)
		a.Reset()
		var b Parser
		m, err := b.RestoreState(state, 1<<20)
		if err != nil || m != len(state) {
			t.Fatalf("cut %d: restore %d/%d: %v", cut, m, len(state), err)
		}
		if _, err := b.Parse(in[n:], 1<<20, &got); err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		if len(got.msgs) != 1 || !bytes.Equal(got.msgs[0], msg) || got.pings != 1 {
			t.Fatalf("cut %d: got %q, %d pings", cut, got.msgs, got.pings)
		}
	}
}

// TestParserStateRefused: a state over the receiver's message limit or
// inconsistent is refused and leaves the parser untouched.
func TestParserStateRefused(t *testing.T) {
	var a Parser
	var got hoCollect
	wire := hoFrame(false, OpBinary, make([]byte, 100))
	if _, err := a.Parse(wire[:50], 1<<20, &got); err != nil {
		t.Fatal(err)
	}
	state := a.AppendState(nil)
	var b Parser
	if _, err := b.RestoreState(state, 64); err != ErrParserState {
		t.Fatalf("over the limit: %v", err)
	}
	if b.Buffered() != 0 || b.msgOp != 0 {
		t.Fatal("refused state changed the parser")
	}
	for i := range state {
		bad := bytes.Clone(state)
		bad[i] ^= 0xff
		var c Parser
		if n, err := c.RestoreState(bad, 1<<20); err == nil && c.Buffered() > 1<<20 {
			t.Fatalf("byte %d: restored %d bytes over the limit", i, n)
		}
	}
	if _, err := b.RestoreState(state[:len(state)-1], 1<<20); err != ErrParserState {
		t.Fatalf("short: %v", err)
	}
}

// FuzzParserState: any bytes either are refused or restore a parser whose
// buffered message is within the limit and consistent with its length.
func FuzzParserState(f *testing.F) {
	var a Parser
	_, _ = a.Parse(hoFrame(false, OpText, []byte("abcdef"))[:9], 1<<10, &hoCollect{})
	f.Add(a.AppendState(nil))
	f.Add([]byte{parserStateVersion})
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Parser
		n, err := p.RestoreState(b, 1<<10)
		if err != nil {
			if n != 0 || p.Buffered() != 0 {
				t.Fatal("refused state left bytes behind")
			}
			return
		}
		if p.Buffered() > 1<<10 || p.msgLen > 1<<10 || n > len(b) {
			t.Fatalf("restored %d buffered, msgLen %d", p.Buffered(), p.msgLen)
		}
		p.Reset()
	})
}

type hoCollect struct {
	msgs  [][]byte
	pings int
}

func (c *hoCollect) OnMessage(_ OpCode, p []byte) error {
	c.msgs = append(c.msgs, bytes.Clone(p))
	return nil
}
func (c *hoCollect) OnPing([]byte) error             { c.pings++; return nil }
func (c *hoCollect) OnPong([]byte) error             { return nil }
func (c *hoCollect) OnClose(CloseCode, []byte) error { return nil }

func hoFrame(fin bool, op OpCode, payload []byte) []byte {
	mask := [4]byte{1, 2, 3, 4}
	b := AppendHeader(nil, fin, op, len(payload))
	b[1] |= 0x80
	b = append(b, mask[:]...)
	for i, c := range payload {
		b = append(b, c^mask[i&3])
	}
	return b
}
