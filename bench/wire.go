package bench

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"strconv"
	"strings"

	"github.com/gobwas/ws"

	"github.com/wsedge/wsedge/frame"
)

// Client side of RFC 6455, reduced to what the load generator needs: build
// an upgrade request, check the 101 response, write masked frames, and parse
// the server's unmasked frames in place.

const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xa

	// maxResponseHeader caps the upgrade response the client waits for.
	maxResponseHeader = 8 << 10
)

var websocketGUID = []byte("258EAFA5-E914-47DA-95CA-C5AB0DC85B11")

// appendUpgradeRequest appends an HTTP/1.1 upgrade request to dst. key is the
// 24-byte base64 Sec-WebSocket-Key. subprotocol, when set, is offered; a
// token, when set, goes where in says (TokenIn*; a JWT needs no escaping in
// a query).
func appendUpgradeRequest(dst []byte, host, path string, key []byte, subprotocol string, token []byte, in string) []byte {
	dst = append(dst, "GET "...)
	dst = append(dst, path...)
	if len(token) > 0 && in == TokenInQuery {
		if strings.IndexByte(path, '?') >= 0 {
			dst = append(dst, "&token="...)
		} else {
			dst = append(dst, "?token="...)
		}
		dst = append(dst, token...)
	}
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, host...)
	dst = append(dst, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "...)
	dst = append(dst, key...)
	inProto := len(token) > 0 && in == TokenInSubprotocol
	if subprotocol != "" || inProto {
		dst = append(dst, "\r\nSec-WebSocket-Protocol: "...)
		dst = append(dst, subprotocol...)
		if inProto {
			if subprotocol != "" {
				dst = append(dst, ", "...)
			}
			dst = append(dst, "token."...)
			dst = append(dst, token...)
		}
	}
	if len(token) > 0 && (in == TokenInHeader || in == "") {
		dst = append(dst, "\r\nAuthorization: Bearer "...)
		dst = append(dst, token...)
	}
	return append(dst, "\r\n\r\n"...)
}

// newKey fills key (24 bytes) with the base64 form of 16 pseudo-random bytes.
func newKey(key []byte, rng *uint64) {
	var raw [16]byte
	binary.LittleEndian.PutUint64(raw[:8], nextRand(rng))
	binary.LittleEndian.PutUint64(raw[8:], nextRand(rng))
	base64.StdEncoding.Encode(key, raw[:])
}

// acceptFor returns the Sec-WebSocket-Accept value a server must send for key.
func acceptFor(key []byte) []byte {
	h := sha1.New()
	h.Write(key)
	h.Write(websocketGUID)
	out := make([]byte, 28)
	base64.StdEncoding.Encode(out, h.Sum(nil))
	return out
}

// parseUpgradeResponse looks for a complete response header in b. It
// returns n == 0 while the header is incomplete; otherwise n is the header
// length (the bytes after it are frames), status the HTTP status and ok
// whether the response is a valid 101 for key.
func parseUpgradeResponse(b, key []byte) (n, status int, ok bool) {
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		return 0, 0, false
	}
	n = end + 4
	head := b[:end]
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	// "HTTP/1.1 101 Switching Protocols"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return n, 0, false
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return n, 0, false
	}
	if status != 101 {
		return n, status, false
	}
	want := acceptFor(key)
	for len(rest) > 0 {
		var h []byte
		h, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, found := bytes.Cut(h, []byte(":"))
		if found && bytes.EqualFold(bytes.TrimSpace(name), []byte("Sec-WebSocket-Accept")) {
			return n, status, bytes.Equal(bytes.TrimSpace(value), want)
		}
	}
	return n, status, false
}

// appendFrame appends one masked, final client frame carrying payload to dst.
// The mask key comes from rng. It allocates only if dst must grow.
func appendFrame(dst []byte, op byte, payload []byte, rng *uint64) []byte {
	var key [4]byte
	binary.LittleEndian.PutUint32(key[:], uint32(nextRand(rng)))
	return frame.AppendClientFrame(dst, true, frame.OpCode(op), payload, key)
}

// maskBytes (un)masks b with key from its first byte.
func maskBytes(b []byte, key [4]byte) { ws.Cipher(b, key, 0) }

// frameHeader is a parsed server frame header.
type frameHeader struct {
	fin     bool
	op      byte
	masked  bool
	key     [4]byte
	length  int
	hdrSize int
}

// parseFrameHeader parses the frame header at the start of b. ok is false
// while b holds less than a whole header. The payload is
// b[hdrSize:hdrSize+length] once that many bytes are present.
func parseFrameHeader(b []byte) (h frameHeader, ok bool) {
	fh, whole := frame.ParseHeader(b)
	if !whole {
		return h, false
	}
	n := fh.Length
	if n < 0 || n > 1<<40 {
		n = 1 << 40 // absurd; the caller rejects it against its limit
	}
	return frameHeader{fin: fh.Fin, op: byte(fh.Op), masked: fh.Masked, key: fh.Mask, length: int(n), hdrSize: fh.Size}, true
}

// nextRand is xorshift64*: cheap, good enough for mask keys and phases.
func nextRand(s *uint64) uint64 {
	x := *s
	x ^= x >> 12
	x ^= x << 25
	x ^= x >> 27
	*s = x
	return x * 2685821657736338717
}
