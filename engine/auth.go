package engine

import (
	"fmt"
	"hash/maphash"
	"net/http"
	"slices"
	"strings"
	"sync"

	vm "github.com/VictoriaMetrics/metrics"
	"github.com/gobwas/ws"

	"github.com/wsedge/wsedge/auth"
	"github.com/wsedge/wsedge/frame"
	"github.com/wsedge/wsedge/protocol"
)

// authState is the server's side of authentication: the verifier shared by
// the loops, the refusals by reason, and the per-user connection counts.
// nil verifier means --insecure-no-auth.
type authState struct {
	v         *auth.Verifier
	devSecret string // the development secret's path when it is the key in use
	refused   map[auth.Reason]*vm.Counter
	rejects   map[auth.Reason]error // the 401 each reason is answered with
	users     *userConns
	tooMany   error // the 429 for --max-conns-per-user
}

// newAuthState builds the verifier from the configuration. Without any key
// configured it uses the development secret (created on first use).
func newAuthState(cfg *Config, set *vm.Set) (*authState, error) {
	a := &authState{
		refused: make(map[auth.Reason]*vm.Counter),
		rejects: make(map[auth.Reason]error),
		tooMany: ws.RejectConnectionError(ws.RejectionStatus(http.StatusTooManyRequests),
			ws.RejectionReason("too many connections for this user")),
	}
	if cfg.MaxConnsPerUser > 0 {
		a.users = newUserConns(cfg.MaxConnsPerUser)
	}
	if cfg.InsecureNoAuth || cfg.Echo {
		return a, nil
	}
	for _, r := range auth.Reasons() {
		a.refused[r] = set.NewCounter(`wsedge_auth_refused_total{reason="` + r.Label() + `"}`)
		a.rejects[r] = ws.RejectConnectionError(ws.RejectionStatus(http.StatusUnauthorized),
			ws.RejectionReason(r.Text()))
	}
	ac := auth.DefaultConfig()
	ac.PEMFiles, ac.JWKS = cfg.AuthPEMFiles, cfg.AuthJWKS
	ac.Audience, ac.Issuer, ac.Leeway = cfg.AuthAudience, cfg.AuthIssuer, cfg.AuthLeeway
	switch {
	case cfg.AuthSecretFile != "":
		secret, err := auth.ReadSecretFile(cfg.AuthSecretFile)
		if err != nil {
			return nil, err
		}
		ac.HMACSecret = secret
	case len(cfg.AuthPEMFiles) == 0 && cfg.AuthJWKS == "":
		path, err := auth.DevSecretPath()
		if err != nil {
			return nil, fmt.Errorf("engine: no auth key configured and no development secret: %w", err)
		}
		secret, err := auth.DevSecret(path)
		if err != nil {
			return nil, err
		}
		ac.HMACSecret, a.devSecret = secret, path
	}
	v, err := auth.New(ac)
	if err != nil {
		return nil, err
	}
	a.v = v
	return a, nil
}

// verify authenticates one upgrade on a loop goroutine: the identity, or
// the refusal the Upgrader answers with and its reason for the log.
func (a *authState) verify(ex *auth.Extractor) (auth.Identity, auth.Reason, error) {
	if a.v == nil {
		return auth.Unrestricted(), 0, nil
	}
	tok, _ := ex.Token()
	id, err := a.v.Verify(tok)
	if err != nil {
		r := auth.ReasonOf(err)
		if c := a.refused[r]; c != nil {
			c.Inc()
		}
		if rej := a.rejects[r]; rej != nil {
			return id, r, rej
		}
		return id, r, a.rejects[auth.ReasonMalformed]
	}
	return id, 0, nil
}

func (a *authState) close() {
	if a.v != nil {
		a.v.Close()
	}
}

// userConns counts each user's connections on this node, for
// --max-conns-per-user. Loops call it concurrently; stripes keep them apart.
type userConns struct {
	max     int32
	seed    maphash.Seed
	stripes [64]struct {
		mu sync.Mutex
		m  map[string]int32
	}
}

func newUserConns(max int) *userConns {
	u := &userConns{max: int32(max), seed: maphash.MakeSeed()}
	for i := range u.stripes {
		u.stripes[i].m = make(map[string]int32)
	}
	return u
}

// acquire counts one more connection of user, unless it has max already.
func (u *userConns) acquire(user string) bool {
	st := &u.stripes[maphash.String(u.seed, user)%64]
	st.mu.Lock()
	defer st.mu.Unlock()
	n := st.m[user]
	if n >= u.max {
		return false
	}
	if n == 0 {
		user = strings.Clone(user)
	}
	st.m[user] = n + 1
	return true
}

func (u *userConns) release(user string) {
	st := &u.stripes[maphash.String(u.seed, user)%64]
	st.mu.Lock()
	defer st.mu.Unlock()
	if n := st.m[user]; n > 1 {
		st.m[user] = n - 1
	} else {
		delete(st.m, user)
	}
}

// openSession subscribes a protocol connection, right after its 101, to
// the channels its token names (the client is told with a subscribed push
// carrying each position).
func (l *loop) openSession(c *conn) {
	id := c.sess.id
	for i := range id.NumSubs() {
		ch := id.AppendSub(l.chBuf[:0], i)
		l.chBuf = ch
		ns := l.srv.nsOf(ch)
		if ns == nil {
			continue // a namespace the server does not serve: nothing to join
		}
		if err := l.serverSubscribe(c, ns, ch); err != nil {
			l.srv.log.Warn("token subscription", "channel", string(ch), "err", err)
		}
	}
}

// scheduleExpiry files the connection at its token's expiry (or the refresh
// deadline) if that comes before its heartbeat deadline.
func (l *loop) scheduleExpiry(c *conn) {
	if c.state != stateOpen || !c.inWheel {
		return
	}
	if due := l.authDue(c); due > 0 && due < c.due {
		l.wheel.reschedule(c, due)
	}
}

// authDue is the wheel tick at which the connection's token needs
// attention: its expiry, or the end of the refresh window once asked; 0
// if never.
func (l *loop) authDue(c *conn) int64 {
	sess := c.sess
	if sess == nil {
		return 0
	}
	if sess.refreshBy > 0 {
		return sess.refreshBy
	}
	exp := sess.id.ExpiresUnix()
	if exp == 0 {
		return 0
	}
	return l.srv.tickAt(exp)
}

// checkExpiry runs when the wheel fires for an open connection. It reports
// whether it closed the connection.
func (l *loop) checkExpiry(c *conn) (closed bool) {
	due := l.authDue(c)
	if due == 0 || due > l.wheel.now {
		return false
	}
	sess := c.sess
	if sess.refreshBy == 0 {
		// Expired: ask for a new token, and wait the refresh window.
		sess.refreshBy = l.wheel.now + l.refreshTicks
		c.writeFrame(frame.OpText, protocol.AppendRefreshPush(l.out[:0]))
		return c.state != stateOpen
	}
	l.tally.authExpired++
	c.disconnect(protocol.DisconnectTokenExpired, "token expired", frame.ClosePolicyViolation)
	return true
}

// refresh is the refresh op: a new token for the same user.
func (l *loop) refresh(c *conn) error {
	a := l.srv.auth
	if a.v == nil {
		return l.reply(c, protocol.AppendOK(l.out[:0], l.cmd.ID, nil), false)
	}
	sess := c.session()
	id, err := a.v.Verify(l.cmd.Token)
	if err != nil {
		return l.replyError(c, protocol.CodeUnauthorized, auth.ReasonOf(err).Text())
	}
	if id.Sub() != sess.id.Sub() {
		return l.replyError(c, protocol.CodeUnauthorized, "token is for another user")
	}
	sess.id, sess.refreshBy = id, 0
	// Subscriptions the new token no longer allows end here.
	for i := len(sess.subs) - 1; i >= 0; i-- {
		s := sess.subs[i]
		if !id.CanSubscribe([]byte(s.Channel())) {
			ch := s.Channel()
			sess.subs = slices.Delete(sess.subs, i, i+1)
			l.leave(s)
			if !c.writeFrame(frame.OpText, protocol.AppendUnsubscribedPush(l.out[:0], ch)) {
				return errStop
			}
		}
	}
	if err := l.reply(c, protocol.AppendOK(l.out[:0], l.cmd.ID, nil), false); err != nil {
		return err
	}
	l.wheel.reschedule(c, c.lastSeen+l.pingTicks)
	l.scheduleExpiry(c)
	return nil
}
