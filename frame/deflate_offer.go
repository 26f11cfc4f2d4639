package frame

import (
	"bytes"

	"github.com/gobwas/httphead"
)

// DeflateExtension is the extension token of RFC 7692.
const DeflateExtension = "permessage-deflate"

// RFC 7692 section 7.1 parameter names.
var (
	paramServerNoTakeover = []byte("server_no_context_takeover")
	paramClientNoTakeover = []byte("client_no_context_takeover")
	paramServerMaxBits    = []byte("server_max_window_bits")
	paramClientMaxBits    = []byte("client_max_window_bits")
	deflateName           = []byte(DeflateExtension)
)

// windowBitsValues are the response values for server_max_window_bits,
// static so that a response option never aliases the request.
var windowBitsValues = [MaxDeflateWindowBits + 1][]byte{
	8: []byte("8"), 9: []byte("9"), 10: []byte("10"), 11: []byte("11"),
	12: []byte("12"), 13: []byte("13"), 14: []byte("14"), 15: []byte("15"),
}

// NegotiateDeflate answers one permessage-deflate offer (RFC 7692 section
// 7.1). An offer with an unknown, repeated or malformed parameter is
// declined (ok false), so that the server may accept a later offer of the
// list or none. An accepted offer is always answered with
// server_no_context_takeover and client_no_context_takeover: the server
// keeps no compression state per connection in either direction (section
// 7.1.1.2 lets it ask this of any client). windowBits is the largest
// window the server may use when it compresses: server_max_window_bits if
// the client offered one (echoed in the response, as section 7.1.2.1
// requires), else 15.
func NegotiateDeflate(offer httphead.Option) (resp httphead.Option, windowBits int, ok bool) {
	if !bytes.EqualFold(offer.Name, deflateName) {
		return resp, 0, false
	}
	windowBits = MaxDeflateWindowBits
	var seen uint8
	ok = true
	offer.Parameters.ForEach(func(k, v []byte) bool {
		var bit uint8
		switch {
		case bytes.Equal(k, paramServerNoTakeover):
			bit, ok = 1, len(v) == 0
		case bytes.Equal(k, paramClientNoTakeover):
			bit, ok = 2, len(v) == 0
		case bytes.Equal(k, paramServerMaxBits):
			bit = 4
			windowBits, ok = parseWindowBits(v)
		case bytes.Equal(k, paramClientMaxBits):
			bit = 8
			if len(v) != 0 {
				_, ok = parseWindowBits(v)
			}
		default:
			ok = false
		}
		if seen&bit != 0 {
			ok = false
		}
		seen |= bit
		return ok
	})
	if !ok {
		return httphead.Option{}, 0, false
	}
	resp.Name = deflateName
	resp.Parameters.Set(paramServerNoTakeover, nil)
	resp.Parameters.Set(paramClientNoTakeover, nil)
	if seen&4 != 0 {
		resp.Parameters.Set(paramServerMaxBits, windowBitsValues[windowBits])
	}
	return resp, windowBits, true
}

// parseWindowBits parses a window-bits value: 8 to 15 in decimal without
// leading zeros (RFC 7692 section 7.1.2).
func parseWindowBits(v []byte) (int, bool) {
	switch {
	case len(v) == 1 && v[0] >= '8' && v[0] <= '9':
		return int(v[0] - '0'), true
	case len(v) == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5':
		return 10 + int(v[1]-'0'), true
	}
	return 0, false
}
