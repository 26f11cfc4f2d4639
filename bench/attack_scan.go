package bench

import (
	"bytes"
	"encoding/binary"
	"strconv"

	"github.com/wsedge/wsedge/frame"
)

// respScan follows what a server sends an attacker, only as far as the
// attacker needs to know how it ended: the upgrade response's status, then
// frame headers, skipping payloads without copying them, until a close
// frame. It keeps a few header bytes between reads and nothing else. Owned
// by the attacker's loop goroutine.
type respScan struct {
	status    int    // HTTP status once the response header is complete
	head      []byte // partial response header, frame header or close payload
	skip      int64  // payload bytes of the current frame still to skip
	inClose   int    // close payload bytes still wanted (≤ 2), while > 0
	closeCode int    // the close frame's code (1005 if it had none)
	outcome   string // set once the server's answer is known
}

// feed consumes bytes read from the server. It returns the outcome once
// known ("close NNNN", "http NNN" for a status other than 101, "error
// bad-response"); later bytes are ignored.
func (s *respScan) feed(b []byte) string {
	for len(b) > 0 && s.outcome == "" {
		switch {
		case s.status == 0:
			b = s.feedResponse(b)
		case s.inClose > 0:
			n := min(s.inClose, len(b))
			s.head = append(s.head, b[:n]...)
			b = b[n:]
			s.inClose -= n
			if s.inClose == 0 {
				s.endClose()
			}
		case s.skip > 0:
			n := int(min(s.skip, int64(len(b))))
			s.skip -= int64(n)
			b = b[n:]
		default:
			b = s.feedHeader(b)
		}
	}
	return s.outcome
}

// feedResponse gathers the response header and returns what follows it.
func (s *respScan) feedResponse(b []byte) []byte {
	old := len(s.head)
	s.head = append(s.head, b...)
	// The blank line may straddle reads: search from 3 bytes back.
	from := max(0, old-3)
	i := bytes.Index(s.head[from:], []byte("\r\n\r\n"))
	if i < 0 {
		if len(s.head) > maxResponseHeader {
			s.outcome = "error bad-response"
		}
		return nil
	}
	end := from + i + 4
	line := s.head[:end]
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		s.outcome = "error bad-response"
		return nil
	}
	code, err := strconv.Atoi(string(line[9:12]))
	if err != nil || code < 100 {
		s.outcome = "error bad-response"
		return nil
	}
	s.status = code
	if code != 101 {
		s.outcome = "http " + strconv.Itoa(code)
	}
	rest := b[len(b)-(len(s.head)-end):]
	s.head = s.head[:0]
	return rest
}

// feedHeader gathers one frame header and returns what follows it.
func (s *respScan) feedHeader(b []byte) []byte {
	old := len(s.head)
	n := min(len(b), frame.MaxHeaderSize-old)
	s.head = append(s.head, b[:n]...)
	h, whole := frame.ParseHeader(s.head)
	if !whole {
		return b[n:]
	}
	// Bytes of b beyond the header belong to the payload.
	rest := b[h.Size-old:]
	s.head = s.head[:0]
	if h.Length < 0 {
		s.outcome = "error bad-response"
		return nil
	}
	if h.Op == frame.OpClose {
		if h.Length < 2 {
			s.closeCode = int(frame.CloseNoStatus)
			s.outcome = "close " + strconv.Itoa(s.closeCode)
			return nil
		}
		s.inClose = 2
		return rest
	}
	s.skip = h.Length
	return rest
}

func (s *respScan) endClose() {
	s.closeCode = int(binary.BigEndian.Uint16(s.head))
	s.head = s.head[:0]
	s.outcome = "close " + strconv.Itoa(s.closeCode)
}
