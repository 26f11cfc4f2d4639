// Command chat is wsedge's chat example: a static server for a chat page
// built on the browser client (client/js/wsedge.js), plus the one thing a
// real application backend must do for it, minting tokens.
//
//	wsedge serve &                      # ws://127.0.0.1:8080/ws, dev secret
//	go run ./examples/chat              # http://127.0.0.1:8000/
//
// The page asks /token?user=<name> for a token (here signed with the
// development secret that `wsedge serve` checks by default; --secret-file
// names another) and connects to --ws with it. This server never touches
// the WebSocket port.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/wsedge/wsedge/auth"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8000", "address of the page")
	ws := flag.String("ws", "ws://127.0.0.1:8080/ws", "wsedge's WebSocket URL, as the browser reaches it")
	secretFile := flag.String("secret-file", "", "HS256 secret the server checks (default: the development secret)")
	flag.Parse()
	secret, err := loadSecret(*secretFile)
	if err != nil {
		log.Fatal(err)
	}
	h, err := newHandler(sourceDir(), *ws, secret)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("chat example on http://%s/ (wsedge at %s)", *listen, *ws)
	srv := &http.Server{Addr: *listen, Handler: h, ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}

func loadSecret(path string) ([]byte, error) {
	if path != "" {
		return auth.ReadSecretFile(path)
	}
	p, err := auth.DevSecretPath()
	if err != nil {
		return nil, err
	}
	return auth.DevSecret(p)
}

// sourceDir is examples/chat in the source tree, where static/ is.
func sourceDir() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "."
	}
	return filepath.Dir(file)
}

// newHandler serves the page (static/), the client module from
// client/js, the WebSocket URL as config.json, and tokens.
func newHandler(dir, wsURL string, secret []byte) (http.Handler, error) {
	key, err := auth.HMACKey(secret, "")
	if err != nil {
		return nil, err
	}
	clientJS := filepath.Join(dir, "..", "..", "client", "js", "wsedge.js")
	if _, err := os.Stat(clientJS); err != nil {
		return nil, fmt.Errorf("client module: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/", http.FileServer(http.Dir(filepath.Join(dir, "static"))))
	mux.HandleFunc("/wsedge.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		http.ServeFile(w, r, clientJS)
	})
	mux.HandleFunc("/config.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, "{\"ws\":%q}\n", wsURL)
	})
	// A real application checks who is asking (its session cookie) before
	// it signs; the example trusts the name it is given.
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		user := r.URL.Query().Get("user")
		if user == "" || len(user) > 64 {
			http.Error(w, "user: 1 to 64 characters", http.StatusBadRequest)
			return
		}
		info := fmt.Appendf(nil, "{\"name\":%q}", user)
		tok, err := auth.Mint(key, auth.Claims{Sub: user, Channels: []string{"chat:*"}, Publish: []string{"chat:*"}, Info: info}, 10*time.Minute)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Cache-Control", "no-store")
		fmt.Fprintln(w, tok)
	})
	return mux, nil
}
