package protocol

// Channel name limits.
const (
	MaxChannelLen     = 255 // bytes, namespace and colon included
	MaxNamespaceLen   = 32
	PersonalNamespace = "user" // user:<id> is the personal channel of user <id>
)

// ParseChannel splits a channel name "namespace:name" at its first colon and
// validates it: the namespace is 1 to 32 bytes of [a-z0-9_-], the name is
// at least one byte of printable ASCII without spaces (0x21-0x7E, colons
// allowed), and the whole name is at most 255 bytes. Personal channels
// "user:<id>" follow the same rule with namespace PersonalNamespace.
//
// ns and name alias ch. It does not allocate; errors wrap ErrBadChannel.
func ParseChannel(ch []byte) (ns, name []byte, err error) {
	if len(ch) == 0 || len(ch) > MaxChannelLen {
		return nil, nil, ErrBadChannel
	}
	colon := -1
	for i, c := range ch {
		if c == ':' {
			colon = i
			break
		}
		if !isNamespaceByte(c) {
			return nil, nil, ErrBadChannel
		}
	}
	if colon < 1 || colon > MaxNamespaceLen || colon == len(ch)-1 {
		return nil, nil, ErrBadChannel
	}
	for _, c := range ch[colon+1:] {
		if c < 0x21 || c > 0x7e {
			return nil, nil, ErrBadChannel
		}
	}
	return ch[:colon], ch[colon+1:], nil
}

func isNamespaceByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}
