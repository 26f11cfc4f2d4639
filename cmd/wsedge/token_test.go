package main

import (
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestTokenAgainstDefaultServe is the two-command start of the README: a
// default `wsedge serve` (development secret) accepts what `wsedge token`
// mints on the same machine, and refuses a connection without a token.
func TestTokenAgainstDefaultServe(t *testing.T) {
	t.Setenv("WSEDGE_DEV_SECRET_FILE", filepath.Join(t.TempDir(), "dev-secret"))
	// --auth-leeway 0s keeps startServe from adding --insecure-no-auth.
	p := startServe(t, "", "--auth-leeway", "0s")
	warn := p.line("auth: no key configured, tokens are checked against the development secret; do not use it in production")
	if warn == nil || warn["mint_a_token"] == nil {
		t.Fatalf("no development-secret warning with a mint command: %v", p.log())
	}
	out, err := exec.Command(binPath, "token", "--sub", "alice", "--channels", "chat:*", "--publish", "chat:*", "--ttl", "1m").Output()
	if err != nil {
		t.Fatalf("wsedge token: %v", err)
	}
	tok := strings.TrimSpace(string(out))

	d := websocket.Dialer{Subprotocols: []string{"wsedge.v1.json"}, HandshakeTimeout: 5 * time.Second}
	if _, resp, err := d.Dial("ws://"+p.ws+"/ws", nil); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without a token: %v %v, want 401", resp, err)
	}
	// A browser puts the token in the subprotocol list.
	d.Subprotocols = []string{"wsedge.v1.json", "token." + tok}
	ws, resp, err := d.Dial("ws://"+p.ws+"/ws", nil)
	if err != nil {
		t.Fatalf("with the token: %v %v", resp, err)
	}
	defer ws.Close()
	if ws.Subprotocol() != "wsedge.v1.json" {
		t.Fatalf("subprotocol %q", ws.Subprotocol())
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"op":"publish","channel":"chat:x","data":1}`)); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := ws.ReadMessage(); err != nil || !strings.Contains(string(msg), `"ok":true`) {
		t.Fatalf("publish: %s %v", msg, err)
	}
}
