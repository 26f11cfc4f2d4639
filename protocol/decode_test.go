package protocol

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

// equalCommand reports the first difference between two commands.
func equalCommand(got, want *Command) error {
	switch {
	case got.ID != want.ID:
		return fmt.Errorf("ID = %d, want %d", got.ID, want.ID)
	case got.Op != want.Op:
		return fmt.Errorf("Op = %v, want %v", got.Op, want.Op)
	case !bytes.Equal(got.Channel, want.Channel):
		return fmt.Errorf("Channel = %q, want %q", got.Channel, want.Channel)
	case !bytes.Equal(got.Data, want.Data):
		return fmt.Errorf("Data = %q, want %q", got.Data, want.Data)
	case got.HasSince != want.HasSince:
		return fmt.Errorf("HasSince = %v, want %v", got.HasSince, want.HasSince)
	case got.Since.Offset != want.Since.Offset:
		return fmt.Errorf("Since.Offset = %d, want %d", got.Since.Offset, want.Since.Offset)
	case !bytes.Equal(got.Since.Epoch, want.Since.Epoch):
		return fmt.Errorf("Since.Epoch = %q, want %q", got.Since.Epoch, want.Since.Epoch)
	case got.Limit != want.Limit:
		return fmt.Errorf("Limit = %d, want %d", got.Limit, want.Limit)
	case !bytes.Equal(got.Token, want.Token):
		return fmt.Errorf("Token = %q, want %q", got.Token, want.Token)
	}
	return nil
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name string
		msg  string
		want Command
	}{
		{
			name: "subscribe with since",
			msg:  `{"id":1,"op":"subscribe","channel":"chat:room42","since":{"offset":17,"epoch":"k3"}}`,
			want: Command{ID: 1, Op: OpSubscribe, Channel: []byte("chat:room42"), Since: Position{Offset: 17, Epoch: []byte("k3")}, HasSince: true, Limit: NoLimit},
		},
		{
			name: "subscribe without since",
			msg:  ` {"op":"subscribe","channel":"user:42","id":18446744073709551615} `,
			want: Command{ID: 18446744073709551615, Op: OpSubscribe, Channel: []byte("user:42"), Limit: NoLimit},
		},
		{
			name: "unsubscribe",
			msg:  `{"id":3,"op":"unsubscribe","channel":"chat:room42"}`,
			want: Command{ID: 3, Op: OpUnsubscribe, Channel: []byte("chat:room42"), Limit: NoLimit},
		},
		{
			name: "publish object keeps escapes and digits",
			msg:  `{"id":2,"op":"publish","channel":"chat:room42","data": {"text" : "h\u00e9\"i", "n": 1.50e+3, "a":[ true ,null ]}}`,
			want: Command{ID: 2, Op: OpPublish, Channel: []byte("chat:room42"), Data: []byte(`{"text":"h\u00e9\"i","n":1.50e+3,"a":[true,null]}`), Limit: NoLimit},
		},
		{
			name: "publish string",
			msg:  `{"id":2,"op":"publish","channel":"chat:a","data":"a\nb"}`,
			want: Command{ID: 2, Op: OpPublish, Channel: []byte("chat:a"), Data: []byte(`"a\nb"`), Limit: NoLimit},
		},
		{
			name: "publish null",
			msg:  `{"id":2,"op":"publish","channel":"chat:a","data":null}`,
			want: Command{ID: 2, Op: OpPublish, Channel: []byte("chat:a"), Data: []byte(`null`), Limit: NoLimit},
		},
		{
			name: "history with limit and since",
			msg:  `{"id":5,"op":"history","channel":"chat:room42","limit":50,"since":{"offset":0,"epoch":""}}`,
			want: Command{ID: 5, Op: OpHistory, Channel: []byte("chat:room42"), Since: Position{Offset: 0, Epoch: []byte("")}, HasSince: true, Limit: 50},
		},
		{
			name: "history limit zero",
			msg:  `{"id":5,"op":"history","channel":"chat:room42","limit":0}`,
			want: Command{ID: 5, Op: OpHistory, Channel: []byte("chat:room42"), Limit: 0},
		},
		{
			name: "presence",
			msg:  `{"id":4,"op":"presence","channel":"chat:room42"}`,
			want: Command{ID: 4, Op: OpPresence, Channel: []byte("chat:room42"), Limit: NoLimit},
		},
		{
			name: "presence_stats",
			msg:  `{"id":4,"op":"presence_stats","channel":"chat:room42"}`,
			want: Command{ID: 4, Op: OpPresenceStats, Channel: []byte("chat:room42"), Limit: NoLimit},
		},
		{
			name: "ping ignores unknown and foreign fields",
			msg:  `{"id":9,"op":"ping","channel":"not checked","x":[1,2]}`,
			want: Command{ID: 9, Op: OpPing, Limit: NoLimit},
		},
		{
			name: "refresh",
			msg:  `{"id":6,"op":"refresh","token":"a.b\/c"}`,
			want: Command{ID: 6, Op: OpRefresh, Token: []byte("a.b/c"), Limit: NoLimit},
		},
		{
			name: "escaped channel is unescaped",
			msg:  `{"id":1,"op":"subscribe","channel":"chat:\u0041"}`,
			want: Command{ID: 1, Op: OpSubscribe, Channel: []byte("chat:A"), Limit: NoLimit},
		},
		{
			name: "first duplicate wins",
			msg:  `{"id":1,"op":"unsubscribe","channel":"a:1","channel":"b:2","id":2}`,
			want: Command{ID: 1, Op: OpUnsubscribe, Channel: []byte("a:1"), Limit: NoLimit},
		},
	}
	var d Decoder
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := Command{ID: 99, Op: OpPublish, Data: []byte("stale"), Limit: 7}
			if err := d.Decode([]byte(tt.msg), &cmd); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if err := equalCommand(&cmd, &tt.want); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name     string
		msg      string
		wantID   uint64
		wantMsg  string
		sentinel error
	}{
		{
			name:     "bad JSON",
			msg:      `{"id":1,"op":"ping"`,
			wantID:   0,
			wantMsg:  "bad JSON",
			sentinel: ErrBadJSON,
		},
		{
			name:     "empty",
			msg:      ``,
			wantID:   0,
			wantMsg:  "bad JSON",
			sentinel: ErrBadJSON,
		},
		{
			name:     "not an object",
			msg:      `[1,2]`,
			wantID:   0,
			wantMsg:  "bad JSON",
			sentinel: ErrNotObject,
		},
		{
			name:     "missing id",
			msg:      `{"op":"ping"}`,
			wantID:   0,
			wantMsg:  "missing id",
			sentinel: ErrMissingField,
		},
		{
			name:     "id zero",
			msg:      `{"id":0,"op":"ping"}`,
			wantID:   0,
			wantMsg:  "bad id",
			sentinel: ErrBadField,
		},
		{
			name:     "negative id",
			msg:      `{"id":-1,"op":"ping"}`,
			wantID:   0,
			wantMsg:  "bad id",
			sentinel: ErrBadField,
		},
		{
			name:     "fractional id",
			msg:      `{"id":1.5,"op":"ping"}`,
			wantID:   0,
			wantMsg:  "bad id",
			sentinel: ErrBadField,
		},
		{
			name:     "string id",
			msg:      `{"id":"1","op":"ping"}`,
			wantID:   0,
			wantMsg:  "bad id",
			sentinel: ErrBadField,
		},
		{
			name:     "id overflows uint64",
			msg:      `{"id":18446744073709551616,"op":"ping"}`,
			wantID:   0,
			wantMsg:  "bad id",
			sentinel: ErrBadField,
		},
		{
			name:     "missing op",
			msg:      `{"id":7}`,
			wantID:   7,
			wantMsg:  "missing op",
			sentinel: ErrMissingField,
		},
		{
			name:     "op not a string",
			msg:      `{"id":7,"op":1}`,
			wantID:   7,
			wantMsg:  "bad op",
			sentinel: ErrBadField,
		},
		{
			name:     "unknown op",
			msg:      `{"id":7,"op":"nope"}`,
			wantID:   7,
			wantMsg:  "unknown op",
			sentinel: ErrUnknownOp,
		},
		{
			name:     "missing channel",
			msg:      `{"id":8,"op":"subscribe"}`,
			wantID:   8,
			wantMsg:  "missing channel",
			sentinel: ErrMissingField,
		},
		{
			name:     "channel not a string",
			msg:      `{"id":8,"op":"subscribe","channel":5}`,
			wantID:   8,
			wantMsg:  "bad channel",
			sentinel: ErrBadField,
		},
		{
			name:     "channel without namespace",
			msg:      `{"id":8,"op":"subscribe","channel":"room42"}`,
			wantID:   8,
			wantMsg:  "bad channel",
			sentinel: ErrBadChannel,
		},
		{
			name:     "channel with space",
			msg:      `{"id":8,"op":"presence","channel":"chat:a b"}`,
			wantID:   8,
			wantMsg:  "bad channel",
			sentinel: ErrBadChannel,
		},
		{
			name:     "publish without data",
			msg:      `{"id":2,"op":"publish","channel":"chat:a"}`,
			wantID:   2,
			wantMsg:  "missing data",
			sentinel: ErrMissingField,
		},
		{
			name:     "publish data with raw control character",
			msg:      "{\"id\":2,\"op\":\"publish\",\"channel\":\"chat:a\",\"data\":\"a\nb\"}",
			wantID:   2,
			wantMsg:  "bad data",
			sentinel: ErrBadField,
		},
		{
			name:     "publish data with bad escape",
			msg:      `{"id":2,"op":"publish","channel":"chat:a","data":{"k":"\x41"}}`,
			wantID:   2,
			wantMsg:  "bad data",
			sentinel: ErrBadField,
		},
		{
			name:     "since not an object",
			msg:      `{"id":1,"op":"subscribe","channel":"chat:a","since":17}`,
			wantID:   1,
			wantMsg:  "bad since",
			sentinel: ErrBadField,
		},
		{
			name:     "since without epoch",
			msg:      `{"id":1,"op":"subscribe","channel":"chat:a","since":{"offset":17}}`,
			wantID:   1,
			wantMsg:  "missing since.epoch",
			sentinel: ErrMissingField,
		},
		{
			name:     "since without offset",
			msg:      `{"id":1,"op":"history","channel":"chat:a","since":{"epoch":"x"}}`,
			wantID:   1,
			wantMsg:  "missing since.offset",
			sentinel: ErrMissingField,
		},
		{
			name:     "since negative offset",
			msg:      `{"id":1,"op":"history","channel":"chat:a","since":{"offset":-3,"epoch":"x"}}`,
			wantID:   1,
			wantMsg:  "bad since.offset",
			sentinel: ErrBadField,
		},
		{
			name:     "since epoch not a string",
			msg:      `{"id":1,"op":"history","channel":"chat:a","since":{"offset":3,"epoch":3}}`,
			wantID:   1,
			wantMsg:  "bad since.epoch",
			sentinel: ErrBadField,
		},
		{
			name:     "negative limit",
			msg:      `{"id":5,"op":"history","channel":"chat:a","limit":-1}`,
			wantID:   5,
			wantMsg:  "bad limit",
			sentinel: ErrBadField,
		},
		{
			name:     "missing token",
			msg:      `{"id":6,"op":"refresh"}`,
			wantID:   6,
			wantMsg:  "missing token",
			sentinel: ErrMissingField,
		},
		{
			name:     "token not a string",
			msg:      `{"id":6,"op":"refresh","token":{}}`,
			wantID:   6,
			wantMsg:  "bad token",
			sentinel: ErrBadField,
		},
	}
	var d Decoder
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cmd Command
			err := d.Decode([]byte(tt.msg), &cmd)
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("Decode error = %v, want *Error", err)
			}
			if pe.ID != tt.wantID || pe.Code != CodeBadRequest || pe.Message != tt.wantMsg {
				t.Fatalf("got id=%d code=%d message=%q, want id=%d code=400 message=%q", pe.ID, pe.Code, pe.Message, tt.wantID, tt.wantMsg)
			}
			if !errors.Is(err, tt.sentinel) {
				t.Fatalf("errors.Is(%v, %v) = false", err, tt.sentinel)
			}
		})
	}
}

// TestDecodeReuse checks that a Decoder's results do not depend on what it
// decoded before, and that Data is not clobbered by a shorter later message
// before the next Decode.
func TestDecodeReuse(t *testing.T) {
	var d Decoder
	var cmd Command
	long := `{"id":1,"op":"publish","channel":"chat:a","data":{"k":"` + string(bytes.Repeat([]byte("x"), 1000)) + `"}}`
	if err := d.Decode([]byte(long), &cmd); err != nil {
		t.Fatal(err)
	}
	if err := d.Decode([]byte(`{"id":2,"op":"publish","channel":"chat:b","data":[1]}`), &cmd); err != nil {
		t.Fatal(err)
	}
	want := Command{ID: 2, Op: OpPublish, Channel: []byte("chat:b"), Data: []byte("[1]"), Limit: NoLimit}
	if err := equalCommand(&cmd, &want); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeAllocs(t *testing.T) {
	tests := []struct {
		name string
		msg  string
	}{
		{
			name: "subscribe",
			msg:  `{"id":1,"op":"subscribe","channel":"chat:room42","since":{"offset":17,"epoch":"k3"}}`,
		},
		{
			name: "unsubscribe",
			msg:  `{"id":3,"op":"unsubscribe","channel":"chat:room42"}`,
		},
		{
			name: "publish",
			msg:  `{"id":2,"op":"publish","channel":"chat:room42","data":{"text":"hi","n":[1,2,{"x":null}]}}`,
		},
		{
			name: "ping",
			msg:  `{"id":9,"op":"ping"}`,
		},
		{
			name: "history",
			msg:  `{"id":5,"op":"history","channel":"chat:room42","limit":50,"since":{"offset":3,"epoch":"k3"}}`,
		},
		{
			name: "presence_stats",
			msg:  `{"id":4,"op":"presence_stats","channel":"chat:room42"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d Decoder
			var cmd Command
			msg := []byte(tt.msg)
			if err := d.Decode(msg, &cmd); err != nil {
				t.Fatal(err)
			}
			allocs := testing.AllocsPerRun(100, func() {
				if err := d.Decode(msg, &cmd); err != nil {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Fatalf("Decode allocates %v times per run, want 0", allocs)
			}
		})
	}
}

func TestOpNames(t *testing.T) {
	for op := OpSubscribe; op <= OpRefresh; op++ {
		if got := parseOp([]byte(op.String())); got != op {
			t.Fatalf("parseOp(%q) = %v, want %v", op.String(), got, op)
		}
	}
	if s := Op(200).String(); s != "unknown" {
		t.Fatalf("Op(200).String() = %q, want unknown", s)
	}
}

func TestErrorAppendReply(t *testing.T) {
	var d Decoder
	var cmd Command
	err := d.Decode([]byte(`{"id":7,"op":"nope"}`), &cmd)
	var pe *Error
	if !errors.As(err, &pe) {
		t.Fatalf("Decode error = %v, want *Error", err)
	}
	want := `{"id":7,"error":{"code":400,"message":"unknown op"}}`
	if got := string(pe.AppendReply(nil)); got != want {
		t.Fatalf("AppendReply = %s, want %s", got, want)
	}
}
