package handoff

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"
)

func sample() Conn {
	return Conn{
		Seq: 7, Flags: FlagProtocol | FlagPinged, IdleMs: 1500, AgeMs: 90_000,
		BytesIn: 1, BytesOut: 2, MsgsIn: 3, MsgsOut: 4,
		Parser: []byte{1, 2, 3}, Inbound: []byte("\x81\x85"), ClientID: 99,
		Identity: []byte("id"), RefreshMs: -1, CmdDebt: 12,
		Subs: []Sub{{Channel: "chat:a", Offset: 17, Epoch: "k3"}, {Channel: "chat:b", Offset: 0, Lagging: true}},
	}
}

func TestConnRoundTrip(t *testing.T) {
	in := sample()
	b := AppendConn(nil, &in)
	out, err := DecodeConn(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("got %+v\nwant %+v", out, in)
	}
	for cut := range len(b) {
		if _, err := DecodeConn(b[:cut]); err == nil {
			t.Fatalf("a record cut at %d decoded", cut)
		}
	}
	if _, err := DecodeConn(append(b, 0)); err == nil {
		t.Fatal("a record with a trailing byte decoded")
	}
}

// TestVersionRefused: a hello of another version is refused with a
// VersionError naming both versions, before the rest is read.
func TestVersionRefused(t *testing.T) {
	h := AppendHello(nil, Hello{Echo: true, NextClientID: 5, MaxMessage: 65536})
	got, err := DecodeHello(h)
	if err != nil || !got.Echo || got.NextClientID != 5 || got.MaxMessage != 65536 || got.Version != Version {
		t.Fatalf("%+v %v", got, err)
	}
	other := bytes.Clone(h)
	other[9]++ // the version's low byte
	other = append(other, "a longer body of a later version"...)
	_, err = DecodeHello(other)
	var ve *VersionError
	if !errors.As(err, &ve) || ve.Theirs != Version+1 || ve.Ours != Version {
		t.Fatalf("another version: %v", err)
	}
	if _, err := DecodeHello([]byte("GET / HTTP/1.1\r\n\r\n")); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a stranger: %v", err)
	}
}

func TestBatchAndAcks(t *testing.T) {
	b := StartBatch(nil)
	c1, c2 := sample(), sample()
	c2.Seq, c2.Subs = 8, nil
	b = AppendBatchRecord(b, &c1)
	b = AppendBatchRecord(b, &c2)
	recs, err := SplitBatch(b)
	if err != nil || len(recs) != 2 || BatchLen(b) != 2 {
		t.Fatalf("%d records, %v", len(recs), err)
	}
	if got, err := DecodeConn(recs[1]); err != nil || got.Seq != 8 {
		t.Fatalf("%+v %v", got, err)
	}
	acks := []Ack{{Seq: 7, Taken: true}, {Seq: 8}}
	got, err := DecodeAcks(nil, AppendAcks(nil, acks))
	if err != nil || !reflect.DeepEqual(got, acks) {
		t.Fatalf("%+v %v", got, err)
	}
}

// TestLinkPassesDescriptors sends a batch with descriptors over a real
// Unix socket and checks that each received descriptor is the same open
// file (a pipe whose other end is written through it).
func TestLinkPassesDescriptors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "h.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v %v", fi.Mode(), err)
	}
	done := make(chan error, 1)
	const n = 3
	var readers [n]*os.File
	var fds []int
	for i := range n {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		defer w.Close()
		readers[i] = r
		fds = append(fds, int(w.Fd()))
	}
	go func() {
		c, err := ln.AcceptUnix()
		if err != nil {
			done <- err
			return
		}
		l := NewLink(c)
		defer l.Close()
		payload := bytes.Repeat([]byte{'x'}, 300_000) // larger than a socket buffer
		done <- l.Send(TypeBatch, payload, fds)
	}()
	l, err := Dial(SocketPath("unix://" + path))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	typ, payload, got, err := l.Recv()
	if err != nil || typ != TypeBatch || len(payload) != 300_000 || len(got) != n {
		t.Fatalf("type %d, %d bytes, %d fds, %v", typ, len(payload), len(got), err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i, fd := range got {
		if _, err := unix.Write(fd, []byte{byte('a' + i)}); err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
		var b [1]byte
		if _, err := readers[i].Read(b[:]); err != nil || b[0] != byte('a'+i) {
			t.Fatalf("pipe %d: %q %v", i, b, err)
		}
	}
	if _, _, _, err := l.Recv(); err == nil {
		t.Fatal("read past the peer's close")
	}
	if _, err := Listen(path); err == nil {
		t.Fatal("a second listener on a live socket")
	}
}

// FuzzDecode: whatever the bytes, the decoders refuse them or return
// values within the stated limits; a decoded record encodes back to the
// same bytes (nothing is misread).
func FuzzDecode(f *testing.F) {
	c := sample()
	f.Add(AppendConn(nil, &c))
	f.Add(AppendHello(nil, Hello{}))
	f.Add(AppendBatchRecord(StartBatch(nil), &c))
	f.Add(AppendAcks(nil, []Ack{{1, true}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if c, err := DecodeConn(b); err == nil {
			if len(c.Subs) > MaxSubs {
				t.Fatalf("%d subs", len(c.Subs))
			}
			for _, s := range c.Subs {
				if len(s.Channel) > MaxChannelLen || len(s.Epoch) > MaxEpochLen {
					t.Fatal("channel or epoch over its limit")
				}
			}
			if !bytes.Equal(AppendConn(nil, &c), b) {
				t.Fatal("a decoded record does not encode to its bytes")
			}
		}
		if recs, err := SplitBatch(b); err == nil && len(recs) > MaxBatch {
			t.Fatalf("%d records", len(recs))
		}
		if acks, err := DecodeAcks(nil, b); err == nil && len(acks) > MaxBatch {
			t.Fatalf("%d acks", len(acks))
		}
		if h, err := DecodeHello(b); err == nil && h.Version != Version {
			t.Fatal("another version decoded")
		}
	})
}
