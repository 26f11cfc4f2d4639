package engine

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/wsedge/wsedge/broker"
	"github.com/wsedge/wsedge/ingest"
	"github.com/wsedge/wsedge/protocol"
)

// The HTTP API on the admin port (docs/API.md): the ingest socket's
// publish, broadcast, disconnect and presence for services that prefer
// HTTP, plus the node's channel list. Every request needs the header
// "Authorization: apikey <key>". Handlers run on net/http's goroutines,
// one per admin connection, and the admin listener caps those at 32;
// a publish takes the same path as an ingest one (admission, broker
// publish, the broker's handler), and it may block its goroutine on a
// broker that blocks.

// apiRoutes returns the API's routes for metrics.StartAdmin, or nil when
// no API key is configured (the API is off).
func (s *Server) apiRoutes() func(*http.ServeMux) {
	key := s.cfg.Ingest.APIKey
	if f := s.cfg.Ingest.APIKeyFile; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			s.log.Error("api key file: the HTTP API is off", "err", err)
			return nil
		}
		key = strings.TrimSpace(string(b))
	}
	if key == "" {
		return nil
	}
	a := &api{s: s, key: []byte(key), maxPayload: s.cfg.Ingest.payloadLimit(s.cfg.MaxMessage)}
	return func(mux *http.ServeMux) {
		mux.HandleFunc("POST /api/publish", a.guard(a.publish))
		mux.HandleFunc("POST /api/broadcast", a.guard(a.broadcast))
		mux.HandleFunc("POST /api/disconnect", a.guard(a.disconnect))
		mux.HandleFunc("POST /api/unsubscribe", a.guard(a.unsubscribe))
		mux.HandleFunc("GET /api/presence", a.guard(a.presence))
		mux.HandleFunc("GET /api/channels", a.guard(a.channels))
		mux.HandleFunc("/api/", a.guard(func(w http.ResponseWriter, _ *http.Request) {
			apiError(w, http.StatusNotFound, "no such endpoint or method (see docs/API.md)")
		}))
	}
}

type api struct {
	s          *Server
	key        []byte
	maxPayload int
}

// guard checks the API key (in constant time) and caps the body.
func (a *api) guard(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "apikey ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), a.key) != 1 {
			w.Header().Set("WWW-Authenticate", "apikey")
			apiError(w, http.StatusUnauthorized, "missing or wrong API key (Authorization: apikey <key>)")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, int64(a.maxPayload)+64<<10)
		h(w, r)
	}
}

func apiError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": status, "message": msg}})
}

func apiOK(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// decode reads a JSON body into v; false: answered with 400 or 413.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			apiError(w, http.StatusRequestEntityTooLarge, "body too large")
			return false
		}
		apiError(w, http.StatusBadRequest, "bad JSON body: "+err.Error())
		return false
	}
	return true
}

// codeStatus maps an ingest error code to an HTTP status.
func codeStatus(c ingest.Code) int {
	switch c {
	case ingest.CodeUnknownNamespace, ingest.CodeNotFound:
		return http.StatusNotFound
	case ingest.CodePayloadTooLarge:
		return http.StatusRequestEntityTooLarge
	case ingest.CodeOverloaded, ingest.CodeUnavailable, ingest.CodeShuttingDown:
		return http.StatusServiceUnavailable
	case ingest.CodeInProgress:
		return http.StatusConflict
	}
	return http.StatusBadRequest
}

type publishBody struct {
	Channel        string          `json:"channel"`
	Channels       []string        `json:"channels"`
	Namespace      string          `json:"namespace"`
	Data           json.RawMessage `json:"data"`
	IdempotencyKey string          `json:"idempotency_key"`
}

func (a *api) publish(w http.ResponseWriter, r *http.Request) {
	var b publishBody
	if !decode(w, r, &b) {
		return
	}
	if b.Channel == "" || len(b.Data) == 0 {
		apiError(w, http.StatusBadRequest, "channel and data are required")
		return
	}
	if len(b.IdempotencyKey) > ingest.MaxKey {
		apiError(w, http.StatusBadRequest, "idempotency_key over 64 bytes")
		return
	}
	pos, flags, code := a.s.publishOne(r.Context(), b.Channel, b.Data, []byte(b.IdempotencyKey), a.maxPayload)
	if code != 0 {
		apiError(w, codeStatus(code), code.String())
		return
	}
	apiOK(w, map[string]any{"offset": pos.Offset, "epoch": pos.Epoch, "duplicate": flags&ingest.AckDuplicate != 0})
}

// publishOne is a single publish from outside the WebSocket protocol (the
// HTTP API), on a goroutine that may block: admission (waiting up to
// OverloadWait for the channel's inboxes), idempotency, broker.Publish.
func (s *Server) publishOne(c context.Context, channel string, data, key []byte, maxPayload int) (broker.StreamPosition, byte, ingest.Code) {
	ns, code := s.checkPublication([]byte(channel), data, maxPayload)
	if code != 0 {
		return broker.StreamPosition{}, 0, code
	}
	deadline := time.Now().Add(s.cfg.Ingest.OverloadWait)
	for s.overloaded(channel) {
		if time.Now().After(deadline) || c.Err() != nil {
			s.m.OverloadRefused.Inc()
			return broker.StreamPosition{}, 0, ingest.CodeOverloaded
		}
		time.Sleep(time.Millisecond) // back-off of a blocked HTTP publisher
	}
	var k idemKey
	if len(key) > 0 {
		k = s.idem.key([]byte(channel), key)
		switch e, st := s.idem.reserve(k, time.Now()); st {
		case idemDone:
			return broker.StreamPosition{Offset: e.offset, Epoch: e.epoch}, ingest.AckDuplicate, 0
		case idemPending:
			return broker.StreamPosition{}, 0, ingest.CodeInProgress
		}
	}
	bc, cancel := context.WithTimeout(c, brokerCallTimeout)
	defer cancel()
	pos, err := s.broker.Publish(bc, channel, data, broker.PublishOptions{HistorySize: ns.HistorySize, HistoryTTL: ns.HistoryTTL})
	if err != nil {
		if len(key) > 0 {
			s.idem.cancel(k)
		}
		s.log.Warn("api publish", "channel", channel, "err", err)
		return broker.StreamPosition{}, 0, ingest.CodeUnavailable
	}
	if len(key) > 0 {
		s.idem.complete(k, pos.Offset, pos.Epoch)
	}
	return pos, 0, 0
}

func (a *api) broadcast(w http.ResponseWriter, r *http.Request) {
	var b publishBody
	if !decode(w, r, &b) {
		return
	}
	chans := b.Channels
	switch {
	case len(b.Data) == 0 || (len(chans) == 0) == (b.Namespace == ""):
		apiError(w, http.StatusBadRequest, "data and either channels or namespace are required")
		return
	case len(chans) > ingest.MaxChannels:
		apiError(w, http.StatusBadRequest, fmt.Sprintf("more than %d channels", ingest.MaxChannels))
		return
	case b.Namespace != "":
		if a.s.ns[b.Namespace] == nil {
			apiError(w, http.StatusNotFound, ingest.CodeUnknownNamespace.String())
			return
		}
		chans = a.s.hub.AppendChannels(nil, b.Namespace+":")
	}
	for _, ch := range chans {
		if _, code := a.s.checkPublication([]byte(ch), b.Data, a.maxPayload); code != 0 {
			apiError(w, codeStatus(code), ch+": "+code.String())
			return
		}
	}
	n := 0
	for _, ch := range chans {
		if _, _, code := a.s.publishOne(r.Context(), ch, b.Data, nil, a.maxPayload); code != 0 {
			apiError(w, codeStatus(code), fmt.Sprintf("%s: %s (%d channels published before it)", ch, code, n))
			return
		}
		n++
	}
	apiOK(w, map[string]any{"published": n})
}

type userBody struct {
	User    string `json:"user"`
	Channel string `json:"channel"`
	Code    int    `json:"code"`
	Reason  string `json:"reason"`
}

func (a *api) disconnect(w http.ResponseWriter, r *http.Request) {
	var b userBody
	if !decode(w, r, &b) {
		return
	}
	code := protocol.DisconnectForced
	switch {
	case b.User == "" || len(b.User) > ingest.MaxUser:
		apiError(w, http.StatusBadRequest, "user is required (at most 255 bytes)")
		return
	case b.Code != 0 && (b.Code < 4000 || b.Code > 4999):
		apiError(w, http.StatusBadRequest, "code must be in 4000..4999")
		return
	case len(b.Reason) > ingest.MaxReason:
		apiError(w, http.StatusBadRequest, "reason over 123 bytes")
		return
	case b.Code != 0:
		code = protocol.DisconnectCode(b.Code)
	}
	if b.Reason == "" {
		b.Reason = "disconnected by the application"
	}
	a.s.disconnectUser(b.User, code, b.Reason)
	apiOK(w, map[string]any{"ok": true})
}

func (a *api) unsubscribe(w http.ResponseWriter, r *http.Request) {
	var b userBody
	if !decode(w, r, &b) {
		return
	}
	if _, _, err := protocol.ParseChannel([]byte(b.Channel)); err != nil || b.User == "" {
		apiError(w, http.StatusBadRequest, "user and a valid channel are required")
		return
	}
	a.s.unsubscribeUser(b.User, b.Channel)
	apiOK(w, map[string]any{"ok": true})
}

func (a *api) presence(w http.ResponseWriter, r *http.Request) {
	ch := r.URL.Query().Get("channel")
	name, _, err := protocol.ParseChannel([]byte(ch))
	if err != nil {
		apiError(w, http.StatusBadRequest, "channel= is missing or not ns:name")
		return
	}
	ns := a.s.ns[string(name)]
	if ns == nil || !ns.Presence {
		apiError(w, http.StatusNotFound, "unknown namespace or presence off")
		return
	}
	c, cancel := context.WithTimeout(r.Context(), brokerCallTimeout)
	defer cancel()
	members, err := a.s.presence.Presence(c, ch)
	if err != nil {
		apiError(w, http.StatusServiceUnavailable, ingest.CodeUnavailable.String())
		return
	}
	type member struct {
		Client string          `json:"client"`
		User   string          `json:"user"`
		Info   json.RawMessage `json:"info,omitempty"`
	}
	out := make([]member, 0, len(members))
	for _, m := range members {
		out = append(out, member{m.ClientID, m.UserID, m.Info})
	}
	apiOK(w, map[string]any{"channel": ch, "clients": out})
}

func (a *api) channels(w http.ResponseWriter, r *http.Request) {
	chans := a.s.hub.AppendChannels([]string{}, r.URL.Query().Get("prefix"))
	apiOK(w, map[string]any{"channels": chans})
}
