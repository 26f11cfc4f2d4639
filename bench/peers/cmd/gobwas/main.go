// Command gobwas is the gobwas/ws peer in its simple form: one goroutine per
// connection doing blocking reads with wsutil, writes under a mutex.
package main

import (
	"bufio"
	"io"
	"net"
	"sync"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/wsedge/wsedge/bench/peers/internal/peer"
)

type conn struct {
	mu sync.Mutex
	c  net.Conn
}

func (c *conn) Send(msg []byte) { c.write(ws.OpText, msg) }

func (c *conn) write(op ws.OpCode, msg []byte) {
	c.mu.Lock()
	_ = wsutil.WriteServerMessage(c.c, op, msg)
	c.mu.Unlock()
}

func main() {
	f := peer.ParseFlags("gobwas")
	hub := peer.NewHub()
	ln, err := net.Listen("tcp", f.Listen)
	if err != nil {
		peer.Fatal(err)
	}
	admin, err := peer.ServeAdmin(f.Admin)
	if err != nil {
		peer.Fatal(err)
	}
	up := ws.Upgrader{
		OnRequest: func(uri []byte) error {
			if string(uri) != "/ws" {
				return ws.RejectConnectionError(ws.RejectionStatus(404))
			}
			return nil
		},
		Protocol: func(p []byte) bool { return string(p) == peer.Subprotocol },
	}
	peer.Listening("gobwas", ln.Addr().String(), admin, f.Echo)
	for {
		nc, err := ln.Accept()
		if err != nil {
			peer.Fatal(err)
		}
		go func() {
			defer nc.Close()
			if _, err := up.Upgrade(nc); err != nil {
				return
			}
			c := &conn{c: nc}
			defer hub.Remove(c)
			// A small buffered reader keeps per-connection memory low; gobwas'
			// own examples read straight from the net.Conn the same way.
			rd := bufio.NewReaderSize(nc, 512)
			rw := struct {
				io.Reader
				io.Writer
			}{rd, nc}
			for {
				msg, op, err := wsutil.ReadClientData(rw)
				if err != nil {
					return
				}
				if f.Echo {
					c.write(op, msg)
				} else {
					hub.Handle(c, msg)
				}
			}
		}()
	}
}
