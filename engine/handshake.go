package engine

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/gobwas/ws"

	"github.com/wsedge/wsedge/auth"
	"github.com/wsedge/wsedge/metrics"
)

// rejectStatus is the HTTP status of a refusal made with
// ws.RejectConnectionError.
func rejectStatus(err error) (int, bool) {
	var r *ws.ConnectionRejectedError
	if errors.As(err, &r) {
		return r.StatusCode(), true
	}
	return 0, false
}

// maxRequestHeader caps the HTTP upgrade request. A request that has not
// ended (blank line) within this many bytes is answered 431 and closed.
const maxRequestHeader = 8 << 10

// Subprotocol is the client protocol negotiated at the handshake.
const Subprotocol = "wsedge.v1.json"

// upgrader is one loop's handshake machinery. gobwas' Upgrader reads ahead
// through a 4 KiB bufio.Reader, which would swallow the first frames of a
// client that sends them right behind its request; so the loop finds the end
// of the request itself and hands the Upgrader exactly those bytes through
// this io.ReadWriter, collecting the response to write it in one go.
type upgrader struct {
	u        ws.Upgrader
	req      bytes.Reader
	resp     []byte
	path     string
	origins  map[string]bool
	protocol bool // the client offered wsedge.v1.json
	deflate  int  // permessage-deflate accepted: the server's window bits (deflate.go)
	offers   deflateOffers

	// Authentication of the request being upgraded (protocol mode).
	auth     *authState
	ex       auth.Extractor
	identity auth.Identity // valid after a successful upgrade
	refusal  auth.Reason   // why the token was refused, if it was
	counted  bool          // identity's user holds a --max-conns-per-user slot
}

// Refusals of ours; the Upgrader writes them as HTTP responses.
var (
	errNoSubprotocol = ws.RejectConnectionError(ws.RejectionStatus(http.StatusBadRequest),
		ws.RejectionReason("subprotocol "+Subprotocol+" required"))
	errNotFound = ws.RejectConnectionError(ws.RejectionStatus(http.StatusNotFound),
		ws.RejectionReason("no WebSocket endpoint at this path"))
	errOrigin = ws.RejectConnectionError(ws.RejectionStatus(http.StatusForbidden),
		ws.RejectionReason("origin not allowed"))
)

// rejectReason names a failed upgrade for metrics and the debug log.
func rejectReason(err error) metrics.RejectReason {
	switch err {
	case errNoSubprotocol:
		return metrics.RejectSubprotocol
	case errNotFound:
		return metrics.RejectNotFound
	case errOrigin:
		return metrics.RejectOrigin
	case ws.ErrHandshakeBadMethod:
		return metrics.RejectMethod
	case ws.ErrHandshakeBadSecVersion, ws.ErrHandshakeUpgradeRequired:
		return metrics.RejectVersion
	}
	if status, ok := rejectStatus(err); ok {
		switch status {
		case http.StatusUnauthorized:
			return metrics.RejectAuth
		case http.StatusTooManyRequests:
			return metrics.RejectUserConns
		}
	}
	return metrics.RejectBadRequest
}

func newUpgrader(cfg *Config, a *authState) *upgrader {
	h := &upgrader{path: cfg.Path, auth: a}
	if len(cfg.AllowedOrigins) > 0 {
		h.origins = make(map[string]bool, len(cfg.AllowedOrigins))
		for _, o := range cfg.AllowedOrigins {
			h.origins[o] = true
		}
	}
	h.u = ws.Upgrader{
		ReadBufferSize: maxRequestHeader,
		OnRequest:      h.onRequest,
		OnHeader:       h.onHeader,
		// The whole header value: a browser lists its token entry
		// (token.<jwt>) after the protocol, and gobwas' per-entry
		// callback stops at the first entry it selects. The token entry
		// is never selected, so it is never echoed back.
		ProtocolCustom: func(v []byte) (string, bool) {
			if h.ex.ProtocolHeader(v, Subprotocol) {
				h.protocol = true
				return Subprotocol, true
			}
			return "", true
		},
	}
	if !cfg.Echo {
		h.u.OnBeforeUpgrade = h.beforeUpgrade
	}
	if cfg.Compression == "on" {
		h.offers.scanFn = h.scanOffer
		h.u.ExtensionCustom = h.extensions
	}
	return h
}

// beforeUpgrade runs once the request is read, before the 101: nothing of
// the protocol happens unless it succeeds.
func (h *upgrader) beforeUpgrade() (ws.HandshakeHeader, error) {
	if !h.protocol {
		return nil, errNoSubprotocol
	}
	id, reason, err := h.auth.verify(&h.ex)
	if err != nil {
		h.refusal = reason
		return nil, err
	}
	if u := h.auth.users; u != nil {
		if !u.acquire(id.Sub()) {
			return nil, h.auth.tooMany
		}
		h.counted = true
	}
	h.identity = id
	return nil, nil
}

func (h *upgrader) Read(p []byte) (int, error)  { return h.req.Read(p) }
func (h *upgrader) Write(p []byte) (int, error) { h.resp = append(h.resp, p...); return len(p), nil }

func (h *upgrader) onRequest(uri []byte) error {
	h.ex.URI(uri)
	path := uri
	if i := bytes.IndexByte(uri, '?'); i >= 0 {
		path = uri[:i]
	}
	if string(path) != h.path {
		return errNotFound
	}
	return nil
}

func (h *upgrader) onHeader(key, value []byte) error {
	h.ex.Header(key, value)
	if h.origins != nil && bytes.EqualFold(key, []byte("Origin")) && !h.origins[string(value)] {
		return errOrigin
	}
	return nil
}

// requestEnd returns the length of the HTTP request at the start of b
// (through the blank line), or 0 if it has not all arrived. from is where the
// previous search stopped, so a request arriving byte by byte is not rescanned.
func requestEnd(b []byte, from int) int {
	from = max(from-3, 0)
	if i := bytes.Index(b[from:], []byte("\r\n\r\n")); i >= 0 {
		return from + i + 4
	}
	return 0
}

// upgrade runs the handshake on exactly the request bytes. It returns the
// response to write (a 101 or an HTTP error) and whether the upgrade
// succeeded. The response aliases the upgrader's buffer until the next call.
func (h *upgrader) upgrade(request []byte) (resp []byte, hs ws.Handshake, err error) {
	h.req.Reset(request)
	h.resp = h.resp[:0]
	h.protocol, h.deflate = false, 0
	h.ex.Reset()
	h.identity, h.refusal, h.counted = auth.Identity{}, 0, false
	hs, err = h.u.Upgrade(h)
	return h.resp, hs, err
}

// httpError formats a minimal HTTP error response with a short body, for
// refusals the Upgrader does not produce itself.
func httpError(code int, body string) []byte {
	b := make([]byte, 0, 128+len(body))
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(code)...)
	b = append(b, "\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)+1), 10)
	b = append(b, "\r\n\r\n"...)
	b = append(b, body...)
	return append(b, '\n')
}

var _ io.ReadWriter = (*upgrader)(nil)
