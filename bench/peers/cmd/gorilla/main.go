// Command gorilla is the gorilla/websocket peer: one goroutine per
// connection reading, writes serialised by a per-connection mutex.
package main

import (
	"net"
	"net/http"
	"sync"

	"github.com/gorilla/websocket"

	"github.com/wsedge/wsedge/bench/peers/internal/peer"
)

type conn struct {
	mu sync.Mutex
	ws *websocket.Conn
}

func (c *conn) Send(msg []byte) { c.write(websocket.TextMessage, msg) }

func (c *conn) write(mt int, msg []byte) {
	c.mu.Lock()
	_ = c.ws.WriteMessage(mt, msg)
	c.mu.Unlock()
}

func main() {
	f := peer.ParseFlags("gorilla")
	hub := peer.NewHub()
	up := websocket.Upgrader{
		ReadBufferSize:  4096,
		WriteBufferSize: 4096,
		Subprotocols:    []string{peer.Subprotocol},
		CheckOrigin:     func(*http.Request) bool { return true },
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c := &conn{ws: ws}
		defer func() {
			hub.Remove(c)
			ws.Close()
		}()
		for {
			mt, msg, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if f.Echo {
				c.write(mt, msg)
			} else {
				hub.Handle(c, msg)
			}
		}
	})
	ln, err := net.Listen("tcp", f.Listen)
	if err != nil {
		peer.Fatal(err)
	}
	admin, err := peer.ServeAdmin(f.Admin)
	if err != nil {
		peer.Fatal(err)
	}
	peer.Listening("gorilla", ln.Addr().String(), admin, f.Echo)
	peer.Fatal(http.Serve(ln, mux))
}
