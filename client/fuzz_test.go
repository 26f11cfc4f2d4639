package client

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// streamConn is a net.Conn whose reads come from a fixed server stream
// and whose writes (pongs, close replies) are counted and dropped.
type streamConn struct {
	r       *bytes.Reader
	written int
}

func (s *streamConn) Read(p []byte) (int, error)       { return s.r.Read(p) }
func (s *streamConn) Write(p []byte) (int, error)      { s.written += len(p); return len(p), nil }
func (s *streamConn) Close() error                     { return nil }
func (s *streamConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (s *streamConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (s *streamConn) SetDeadline(time.Time) error      { return nil }
func (s *streamConn) SetReadDeadline(time.Time) error  { return nil }
func (s *streamConn) SetWriteDeadline(time.Time) error { return nil }

func serverFrame(op ws.OpCode, fin bool, p string) []byte {
	var b bytes.Buffer
	_ = ws.WriteFrame(&b, ws.Frame{Header: ws.Header{Fin: fin, OpCode: op, Length: int64(len(p))}, Payload: []byte(p)})
	return b.Bytes()
}

// FuzzClientRead feeds an arbitrary server byte stream, read in arbitrary
// chunks, to the client's reader and message handling. Properties: no
// panic; no message over the bound is ever returned and what the client
// buffers for one message stays within it (frames declaring more fail
// before anything is allocated for them); replies go to their calls only;
// each publication pushed is delivered at most once per offset.
func FuzzClientRead(f *testing.F) {
	seed := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	f.Add(seed(serverFrame(ws.OpText, true, `{"id":1,"ok":true,"result":{"offset":3,"epoch":"e"}}`),
		serverFrame(ws.OpText, true, `{"channel":"t:a","offset":4,"data":1}`),
		serverFrame(ws.OpText, true, `{"channel":"t:a","offset":4,"data":1}`)), uint8(7))
	f.Add(seed(serverFrame(ws.OpText, false, `{"chan`), serverFrame(ws.OpPing, true, "x"),
		serverFrame(ws.OpContinuation, true, `nel":"t:a","offset":9,"data":{}}`)), uint8(1))
	f.Add(seed(serverFrame(ws.OpText, true, `{"disconnect":{"code":4001,"reason":"shutdown","reconnect":true,"delay":250}}`),
		serverFrame(ws.OpClose, true, "\x03\xe9")), uint8(3))
	f.Add(seed(serverFrame(ws.OpText, true, `{"lagged":{"channel":"t:a","offset":2}}`), serverFrame(ws.OpText, true, `{"refresh":{}}`)), uint8(5))
	f.Add([]byte{0x81, 0x7f, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, uint8(2)) // declares 2^63-1 bytes
	const max = 4096
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		c := &Client{o: defaultOptions(), subs: map[string]*Subscription{}, refr: make(chan struct{}, 1)}
		c.o.maxMessage = max
		c.disp.init()
		sc := &streamConn{r: bytes.NewReader(stream)}
		cn := &wsConn{nc: sc, br: bufio.NewReaderSize(sc, 16+int(chunk)), calls: map[uint64]*call{}, gen: 1, done: make(chan struct{})}
		delivered := map[uint64]int{}
		s := &Subscription{c: c, channel: "t:a", gen: 1, hasPos: true, pos: Position{Offset: 0, Epoch: "e"},
			ready: make(chan struct{}), handler: func(p Publication) {
				if p.Offset > 0 {
					delivered[p.Offset]++
				}
			}}
		c.subs["t:a"] = s
		answered := 0
		cn.calls[1] = &call{id: 1, fn: func(*reply, error) { answered++ }}
		for i := 0; i < 1000; i++ {
			msg, err := cn.readMessage(max)
			if err != nil {
				break
			}
			if len(msg) > max {
				t.Fatalf("message of %d bytes over the bound %d", len(msg), max)
			}
			var in inbound
			if json.Unmarshal(msg, &in) != nil {
				break
			}
			if !c.handle(cn, &in) {
				break
			}
		}
		if answered > 1 {
			t.Fatalf("call answered %d times", answered)
		}
		for _, fn := range c.disp.q {
			fn()
		}
		for off, n := range delivered {
			if n > 1 {
				t.Fatalf("offset %d delivered %d times", off, n)
			}
		}
	})
}
