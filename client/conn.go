package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// Subprotocol is the protocol the client speaks.
const Subprotocol = "wsedge.v1.json"

// wsConn is one WebSocket connection. Its reader goroutine owns br; writes
// from any goroutine take wmu. calls (the commands waiting for a reply) is
// guarded by the Client's mu.
type wsConn struct {
	nc    net.Conn
	br    *bufio.Reader
	wmu   sync.Mutex
	fmu   sync.Mutex // one flusher of the offline queue at a time
	calls map[uint64]*call
	// channels the server subscribed itself (the token's subs claim), with
	// the position its subscribed push named; guarded by the Client's mu
	serverSubs map[string]Position
	gen        uint64
	heard      atomic.Int64 // unix nanoseconds of the last frame received
	done       chan struct{}
	// set by the reader before done closes
	disc   *DisconnectError
	err    error
	closed atomic.Bool
}

// dial opens one connection: TCP, then the upgrade with the subprotocol
// and the token.
func (c *Client) dial(ctx context.Context) (*wsConn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.o.dialTimeout)
	defer cancel()
	h := http.Header{}
	for k, v := range c.o.header {
		h[k] = v
	}
	if c.o.token != nil {
		tok, err := c.o.token(ctx)
		if err != nil {
			return nil, errorf("token: %w", err)
		}
		h.Set("Authorization", "Bearer "+tok)
	}
	var status int
	d := ws.Dialer{
		Protocols:     []string{Subprotocol},
		Header:        ws.HandshakeHeaderHTTP(h),
		NetDial:       c.o.netDial,
		Timeout:       c.o.dialTimeout,
		OnStatusError: func(s int, _ []byte, _ io.Reader) { status = s },
	}
	nc, br, hs, err := d.Dial(ctx, c.url)
	if err != nil {
		switch status {
		case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
			return nil, errors.Join(ErrRefused, err)
		}
		return nil, err
	}
	if hs.Protocol != Subprotocol {
		nc.Close()
		return nil, errors.Join(ErrRefused, errorf("server chose subprotocol %q, want %q", hs.Protocol, Subprotocol))
	}
	if br == nil {
		br = bufio.NewReaderSize(nc, 4096)
	}
	cn := &wsConn{nc: nc, br: br, calls: map[uint64]*call{}, done: make(chan struct{})}
	cn.heard.Store(time.Now().UnixNano())
	return cn, nil
}

// write sends one text frame, masked as a client must. A failed write
// closes the connection: the reader sees it and the manager reconnects.
func (cn *wsConn) write(payload []byte, timeout time.Duration) error {
	var b bytes.Buffer
	f := ws.MaskFrameInPlace(ws.NewTextFrame(payload))
	if err := ws.WriteFrame(&b, f); err != nil {
		return err
	}
	return cn.writeRaw(b.Bytes(), timeout)
}

func (cn *wsConn) writeRaw(b []byte, timeout time.Duration) error {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	_ = cn.nc.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := cn.nc.Write(b); err != nil {
		cn.close()
		return err
	}
	return nil
}

// writeClose sends a close frame (best effort, short deadline).
func (cn *wsConn) writeClose(code ws.StatusCode) {
	var b bytes.Buffer
	f := ws.MaskFrameInPlace(ws.NewCloseFrame(ws.NewCloseFrameBody(code, "")))
	if ws.WriteFrame(&b, f) == nil {
		_ = cn.writeRaw(b.Bytes(), time.Second)
	}
}

func (cn *wsConn) close() {
	if cn.closed.CompareAndSwap(false, true) {
		cn.nc.Close()
	}
}

// errServerClosed ends a connection the server closed with a close frame.
var errServerClosed = errors.New("client: server closed the connection")

// readMessage returns the next text message, answering pings and
// gathering fragments; it fails on a close frame, a binary message or one
// over max bytes.
func (cn *wsConn) readMessage(max int) ([]byte, error) {
	var msg []byte
	for {
		h, err := ws.ReadHeader(cn.br)
		if err != nil {
			return nil, err
		}
		if h.Length > int64(max) || int64(len(msg))+h.Length > int64(max) {
			return nil, errorf("message over %d bytes", max)
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(cn.br, p); err != nil {
			return nil, err
		}
		if h.Masked {
			ws.Cipher(p, h.Mask, 0)
		}
		cn.heard.Store(time.Now().UnixNano())
		switch h.OpCode {
		case ws.OpPing:
			var b bytes.Buffer
			if ws.WriteFrame(&b, ws.MaskFrameInPlace(ws.NewPongFrame(p))) == nil {
				_ = cn.writeRaw(b.Bytes(), 5*time.Second)
			}
			continue
		case ws.OpPong:
			continue
		case ws.OpClose:
			code, _ := ws.ParseCloseFrameData(p)
			if code == 0 {
				code = ws.StatusNoStatusRcvd
			}
			cn.writeClose(code)
			return nil, errServerClosed
		case ws.OpBinary:
			return nil, errorf("binary message: the protocol is text only")
		case ws.OpText, ws.OpContinuation:
			msg = append(msg, p...)
			if h.Fin {
				return msg, nil
			}
		}
	}
}

// inbound is any message from the server (docs/PROTOCOL.md, "Messages at
// a glance"); which fields are set tells what it is.
type inbound struct {
	ID     *uint64         `json:"id"`
	OK     bool            `json:"ok"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`

	Channel *string         `json:"channel"`
	Offset  uint64          `json:"offset"`
	Data    json.RawMessage `json:"data"`

	Disconnect *struct {
		Code      int    `json:"code"`
		Reason    string `json:"reason"`
		Reconnect bool   `json:"reconnect"`
		Delay     int64  `json:"delay"`
	} `json:"disconnect"`
	Refresh *struct{} `json:"refresh"`
	Lagged  *struct {
		Channel string `json:"channel"`
		Offset  uint64 `json:"offset"`
	} `json:"lagged"`
	Reset *struct {
		Channel string `json:"channel"`
		Offset  uint64 `json:"offset"`
		Epoch   string `json:"epoch"`
	} `json:"reset"`
	Unsubscribed *struct {
		Channel string `json:"channel"`
	} `json:"unsubscribed"`
	Subscribed *struct {
		Channel string `json:"channel"`
		Offset  uint64 `json:"offset"`
		Epoch   string `json:"epoch"`
	} `json:"subscribed"`
}

// reply is a command's reply.
type reply struct {
	result json.RawMessage
	err    *Error
}

// result of subscribe, history and publish.
type result struct {
	Offset       uint64 `json:"offset"`
	Epoch        string `json:"epoch"`
	Recovered    *bool  `json:"recovered"`
	Publications []struct {
		Offset uint64          `json:"offset"`
		Data   json.RawMessage `json:"data"`
	} `json:"publications"`
}
