package auth

import "bytes"

// SubprotocolPrefix starts the Sec-WebSocket-Protocol entry that carries a
// token for browsers, which cannot set an Authorization header on a
// WebSocket: new WebSocket(url, ["wsedge.v1.json", "token." + jwt]). The
// server must never select (echo) that entry.
const SubprotocolPrefix = "token."

// BearerToken returns the token of an Authorization header value "Bearer
// <token>". The scheme is matched case-insensitively (RFC 9110 11.1) and
// blanks around the token are dropped. The result aliases value. ok is false
// for another scheme or an empty token.
func BearerToken(value []byte) (token []byte, ok bool) {
	const scheme = "bearer "
	value = bytes.TrimLeft(value, " \t")
	if len(value) < len(scheme) || !bytes.EqualFold(value[:len(scheme)], []byte(scheme)) {
		return nil, false
	}
	token = bytes.Trim(value[len(scheme):], " \t")
	return token, len(token) > 0
}

// SubprotocolToken returns the token of one Sec-WebSocket-Protocol entry
// "token.<jwt>" (prefix case-sensitive, as subprotocol names are). The
// result aliases entry. ok is false for any other entry or an empty token.
func SubprotocolToken(entry []byte) (token []byte, ok bool) {
	if !bytes.HasPrefix(entry, []byte(SubprotocolPrefix)) || len(entry) == len(SubprotocolPrefix) {
		return nil, false
	}
	return entry[len(SubprotocolPrefix):], true
}

// QueryToken finds the first query parameter named exactly "token" in a
// request URI ("/ws?v=1&token=eyJ..."), URL-decodes its value ('+' is a
// space, %XX a byte) and appends it to dst. ok is false if there is no such
// parameter, its value is empty, or its escaping is invalid. It allocates
// only when dst lacks room.
func QueryToken(dst, uri []byte) (token []byte, ok bool) {
	q := uri
	if i := bytes.IndexByte(q, '?'); i >= 0 {
		q = q[i+1:]
	} else {
		return dst, false
	}
	if i := bytes.IndexByte(q, '#'); i >= 0 {
		q = q[:i]
	}
	for len(q) > 0 {
		var param []byte
		if i := bytes.IndexByte(q, '&'); i >= 0 {
			param, q = q[:i], q[i+1:]
		} else {
			param, q = q, nil
		}
		v, found := bytes.CutPrefix(param, []byte("token="))
		if !found {
			continue
		}
		n := len(dst)
		dst, ok = unescape(dst, v)
		if !ok || len(dst) == n {
			return dst[:n], false
		}
		return dst, true
	}
	return dst, false
}

// unescape appends the query-decoded s to dst.
func unescape(dst, s []byte) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '+':
			dst = append(dst, ' ')
		case '%':
			if i+2 >= len(s) {
				return dst, false
			}
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return dst, false
			}
			dst = append(dst, hi<<4|lo)
			i += 2
		default:
			dst = append(dst, c)
		}
	}
	return dst, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// Source says where a token came from. A plain value.
type Source uint8

// Sources in increasing precedence: when a request carries tokens in several
// places, the Authorization header wins over the subprotocol entry, which
// wins over ?token=. The header is the deliberate channel of non-browser
// clients; the query string is the last resort because proxies log it.
// Within one source the first token wins.
const (
	SourceNone Source = iota
	SourceQuery
	SourceSubprotocol
	SourceHeader
)

var sourceNames = [...]string{"none", "query", "subprotocol", "header"}

func (s Source) String() string {
	if int(s) < len(sourceNames) {
		return sourceNames[s]
	}
	return "invalid"
}

// Extractor gathers the token of one handshake from the callbacks the
// engine's upgrader already has (the request URI, each header, each offered
// subprotocol) and keeps the one that takes precedence, copied into its own
// buffer so that it stays valid after the request bytes are gone. One
// Extractor per event loop, reused for every handshake: after the first
// few, it does not allocate.
type Extractor struct {
	tok []byte
	src Source
}

// Reset forgets the previous handshake's token.
func (e *Extractor) Reset() { e.tok, e.src = e.tok[:0], SourceNone }

// URI looks for ?token= in the request URI.
func (e *Extractor) URI(uri []byte) {
	if e.src >= SourceQuery {
		return
	}
	if t, ok := QueryToken(e.tok[:0], uri); ok {
		e.tok, e.src = t, SourceQuery
	}
}

// Header looks at one request header; only Authorization matters.
func (e *Extractor) Header(key, value []byte) {
	if e.src >= SourceHeader || !bytes.EqualFold(key, []byte("Authorization")) {
		return
	}
	if t, ok := BearerToken(value); ok {
		e.tok, e.src = append(e.tok[:0], t...), SourceHeader
	}
}

// Subprotocol looks at one offered subprotocol and says whether it is a
// token entry; the upgrader must then not select it.
func (e *Extractor) Subprotocol(entry []byte) bool {
	t, ok := SubprotocolToken(entry)
	if !ok {
		return false
	}
	if e.src < SourceSubprotocol {
		e.tok, e.src = append(e.tok[:0], t...), SourceSubprotocol
	}
	return true
}

// ProtocolHeader reads one whole Sec-WebSocket-Protocol value (a
// comma-separated list), passes each entry to Subprotocol, and reports
// whether name was among the entries that are not tokens. It is for gobwas'
// Upgrader.ProtocolCustom: the Upgrader's per-entry Protocol callback stops
// at the first entry it selects, and browsers list the protocol before the
// token (["wsedge.v1.json", "token.<jwt>"]), so that callback would never
// see the token. It does not allocate.
func (e *Extractor) ProtocolHeader(value []byte, name string) (offered bool) {
	for len(value) > 0 {
		entry := value
		if i := bytes.IndexByte(value, ','); i >= 0 {
			entry, value = value[:i], value[i+1:]
		} else {
			value = nil
		}
		entry = bytes.Trim(entry, " \t")
		if !e.Subprotocol(entry) && string(entry) == name {
			offered = true
		}
	}
	return offered
}

// Token returns the token that takes precedence and where it came from, or
// nil and SourceNone. It aliases the Extractor until the next Reset.
func (e *Extractor) Token() ([]byte, Source) {
	if e.src == SourceNone {
		return nil, SourceNone
	}
	return e.tok, e.src
}
