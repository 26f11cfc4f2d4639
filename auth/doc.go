// Package auth authenticates WebSocket clients with JSON Web Tokens and
// says what each one may do. It owns token verification (with
// github.com/golang-jwt/jwt/v5: HS256, RS256, ES256, EdDSA), the keys
// (an HMAC secret, PEM files, a JWKS file or URL kept fresh in the
// background), the claims-to-permissions mapping with its channel
// patterns, token extraction from an upgrade request, minting for `wsedge
// token` and tests, and the development secret. It imports nothing of the
// project but protocol (channel name rules).
//
// The engine builds one Verifier at startup and shares it between its event
// loops: Verify runs on a loop goroutine during the HTTP upgrade and never
// blocks (JWKS reloads happen on the Verifier's one service goroutine). The
// Identity it returns is a 32-byte immutable value the connection keeps;
// its permission checks run on the loop, do not allocate and take no lock.
//
// # What the engine calls, and where
//
//   - Startup: cfg := auth.DefaultConfig(), set keys (HMACSecret from
//     auth.DevSecret(auth.DevSecretPath()) in the default configuration,
//     or PEMFiles, JWKS, Audience, Issuer, Leeway from flags), then
//     v, err := auth.New(cfg); v.Close() at shutdown. Create the metric
//     series from auth.Reasons() (Reason.Label) and export v.Stats().
//     With --insecure-no-auth there is no Verifier: every connection gets
//     auth.Unrestricted().
//   - Upgrade (per loop, one auth.Extractor reused): Reset it per request;
//     in OnRequest call URI(uri); in OnHeader call Header(key, value);
//     replace the Upgrader's Protocol callback by ProtocolCustom calling
//     ProtocolHeader(value, "wsedge.v1.json"), which sees every entry
//     (gobwas' Protocol stops at the first selected one, and browsers send
//     the token after the protocol) and never selects the token entry, so
//     it is never echoed. gobwas stops calling ProtocolCustom once a
//     protocol is selected, so a token in a later Sec-WebSocket-Protocol
//     header line is not seen; browsers send one line. In
//     OnBeforeUpgrade: tok, _ := e.Token(); id, err :=
//     v.Verify(tok). On error answer 401 with auth.ReasonOf(err).Text() as
//     the body, count ReasonOf(err).Label(), log err at debug (it never
//     contains the token). No token at all is ReasonMissing. Nothing of the
//     protocol runs before this succeeds.
//   - Open: keep id in the connection; subscribe it to id.AppendSub(buf, i)
//     for i < id.NumSubs() (each already checked against CanSubscribe);
//     schedule the refresh push at id.Expires().
//   - Commands: subscribe, history and presence need id.CanSubscribe(ch);
//     publish needs id.CanPublish(ch) and the namespace's client-publish
//     option; denied is a 403 reply. Presence shows id.Sub() and
//     id.Info() (compact JSON, "" if none).
//   - refresh op: v.Verify(newToken); refuse it unless the new Sub() equals
//     the old; replace the Identity, reschedule the expiry, and drop the
//     subscriptions the new identity may no longer read.
//
// # Keys and algorithms
//
// Every key carries one algorithm: an HMAC secret is HS256, an RSA key
// (2048 bits or more) RS256, a P-256 key ES256, an Ed25519 key EdDSA; JWKS
// entries for other algorithms or uses are skipped. A token's alg must be
// the algorithm of the key that verifies it (no RS256/HS256 confusion),
// and alg "none" is always refused (jwt.WithValidMethods). A token with a
// kid is verified by the key with that kid; a token without one, or with a
// kid no key has, by the keys without kid of its algorithm (the HMAC secret
// and PEM keys have none). Keys from the configuration win over JWKS keys
// with the same kid.
//
// A JWKS is loaded by New (a failure is a startup error), reloaded every
// JWKSRefresh (5 min), and reloaded when a token names an unknown kid, but
// at most once per JWKSMinInterval (30 s), so made-up kids cannot make a
// node fetch on every handshake. That reload runs in the background: the
// token that triggered it is refused (unknown_kid) and its client's retry
// succeeds. A failed or invalid reload keeps the keys in use. Issuers
// should publish a new key before signing with it, as usual with JWKS.
//
// # Refusals
//
// Verify returns an *Error with one Reason: missing, malformed, alg_none,
// alg_mismatch, unknown_kid, bad_signature, expired, not_yet_valid,
// audience, issuer, missing_sub, missing_exp, bad_claims (Reason.Label,
// stable; Reason.Text is the short body). Claims are judged only after the
// signature verifies, so a forged token is bad_signature whatever its claims
// say (a payload that is not a JSON object is malformed either way). When
// the library reports several claim failures the first of bad_claims,
// missing_exp, expired, not_yet_valid, audience, issuer wins.
//
// # Claims
//
//   - sub (string, required, 1 to 250 bytes of UTF-8 without control
//     characters): the user id.
//   - exp (number, required): expiry; nbf honoured; iat read, not checked.
//     Leeway widens both. aud must contain Config.Audience and iss equal
//     Config.Issuer when those are set.
//   - channels (array of patterns): what the user may read (subscribe,
//     history, presence). Absent: nothing.
//   - publish (array of patterns): what the user may publish to. Absent:
//     nothing.
//   - subs (array of channels, {sub} allowed, no '*'): channels the server
//     subscribes the connection to at open. Each entry also grants its own
//     read; an entry the user could not read anyway (another user's
//     personal channel, an invalid name) refuses the token (bad_claims).
//   - info (any JSON): shown in presence, stored compact, at most MaxInfo
//     (1 KiB) bytes and valid UTF-8.
//
// A claim of the wrong type, one that appears twice, a list over
// MaxPatterns (64) entries, an entry over 255 bytes, a string with an
// unpaired surrogate escape (JSON decoders read those differently, and the
// issuer and wsedge must agree on who the user is), or a pattern that does
// not compile refuses the token (bad_claims); nothing is cut or ignored.
// null is absence. Other claims are ignored.
//
// # Patterns
//
// A pattern is "namespace:name" with the channel-name rules of
// protocol.ParseChannel (namespace 1 to 32 bytes of [a-z0-9_-], name of
// printable ASCII 0x21-0x7E, at most 255 bytes in all), plus:
//
//   - '*' may appear only as the last byte. It matches any suffix, empty or
//     not, colons included: "chat:*" matches "chat:a" and "chat:a:b". The
//     namespace is fixed by the pattern's own text up to its first colon,
//     so "chat:*" never matches "chat-admin:x", "chatx:y" or "cha:t", and
//     there is no pattern for all namespaces ("*:*" is refused).
//   - "{sub}" in the name stands for the user id, compared byte for byte: a
//     '*' or ':' in a user id is a literal character, never a wildcard and
//     never a namespace boundary. "user:{sub}" for user "a*" matches only
//     "user:a*". A '*' right after {sub} extends the id ("dm:{sub}*" for
//     "al" matches "dm:alice"): write "dm:{sub}:*" for channels under the
//     user's own prefix. With ids that contain ':' such prefixes can
//     overlap ("dm:{sub}:*" for user "a" also covers user "a:x"'s
//     "dm:a:x:y"); the personal namespace is protected by the next rule.
//   - Personal channels: "user:<x>" is readable only by the user whose id
//     is exactly x, whatever the patterns say ("user:*" lets each user read
//     their own channel and nobody else's). The owner still needs a
//     pattern or subs entry that matches it. Publishing follows the publish
//     patterns alone.
//   - A channel name that protocol.ParseChannel refuses is never allowed.
//
// Patterns are compiled once, at verification, into a set shared by every
// identity whose token had the same channels, publish and subs claims
// (interned by their raw text, at most 4096 sets and 4 MiB; a full table
// starts over). {sub} is resolved at match time, which is what lets users
// share a set.
//
// # Token extraction
//
// BearerToken, SubprotocolToken and QueryToken are pure functions over the
// request's bytes; Extractor applies them during the upgrade callbacks
// (ProtocolHeader for a whole Sec-WebSocket-Protocol value).
// When a request carries several tokens, the Authorization header wins,
// then the "token.<jwt>" subprotocol entry, then ?token= (which proxies
// log: the last resort); within one source the first wins.
//
// # Development secret
//
// DevSecretPath is $WSEDGE_DEV_SECRET_FILE, else
// $XDG_CONFIG_HOME/wsedge/dev-secret, else ~/.config/wsedge/dev-secret.
// DevSecret reads it or creates it (0600, 64 hex digits of 32 random
// bytes; written to a temporary file and hard-linked into place so that
// concurrent first users agree and nobody reads a partial file). The
// HMAC secret is the file's text, so `wsedge serve` with the default
// configuration and `wsedge token` without a key flag agree on one machine.
//
// # Costs and bounds
//
// An Identity is 32 bytes plus one heap string of len(sub) + len(info)
// rounded up to a size class (64 bytes in all for an 11-byte id and a
// 16-byte info, measured by TestIdentityBytes); its permission set is
// shared. A token is at most MaxTokenLen (8 KiB); with the caps above a
// Verify call holds a bounded amount of memory (the token's decoded
// segments, at most 3 × 64 pattern slices and 1 KiB of info in pooled
// buffers). Beyond golang-jwt's own allocations (about 30 for an HS256
// token: header map, segments, HMAC state), Verify allocates the token
// string and the Identity's string. BenchmarkVerify gives the cost per
// algorithm.
package auth
