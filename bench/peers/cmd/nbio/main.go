// Command nbio is the lesismal/nbio peer: event-driven (nbhttp engine with
// its websocket upgrader), no goroutine per connection.
package main

import (
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"time"

	"github.com/lesismal/nbio/nbhttp"
	"github.com/lesismal/nbio/nbhttp/websocket"

	"github.com/wsedge/wsedge/bench/peers/internal/peer"
)

type conn struct{ ws *websocket.Conn }

func (c conn) Send(msg []byte) { _ = c.ws.WriteMessage(websocket.TextMessage, msg) }

func main() {
	f := peer.ParseFlags("nbio")
	hub := peer.NewHub()
	up := websocket.NewUpgrader()
	up.Subprotocols = []string{peer.Subprotocol}
	up.CheckOrigin = func(*http.Request) bool { return true }
	up.KeepaliveTime = time.Hour // idle runs hold connections without traffic
	up.OnMessage(func(c *websocket.Conn, mt websocket.MessageType, data []byte) {
		if f.Echo {
			_ = c.WriteMessage(mt, data)
			return
		}
		hub.Handle(conn{c}, data)
	})
	up.OnClose(func(c *websocket.Conn, _ error) {
		if !f.Echo {
			hub.Remove(conn{c})
		}
	})
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		_, _ = up.Upgrade(w, r, nil)
	})
	addrc := make(chan string, 1)
	engine := nbhttp.NewEngine(nbhttp.Config{
		Network: "tcp",
		Addrs:   []string{f.Listen},
		NPoller: runtime.GOMAXPROCS(0),
		Handler: mux,
		Listen: func(network, addr string) (net.Listener, error) {
			ln, err := net.Listen(network, addr)
			if err == nil {
				addrc <- ln.Addr().String()
			}
			return ln, err
		},
		ReleaseWebsocketPayload: true,
	})
	if err := engine.Start(); err != nil {
		peer.Fatal(err)
	}
	admin, err := peer.ServeAdmin(f.Admin)
	if err != nil {
		peer.Fatal(err)
	}
	peer.Listening("nbio", <-addrc, admin, f.Echo)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	<-sig
	engine.Stop()
}
