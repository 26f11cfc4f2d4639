package ingest

import (
	"bytes"
	"testing"
)

func TestRequestRoundTrip(t *testing.T) {
	var b []byte
	b = AppendPublish(b, 1, "chat:a", []byte("k1"), []byte(`{"x":1}`))
	b = AppendPublishMany(b, 2, []string{"chat:a", "chat:b"}, nil, []byte(`2`))
	b = AppendBroadcast(b, 3, "chat", []byte(`3`))
	b = AppendDisconnect(b, 4, "alice", 4007, "bye")
	b = AppendUnsubscribe(b, 5, "alice", "chat:a")
	b = AppendPresence(b, 6, "chat:a")
	b = AppendSimple(b, OpEvents, 7)
	b = AppendSimple(b, OpPing, 8)
	var r Request
	check := []func(r *Request) bool{
		func(r *Request) bool {
			return r.Op == OpPublish && string(r.Channel) == "chat:a" && string(r.Key) == "k1" && string(r.Payload) == `{"x":1}`
		},
		func(r *Request) bool {
			a, rest := NextChannel(r.Channels)
			c, rest := NextChannel(rest)
			return r.Op == OpPublishMany && r.NumChannels == 2 && string(a) == "chat:a" && string(c) == "chat:b" && len(rest) == 0 && string(r.Payload) == "2"
		},
		func(r *Request) bool {
			return r.Op == OpBroadcast && string(r.Namespace) == "chat" && string(r.Payload) == "3"
		},
		func(r *Request) bool {
			return r.Op == OpDisconnect && string(r.User) == "alice" && r.Code == 4007 && string(r.Reason) == "bye"
		},
		func(r *Request) bool {
			return r.Op == OpUnsubscribe && string(r.User) == "alice" && string(r.Channel) == "chat:a"
		},
		func(r *Request) bool { return r.Op == OpPresence && string(r.Channel) == "chat:a" },
		func(r *Request) bool { return r.Op == OpEvents },
		func(r *Request) bool { return r.Op == OpPing },
	}
	for i, ok := range check {
		n, err := ParseRequest(b, DefaultFrame, &r)
		if err != nil || n == 0 || r.Seq != uint64(i+1) || !ok(&r) {
			t.Fatalf("request %d: n %d err %v %+v", i+1, n, err, r)
		}
		b = b[n:]
	}
	if len(b) != 0 {
		t.Fatalf("%d bytes left", len(b))
	}
}

func TestResponseRoundTrip(t *testing.T) {
	var b []byte
	b = AppendAck(b, 1, 42, "ep", AckDuplicate)
	b = AppendError(b, 2, CodeOverloaded, "overloaded")
	m, s := AppendMembersOpen(b, 3)
	m = AppendMember(m, "c1", "alice", []byte(`{"a":1}`))
	b = FinishMembers(m, s, 1)
	e, s := AppendEventsOpen(b, 10, 3)
	e = AppendEvent(e, EventDisconnect, "c1", "alice", "", 1001, "client")
	b = FinishEvents(e, s, 1)
	var r Response
	n, err := ParseResponse(b, DefaultFrame, &r)
	if err != nil || r.Seq != 1 || r.Offset != 42 || string(r.Epoch) != "ep" || r.Flags != AckDuplicate {
		t.Fatalf("ack: %v %+v", err, r)
	}
	b = b[n:]
	n, err = ParseResponse(b, DefaultFrame, &r)
	if err != nil || r.Code != CodeOverloaded || !r.Code.Retryable() {
		t.Fatalf("error: %v %+v", err, r)
	}
	b = b[n:]
	n, err = ParseResponse(b, DefaultFrame, &r)
	cl, u, info, _ := NextMember(r.Members)
	if err != nil || r.Count != 1 || string(cl) != "c1" || string(u) != "alice" || string(info) != `{"a":1}` {
		t.Fatalf("members: %v %+v", err, r)
	}
	b = b[n:]
	n, err = ParseResponse(b, DefaultFrame, &r)
	var ev Event
	NextEvent(r.Events, &ev)
	if err != nil || r.First != 10 || r.Lost != 3 || r.Count != 1 || ev.Kind != EventDisconnect || ev.Code != 1001 || string(ev.User) != "alice" {
		t.Fatalf("events: %v %+v %+v", err, r, ev)
	}
	if n != len(b) {
		t.Fatal("trailing bytes")
	}
}

func TestParseRequestErrors(t *testing.T) {
	pub := AppendPublish(nil, 1, "chat:a", nil, []byte("1"))
	for _, c := range []struct {
		name string
		b    []byte
		max  int
		want error
	}{
		{"short length", []byte{0, 0, 0, 3, 1}, DefaultFrame, ErrMalformed},
		{"over max", pub, len(pub) - 1, ErrFrameLarge},
		{"over max, header only", []byte{0x7f, 0, 0, 0}, DefaultFrame, ErrFrameLarge},
		{"version", append([]byte{0, 0, 0, 10, 9}, make([]byte, 9)...), DefaultFrame, ErrVersion},
		{"channel past end", func() []byte { b := bytes.Clone(pub); b[HeaderLen] = 100; return b }(), DefaultFrame, ErrMalformed},
		{"unknown op", func() []byte { b := AppendSimple(nil, OpPing, 1); b[5] = 0x70; return b }(), DefaultFrame, ErrUnknownOp},
		{"ping with body", append(AppendSimple(nil, OpPing, 1)[:0:0], 0, 0, 0, 11, 1, byte(OpPing), 0, 0, 0, 0, 0, 0, 0, 1, 9), DefaultFrame, ErrMalformed},
		{"no channels", AppendPublishMany(nil, 1, nil, nil, nil), DefaultFrame, ErrMalformed},
	} {
		var r Request
		_, err := ParseRequest(c.b, c.max, &r)
		if err != c.want {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// Partial frames ask for more, whatever the cut.
	for i := range len(pub) {
		var r Request
		if n, err := ParseRequest(pub[:i], DefaultFrame, &r); n != 0 || err != nil {
			t.Fatalf("prefix %d: %d %v", i, n, err)
		}
	}
}

func TestParseRequestAllocs(t *testing.T) {
	b := AppendPublish(nil, 1, "chat:room42", []byte("key-1"), []byte(`{"text":"hello"}`))
	b = AppendPublishMany(b, 2, []string{"chat:a", "chat:b", "chat:c"}, nil, []byte(`1`))
	var r Request
	allocs := testing.AllocsPerRun(1000, func() {
		for buf := b; len(buf) > 0; {
			n, err := ParseRequest(buf, DefaultFrame, &r)
			if err != nil || n == 0 {
				panic(err)
			}
			buf = buf[n:]
		}
	})
	if allocs != 0 {
		t.Fatalf("ParseRequest: %v allocations per run, want 0", allocs)
	}
	out := make([]byte, 0, 256)
	allocs = testing.AllocsPerRun(1000, func() { out = AppendAck(out[:0], 1, 2, "epoch", 0) })
	if allocs != 0 {
		t.Fatalf("AppendAck: %v allocations per run, want 0", allocs)
	}
}

func BenchmarkParseRequest(b *testing.B) {
	buf := AppendPublish(nil, 1, "chat:room42", []byte("key-1"), []byte(`{"text":"hello"}`))
	var r Request
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if _, err := ParseRequest(buf, DefaultFrame, &r); err != nil {
			b.Fatal(err)
		}
	}
}
