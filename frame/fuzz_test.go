package frame

import (
	"errors"
	"fmt"
	"testing"
)

// FuzzFrame feeds arbitrary bytes to the parser whole and in chunks whose
// sizes come from the input, and requires the same events and error either
// way: the parser's result must not depend on how reads split the stream.
// Both ways, feed also holds the parser to its resource bounds at every
// return of Parse: no payload and no assembly buffer over the message limit,
// and at most maxUnconsumed bytes left for the caller to keep, whatever
// lengths a hostile header declares.
func FuzzFrame(f *testing.F) {
	const max = 4096
	for _, tc := range parseCases() {
		f.Add(byte(3), tc.in)
	}
	f.Fuzz(func(t *testing.T, step byte, in []byte) {
		if len(in) > 1<<16 {
			return
		}
		whole, werr := feed(t, in, []int{len(in)}, max)
		var chunks []int
		size := int(step%17) + 1
		for rest := len(in); rest > 0; rest -= min(size, rest) {
			chunks = append(chunks, min(size, rest))
		}
		split, serr := feed(t, in, chunks, max)
		var fe *Error
		if werr != nil && !errors.As(werr, &fe) {
			t.Fatalf("error %v is not a *frame.Error", werr)
		}
		if !errors.Is(serr, werr) && !(serr != nil && werr != nil && serr.Error() == werr.Error()) {
			t.Fatalf("whole: %v, chunked: %v", werr, serr)
		}
		// A chunked read may fail earlier (fail-fast UTF-8) but must never
		// report an event the whole read did not.
		if len(split) > len(whole) || fmt.Sprint(split) != fmt.Sprint(whole[:len(split)]) {
			t.Fatalf("whole: %v, chunked: %v", whole, split)
		}
		if werr == nil && fmt.Sprint(split) != fmt.Sprint(whole) {
			t.Fatalf("whole: %v, chunked: %v", whole, split)
		}
	})
}
