package tuning

import (
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ProfileText is the shipped sysctl profile (sysctl.conf in this package).
//
//go:embed sysctl.conf
var ProfileText string

// Rule is how `tune check` compares a live value with the profile's.
type Rule string

// Rules.
const (
	RuleMin   Rule = "min"   // every field at least the profile's
	RuleMax   Rule = "max"   // every field at most the profile's
	RuleRange Rule = "range" // a port range at least as wide as the profile's
	RuleEq    Rule = "eq"    // exactly the profile's (a mode, not an amount)
)

// Setting is one entry of the profile.
type Setting struct {
	Key  string  // e.g. net.core.somaxconn
	Want []int64 // the profile's value, one or more fields
	Rule Rule
	Hard bool   // a limit that caps the number of connections
	Why  string // the comment above it
}

// Value formats the profile's value as sysctl writes it.
func (s Setting) Value() string { return joinInts(s.Want) }

// Path is the /proc/sys path of the key, relative to the root.
func (s Setting) Path() string { return "proc/sys/" + strings.ReplaceAll(s.Key, ".", "/") }

// ErrProfile is returned for a profile that cannot be parsed.
var ErrProfile = errors.New("tuning: bad profile")

// MaxProfileBytes bounds what ParseProfile accepts.
const MaxProfileBytes = 1 << 20

// ParseProfile reads a sysctl.conf whose entries are preceded by comment
// lines, one of them "# check: RULE [hard]". Comment lines without a
// following entry (the header) are dropped.
func ParseProfile(text string) ([]Setting, error) {
	if len(text) > MaxProfileBytes {
		return nil, fmt.Errorf("%w: %d bytes, over %d", ErrProfile, len(text), MaxProfileBytes)
	}
	var (
		out  []Setting
		why  []string
		rule Rule
		hard bool
	)
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "":
			why, rule, hard = why[:0], "", false
		case line[0] == '#' || line[0] == ';':
			c := strings.TrimSpace(line[1:])
			if r, ok := strings.CutPrefix(c, "check:"); ok {
				f := strings.Fields(r)
				if len(f) == 0 || len(f) > 2 || (len(f) == 2 && f[1] != "hard") {
					return nil, fmt.Errorf("%w: line %d: %q: want \"check: min|max|range|eq [hard]\"", ErrProfile, n+1, line)
				}
				rule, hard = Rule(f[0]), len(f) == 2
				if rule != RuleMin && rule != RuleMax && rule != RuleRange && rule != RuleEq {
					return nil, fmt.Errorf("%w: line %d: unknown rule %q", ErrProfile, n+1, f[0])
				}
				continue
			}
			why = append(why, c)
		default:
			key, val, ok := strings.Cut(line, "=")
			key = strings.TrimSpace(key)
			if !ok || key == "" || strings.ContainsAny(key, " \t/") {
				return nil, fmt.Errorf("%w: line %d: %q: want key = value", ErrProfile, n+1, line)
			}
			want, err := parseInts(val)
			if err != nil {
				return nil, fmt.Errorf("%w: line %d: %s: %v", ErrProfile, n+1, key, err)
			}
			if rule == "" {
				return nil, fmt.Errorf("%w: line %d: %s has no \"# check:\" line", ErrProfile, n+1, key)
			}
			if rule == RuleRange && len(want) != 2 {
				return nil, fmt.Errorf("%w: line %d: %s: a range has two fields", ErrProfile, n+1, key)
			}
			out = append(out, Setting{Key: key, Want: want, Rule: rule, Hard: hard, Why: strings.Join(why, " ")})
			why, rule, hard = why[:0], "", false
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no entries", ErrProfile)
	}
	return out, nil
}

// Profile returns the shipped profile's settings.
func Profile() []Setting {
	p, err := ParseProfile(ProfileText)
	if err != nil {
		panic("BUG: shipped sysctl.conf: " + err.Error())
	}
	return p
}

// parseInts reads whitespace-separated non-negative integers (at most 8).
func parseInts(s string) ([]int64, error) {
	f := strings.Fields(s)
	if len(f) == 0 || len(f) > 8 {
		return nil, fmt.Errorf("%d fields, want 1 to 8", len(f))
	}
	out := make([]int64, len(f))
	for i, x := range f {
		v, err := strconv.ParseInt(x, 10, 64)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("field %q is not a non-negative integer", x)
		}
		out[i] = v
	}
	return out, nil
}

func joinInts(v []int64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatInt(x, 10)
	}
	return strings.Join(s, " ")
}
