package tuning

import (
	"strings"
	"testing"
)

// FuzzProfile: ParseProfile never panics, refuses text over
// MaxProfileBytes, keeps at most 8 fields per entry and one entry per
// line, and what it accepts formats back to the same values.
func FuzzProfile(f *testing.F) {
	f.Add(ProfileText)
	f.Add("# check: range\nnet.ipv4.ip_local_port_range = 1024 65535\n")
	f.Add("# check: min hard\nfs.file-max=1\n# check: eq\n a.b = 1 2 3\n")
	f.Fuzz(func(t *testing.T, text string) {
		p, err := ParseProfile(text)
		if err != nil {
			return
		}
		if len(text) > MaxProfileBytes {
			t.Fatalf("accepted %d bytes", len(text))
		}
		if len(p) > strings.Count(text, "\n")+1 {
			t.Fatalf("%d entries from %d lines", len(p), strings.Count(text, "\n")+1)
		}
		for _, s := range p {
			if len(s.Want) == 0 || len(s.Want) > 8 {
				t.Fatalf("%s: %d fields", s.Key, len(s.Want))
			}
			again, err := parseInts(s.Value())
			if err != nil || joinInts(again) != s.Value() {
				t.Fatalf("%s: %q does not round-trip: %v", s.Key, s.Value(), err)
			}
		}
	})
}
