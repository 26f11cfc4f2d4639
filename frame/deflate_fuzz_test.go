package frame

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzInflate inflates arbitrary bytes as a compressed message, with a
// limit taken from the input, and holds the Inflater to its bounds: it
// returns at most limit bytes, its buffer never grows past limit+1 bytes
// (a bomb costs no more than the limit), every error is a *frame.Error
// with a close code (1007 or 1009), and it keeps working afterwards. The
// input is also compressed and inflated back, which must give it back
// exactly, and be refused one byte under its length.
func FuzzInflate(f *testing.F) {
	d, _ := NewDeflater(1, 15)
	f.Add(uint16(100), d.Append(nil, []byte(`{"channel":"chat:room42","data":{"text":"hi"}}`)))
	f.Add(uint16(10), []byte{0})
	f.Add(uint16(4096), []byte{0xff, 0xff, 0xff})
	z, _ := bomb(f, 1000)
	f.Add(uint16(65535), z)
	inf := NewInflater()
	f.Fuzz(func(t *testing.T, limit uint16, in []byte) {
		if len(in) > 1<<16 {
			return
		}
		out, err := inf.Inflate(in, int(limit))
		var fe *Error
		switch {
		case err == nil && len(out) > int(limit):
			t.Fatalf("%d bytes out, limit %d", len(out), limit)
		case err != nil && (!errors.As(err, &fe) || (fe.Code != CloseTooLarge && fe.Code != CloseInvalidPayload)):
			t.Fatalf("error %v is not a 1007/1009 *frame.Error", err)
		}
		if c := cap(inf.out); c > int(limit)+1 {
			t.Fatalf("inflater holds %d bytes for a limit of %d", c, limit)
		}
		inf.out = nil // the bound above is per call, from an empty buffer
		back, err := inf.Inflate(d.Append(nil, in), len(in))
		if err != nil || !bytes.Equal(back, in) {
			t.Fatalf("round trip of %d bytes: %v", len(in), err)
		}
		if len(in) > 0 {
			if _, err := inf.Inflate(d.Append(nil, in), len(in)-1); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("%d bytes under a limit of %d: %v", len(in), len(in)-1, err)
			}
		}
		inf.out = nil
	})
}
