package frame

import (
	"bytes"
	stdflate "compress/flate"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"github.com/gobwas/httphead"
	kflate "github.com/klauspost/compress/flate"
)

// randomMessage returns a message of the kinds a WebSocket server sees:
// chat-like JSON (compresses well), random bytes (does not), runs of one
// byte (compresses extremely), or printable noise, of a random size up to
// max, with sizes at and around the deflate block and window boundaries
// favoured.
func randomMessage(r *rand.Rand, max int) []byte {
	sizes := []int{0, 1, 2, 3, 4, 5, 127, 128, 255, 1024, 16383, 16384, 16385, 32767, 32768, 32769, 65535, 65536, 65537}
	n := r.IntN(max + 1)
	if r.IntN(2) == 0 {
		n = min(sizes[r.IntN(len(sizes))], max)
	}
	b := make([]byte, 0, n)
	switch r.IntN(4) {
	case 0:
		words := []string{`{"channel":"chat:room42",`, `"offset":`, `"data":{"text":"`, `hello`, ` world`, `"}}`, `,"user":"alice"`, `12345`}
		for len(b) < n {
			b = append(b, words[r.IntN(len(words))]...)
		}
		b = b[:n]
	case 1:
		for len(b) < n {
			b = append(b, byte(r.Uint32()))
		}
	case 2:
		c := byte(r.Uint32())
		for len(b) < n {
			b = append(b, c)
		}
	default:
		for len(b) < n {
			b = append(b, byte(' '+r.IntN(95)))
		}
	}
	return b
}

// stdInflate inflates a permessage-deflate payload with the standard
// library: an implementation that shares no code with klauspost's.
func stdInflate(t testing.TB, payload []byte) []byte {
	t.Helper()
	r := stdflate.NewReader(io.MultiReader(bytes.NewReader(payload), strings.NewReader("\x00\x00\xff\xff\x01\x00\x00\xff\xff")))
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("stdlib inflate: %v", err)
	}
	return out
}

// stdDeflate compresses a message as a client with the standard library
// does it (gorilla/websocket, for one): sync flush, tail stripped.
func stdDeflate(t testing.TB, msg []byte, level int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := stdflate.NewWriter(&buf, level)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(msg)
	_ = w.Flush()
	b := buf.Bytes()
	if !bytes.HasSuffix(b, syncTail[:]) {
		t.Fatalf("stdlib flush does not end with the sync tail: % x", b[max(0, len(b)-8):])
	}
	return b[:len(b)-4]
}

// TestDeflateRoundTrips pushes random messages through our Deflater into
// the standard library's inflater, and through the standard library's and
// klauspost's compressors (at several levels, final block or not) into our
// Inflater. Our tail reader replaces gobwas' wsflate suffixedReader, whose
// ReadByte misbehaves with klauspost's decompressor on some inputs: this
// is the test that would catch a tail reader of that kind.
func TestDeflateRoundTrips(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	inf := NewInflater()
	defs := map[string]*Deflater{}
	for _, lv := range []int{1, 5, 9} {
		d, err := NewDeflater(lv, 15)
		if err != nil {
			t.Fatal(err)
		}
		defs["level"+string(rune('0'+lv))] = d
	}
	for _, bits := range []int{8, 9, 12} {
		d, err := NewDeflater(1, bits)
		if err != nil {
			t.Fatal(err)
		}
		defs["window"+string(rune('0'+bits%10))] = d
	}
	n, size := 150, 200<<10
	switch {
	case raceEnabled:
		n, size = 12, 70<<10 // klauspost's encoders run many times slower under -race
	case testing.Short():
		n = 40
	}
	for i := range n {
		msg := randomMessage(r, size)
		for name, d := range defs {
			z := d.Append([]byte("prefix"), msg)
			if string(z[:6]) != "prefix" {
				t.Fatalf("Append overwrote dst")
			}
			if got := stdInflate(t, z[6:]); !bytes.Equal(got, msg) {
				t.Fatalf("msg %d (%d bytes), %s: stdlib inflated %d bytes that differ", i, len(msg), name, len(got))
			}
			got, err := inf.Inflate(z[6:], len(msg))
			if err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("msg %d (%d bytes), %s: own round trip: %v", i, len(msg), name, err)
			}
		}
		for _, lv := range []int{stdflate.HuffmanOnly, 1, 6, 9} {
			z := stdDeflate(t, msg, lv)
			got, err := inf.Inflate(z, len(msg))
			if err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("msg %d (%d bytes) from stdlib level %d: %v (%d bytes)", i, len(msg), lv, err, len(got))
			}
		}
		// klauspost's own writer, and a stream a client ended with a
		// final block (RFC 7692 section 7.2.3.4 allows BFINAL).
		var buf bytes.Buffer
		kw, _ := kflate.NewWriter(&buf, r.IntN(9)+1)
		_, _ = kw.Write(msg)
		if r.IntN(2) == 0 {
			_ = kw.Flush()
			buf.Truncate(buf.Len() - 4)
		} else {
			_ = kw.Close()
		}
		got, err := inf.Inflate(buf.Bytes(), len(msg))
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("msg %d (%d bytes) from klauspost: %v", i, len(msg), err)
		}
	}
}

// TestDeflateEmpty: an empty message compresses to the single 0x00 byte
// of RFC 7692 section 7.2.3.6, and inflates back to nothing.
func TestDeflateEmpty(t *testing.T) {
	d, _ := NewDeflater(1, 15)
	z := d.Append(nil, nil)
	if !bytes.Equal(z, []byte{0}) {
		t.Fatalf("empty message compressed to % x, want 00", z)
	}
	got, err := NewInflater().Inflate(z, 10)
	if err != nil || len(got) != 0 {
		t.Fatalf("inflate 00: %q %v", got, err)
	}
	got, err = NewInflater().Inflate(nil, 10)
	if err != nil || len(got) != 0 {
		t.Fatalf("inflate of no bytes: %q %v", got, err)
	}
}

// bomb returns a compressed message of at least size bytes that inflates
// to about 1,000 times as much (zeros), and that inflated size. It repeats
// one flushed segment (1 MiB of zeros, about 1 KiB compressed): a flush
// ends byte-aligned, and every back-reference of a repeated segment lands
// on zeros again.
func bomb(t testing.TB, size int) ([]byte, int) {
	t.Helper()
	var buf bytes.Buffer
	w, _ := kflate.NewWriter(&buf, 9)
	_, _ = w.Write(make([]byte, 1<<20))
	_ = w.Flush()
	seg := buf.Bytes()
	var z []byte
	n := 0
	for len(z) < size {
		z = append(z, seg...)
		n += 1 << 20
	}
	return z[:len(z)-4], n
}

// TestInflateBomb: a 1 KiB message that inflates to a megabyte, and a
// 1 MiB one that inflates to a gigabyte, are refused with ErrTooLarge as
// soon as the output crosses the limit, and the inflater allocates no more
// than the limit (plus its fixed window) to find out.
func TestInflateBomb(t *testing.T) {
	const limit = 64 << 10
	for _, size := range []int{1 << 10, 1 << 20} {
		z, inflated := bomb(t, size)
		inf := NewInflater()
		// The decompressor's window and tables are allocated on first
		// use, whatever the message: not what is measured here.
		three, _ := bomb(t, 2100)
		if got, err := inf.Inflate(three, 1<<30); err != nil || len(got) != 3<<20 {
			t.Fatalf("three segments: %d bytes, %v", len(got), err)
		}
		inf.out = nil
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := inf.Inflate(z, limit)
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("%d-byte bomb: %v, want ErrTooLarge", len(z), err)
		}
		// Growing to limit+1 by doubling allocates under 2×(limit+1);
		// the decompressor adds short-lived link tables for long Huffman
		// codes (per dynamic block it decodes before the limit is hit).
		if got := after.TotalAlloc - before.TotalAlloc; got > 2*(limit+1)+128<<10 {
			t.Fatalf("%d-byte bomb: inflating allocated %d bytes for a %d-byte limit", len(z), got, limit)
		}
		if cap(inf.out) > limit+1 {
			t.Fatalf("output buffer grew to %d for a %d-byte limit", cap(inf.out), limit)
		}
		t.Logf("%d-byte bomb (inflates to %d MiB): %d bytes allocated, %d allocations",
			len(z), inflated>>20, after.TotalAlloc-before.TotalAlloc, after.Mallocs-before.Mallocs)
	}
}

// TestInflateExactLimit: a message of exactly the limit passes, one byte
// more does not.
func TestInflateExactLimit(t *testing.T) {
	d, _ := NewDeflater(1, 15)
	inf := NewInflater()
	for _, n := range []int{0, 1, 511, 512, 513, 4096, 100000} {
		msg := bytes.Repeat([]byte("ab"), n)[:n]
		z := d.Append(nil, msg)
		if got, err := inf.Inflate(z, n); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("%d bytes at limit %d: %v", n, n, err)
		}
		if n > 0 {
			if _, err := inf.Inflate(z, n-1); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("%d bytes at limit %d: %v, want ErrTooLarge", n, n-1, err)
			}
		}
	}
}

func TestInflateCorrupt(t *testing.T) {
	inf := NewInflater()
	for _, z := range [][]byte{
		{0xff, 0xff, 0xff},                // invalid block type 3
		{0x02},                            // fixed Huffman block cut short
		{0x00, 0x05, 0x00, 0x00, 0x00, 0}, // stored block length check fails
	} {
		if _, err := inf.Inflate(z, 1<<20); !errors.Is(err, ErrBadDeflate) {
			t.Errorf("% x: %v, want ErrBadDeflate", z, err)
		}
	}
	// And it works again afterwards.
	d, _ := NewDeflater(1, 15)
	if got, err := inf.Inflate(d.Append(nil, []byte("hello")), 10); err != nil || string(got) != "hello" {
		t.Fatalf("after corrupt input: %q %v", got, err)
	}
}

// TestDeflateAllocs: compressing and inflating a message allocates nothing
// once the buffers have grown.
func TestDeflateAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under -race")
	}
	d, _ := NewDeflater(1, 15)
	inf := NewInflater()
	msg := bytes.Repeat([]byte(`{"channel":"chat:room42","data":{"text":"hello"}}`), 20)
	dst := make([]byte, 0, 4096)
	z := d.Append(dst, msg)
	if _, err := inf.Inflate(z, len(msg)); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { z = d.Append(dst[:0], msg) }); n != 0 {
		t.Errorf("Append: %v allocs", n)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = inf.Inflate(z, len(msg)) }); n != 0 {
		t.Errorf("Inflate: %v allocs", n)
	}
}

func offer(params ...string) httphead.Option {
	o := httphead.Option{Name: []byte("permessage-deflate")}
	for _, p := range params {
		k, v, _ := strings.Cut(p, "=")
		var vb []byte
		if v != "" {
			vb = []byte(v)
		}
		o.Parameters.Set([]byte(k), vb)
	}
	return o
}

func TestNegotiateDeflate(t *testing.T) {
	const both = "permessage-deflate;server_no_context_takeover;client_no_context_takeover"
	for _, tc := range []struct {
		name string
		in   httphead.Option
		ok   bool
		bits int
		resp string
	}{
		{"plain", offer(), true, 15, both},
		{"browser", offer("client_max_window_bits"), true, 15, both},
		{"client bits", offer("client_max_window_bits=10"), true, 15, both},
		{"gorilla", offer("server_no_context_takeover", "client_no_context_takeover"), true, 15, both},
		{"server bits", offer("server_max_window_bits=9"), true, 9, both + ";server_max_window_bits=9"},
		{"server bits 15", offer("server_max_window_bits=15", "client_max_window_bits"), true, 15, both + ";server_max_window_bits=15"},
		{"server bits 8", offer("server_max_window_bits=8"), true, 8, both + ";server_max_window_bits=8"},
		{"server bits missing", offer("server_max_window_bits"), false, 0, ""},
		{"server bits 7", offer("server_max_window_bits=7"), false, 0, ""},
		{"server bits 16", offer("server_max_window_bits=16"), false, 0, ""},
		{"leading zero", offer("server_max_window_bits=09"), false, 0, ""},
		{"client bits 20", offer("client_max_window_bits=20"), false, 0, ""},
		{"value on flag", offer("server_no_context_takeover=1"), false, 0, ""},
		{"repeated", offer("client_no_context_takeover", "client_no_context_takeover"), false, 0, ""},
		{"unknown", offer("x_foo"), false, 0, ""},
		{"other extension", httphead.Option{Name: []byte("x-webkit-deflate-frame")}, false, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, bits, ok := NegotiateDeflate(tc.in)
			if ok != tc.ok || bits != tc.bits {
				t.Fatalf("ok %v bits %d, want %v %d", ok, bits, tc.ok, tc.bits)
			}
			if !ok {
				return
			}
			var b bytes.Buffer
			if _, err := httphead.WriteOptions(&b, []httphead.Option{resp}); err != nil {
				t.Fatal(err)
			}
			if b.String() != tc.resp {
				t.Fatalf("response %q, want %q", b.String(), tc.resp)
			}
		})
	}
}

// feedDeflate is feed for a parser that negotiated permessage-deflate.
func feedDeflate(in []byte, chunk int) ([]event, error) {
	var p Parser
	var r recorder
	defer p.Reset()
	p.SetDeflate(15)
	var pending []byte
	for off := 0; off < len(in); off += chunk {
		pending = append(pending, in[off:min(off+chunk, len(in))]...)
		n, err := p.Parse(pending, 1<<16, &r)
		if err != nil {
			return r.events, err
		}
		pending = append(pending[:0], pending[n:]...)
	}
	return r.events, nil
}

// TestParseCompressed: with permessage-deflate negotiated, RSV1 on the
// first frame of a data message marks it compressed, whole or fragmented,
// and it goes to OnCompressed undecoded (invalid UTF-8 in compressed bytes
// is not an error before inflating); RSV1 on a control or continuation
// frame, RSV2 and RSV3 are protocol errors; without the negotiation RSV1 is
// too.
func TestParseCompressed(t *testing.T) {
	d, _ := NewDeflater(1, 15)
	z := d.Append(nil, []byte("hello hello hello hello"))
	half := len(z) / 2
	for _, tc := range []struct {
		name   string
		in     []byte
		events []event
		err    error
	}{
		{"whole", clientFrame(true, 4, OpText, z), []event{{kind: "z", op: OpText, data: string(z)}}, nil},
		{"binary", clientFrame(true, 4, OpBinary, z), []event{{kind: "z", op: OpBinary, data: string(z)}}, nil},
		{"fragmented", cat(clientFrame(false, 4, OpText, z[:half]), clientFrame(false, 0, OpContinuation, nil), clientFrame(true, 0, OpContinuation, z[half:])),
			[]event{{kind: "z", op: OpText, data: string(z)}}, nil},
		{"ping between fragments", cat(clientFrame(false, 4, OpText, z[:half]), clientFrame(true, 0, OpPing, []byte("p")), clientFrame(true, 0, OpContinuation, z[half:])),
			[]event{{kind: "ping", data: "p"}, {kind: "z", op: OpText, data: string(z)}}, nil},
		{"plain after compressed", cat(clientFrame(true, 4, OpText, z), text(true, "plain")),
			[]event{{kind: "z", op: OpText, data: string(z)}, {kind: "msg", op: OpText, data: "plain"}}, nil},
		{"not UTF-8 before inflating", clientFrame(true, 4, OpText, []byte{0xff, 0xfe}), []event{{kind: "z", op: OpText, data: "\xff\xfe"}}, nil},
		{"compressed ping", clientFrame(true, 4, OpPing, nil), nil, ErrCompressedControl},
		{"compressed close", clientFrame(true, 4, OpClose, []byte{3, 232}), nil, ErrCompressedControl},
		{"compressed continuation", cat(clientFrame(false, 4, OpText, z[:half]), clientFrame(true, 4, OpContinuation, z[half:])), nil, ErrCompressedContinuation},
		{"RSV2", clientFrame(true, 2, OpText, z), nil, ErrReservedBits},
		{"RSV3", clientFrame(true, 1, OpText, z), nil, ErrReservedBits},
		{"RSV1+RSV2", clientFrame(true, 6, OpText, z), nil, ErrReservedBits},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, chunk := range []int{len(tc.in), 1, 3} {
				events, err := feedDeflate(tc.in, chunk)
				if err != tc.err || fmt.Sprint(events) != fmt.Sprint(tc.events) {
					t.Fatalf("chunks of %d: %v %v, want %v %v", chunk, events, err, tc.events, tc.err)
				}
			}
		})
	}
	// Without the negotiation RSV1 is what it always was.
	var p Parser
	if _, err := p.Parse(clientFrame(true, 4, OpText, z), 1<<16, &recorder{}); err != ErrReservedBits {
		t.Fatalf("RSV1 without permessage-deflate: %v", err)
	}
}
