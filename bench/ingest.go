package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/gorilla/websocket"

	"github.com/wsedge/wsedge/ingest"
)

// IngestConfig configures `wsedge bench ingest`: publishes through the
// ingest socket (or the HTTP API, for comparison) while WebSocket
// subscribers measure the end-to-end latency. A plain value.
type IngestConfig struct {
	Socket   string        // unix:///path of the ingest socket
	API      string        // http://admin: publish through POST /api/publish instead
	APIKey   string        // the API key
	URL      string        // WebSocket endpoint of the subscribers
	Subs     int           // WebSocket subscribers, spread round-robin over the channels
	Channels int           // channels <Channel>-1 … <Channel>-N (publishes round-robin)
	Channel  string        // channel name prefix (ns:name)
	Rate     float64       // publishes per second in all (0: as fast as the window allows)
	Window   int           // requests in flight (socket: on one connection; API: concurrent requests)
	Size     int           // payload bytes (a JSON object with the send time, padded)
	Duration time.Duration // measured phase
}

// IngestResult is one run's figures; a plain value.
type IngestResult struct {
	Config     IngestConfig `json:"config"`
	Transport  string       `json:"transport"`
	Sent       int64        `json:"sent"`
	Acked      int64        `json:"acked"`
	Errors     int64        `json:"errors"`
	AcksPerSec float64      `json:"acks_per_sec"`
	Ack        Summary      `json:"ack_latency"` // publish → ack, as the publisher sees it
	Delivered  int64        `json:"delivered"`
	Expected   int64        `json:"expected"`
	Delivery   Summary      `json:"delivery_latency"` // publish → WebSocket subscriber
}

// RunIngest runs the ingest benchmark.
func RunIngest(ctx context.Context, cfg IngestConfig, progress io.Writer) (*IngestResult, error) {
	if cfg.Channels < 1 {
		cfg.Channels = 1
	}
	if cfg.Window < 1 {
		cfg.Window = 1
	}
	if (cfg.Socket == "") == (cfg.API == "") {
		return nil, errors.New("bench ingest: give one of --socket and --api")
	}
	if cfg.Duration <= 0 || cfg.Duration > MaxDuration {
		return nil, fmt.Errorf("bench ingest: duration %v not in (0, %v]", cfg.Duration, MaxDuration)
	}
	res := &IngestResult{Config: cfg, Transport: "socket"}
	if cfg.API != "" {
		res.Transport = "http"
	}
	chans := make([]string, cfg.Channels)
	for i := range chans {
		chans[i] = fmt.Sprintf("%s-%d", cfg.Channel, i+1)
	}
	deliv := &lockedHist{h: newHist()}
	var delivered atomic.Int64
	subs := make([]*websocket.Conn, 0, cfg.Subs)
	defer func() {
		for _, s := range subs {
			s.Close()
		}
	}()
	perChan := make([]int64, cfg.Channels)
	for i := range cfg.Subs {
		ws, err := subscribeWS(cfg.URL, chans[i%cfg.Channels])
		if err != nil {
			return nil, fmt.Errorf("bench ingest: subscriber %d: %w", i, err)
		}
		perChan[i%cfg.Channels]++
		subs = append(subs, ws)
		go readPushes(ws, deliv, &delivered)
	}
	fmt.Fprintf(progress, "ingest: %d subscribers on %d channels; publishing over %s for %v\n", cfg.Subs, cfg.Channels, res.Transport, cfg.Duration)
	ack := newHist()
	var err error
	var perChanSent []int64
	if cfg.API != "" {
		perChanSent, err = runAPI(ctx, cfg, chans, res, ack)
	} else {
		perChanSent, err = runSocket(ctx, cfg, chans, res, ack)
	}
	if err != nil {
		return nil, err
	}
	res.AcksPerSec = float64(res.Acked) / cfg.Duration.Seconds()
	res.Ack = summarize(ack)
	for i, n := range perChanSent {
		res.Expected += n * perChan[i]
	}
	deadline := time.Now().Add(5 * time.Second)
	for delivered.Load() < res.Expected && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // deliveries still on their way
	}
	res.Delivered = delivered.Load()
	deliv.mu.Lock()
	res.Delivery = summarize(deliv.h)
	deliv.mu.Unlock()
	return res, nil
}

type lockedHist struct {
	mu sync.Mutex
	h  *hdr.Histogram
}

func subscribeWS(url, channel string) (*websocket.Conn, error) {
	d := websocket.Dialer{Subprotocols: []string{"wsedge.v1.json"}, HandshakeTimeout: 5 * time.Second}
	ws, _, err := d.Dial(url, nil)
	if err != nil {
		return nil, err
	}
	if err := ws.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"id":1,"op":"subscribe","channel":%q}`, channel)); err != nil {
		ws.Close()
		return nil, err
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, b, err := ws.ReadMessage()
	if err != nil || !bytes.Contains(b, []byte(`"ok":true`)) {
		ws.Close()
		return nil, fmt.Errorf("subscribe: %q %v", b, err)
	}
	_ = ws.SetReadDeadline(time.Time{})
	return ws, nil
}

// readPushes records the latency of every publication: its payload
// starts {"t":<unix ns>.
func readPushes(ws *websocket.Conn, h *lockedHist, n *atomic.Int64) {
	key := []byte(`"t":`)
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			return
		}
		now := time.Now().UnixNano()
		i := bytes.Index(b, key)
		if i < 0 {
			continue
		}
		j := i + len(key)
		k := j
		for k < len(b) && b[k] >= '0' && b[k] <= '9' {
			k++
		}
		t, err := strconv.ParseInt(string(b[j:k]), 10, 64)
		if err != nil {
			continue
		}
		n.Add(1)
		h.mu.Lock()
		record(h.h, now-t)
		h.mu.Unlock()
	}
}

// payload returns {"t":<now>,"p":"xxx…"} of about size bytes.
func payload(dst []byte, size int) []byte {
	dst = append(dst, `{"t":`...)
	dst = strconv.AppendInt(dst, time.Now().UnixNano(), 10)
	dst = append(dst, `,"p":"`...)
	for len(dst) < size-2 {
		dst = append(dst, 'x')
	}
	return append(dst, `"}`...)
}

// runSocket publishes over one ingest connection, pipelined: a writer
// keeps up to Window requests in flight (paced when Rate is set), a reader
// counts the acks. No idempotency keys: the server's cost per publish,
// not the client library's.
func runSocket(ctx context.Context, cfg IngestConfig, chans []string, res *IngestResult, ack *hdr.Histogram) ([]int64, error) {
	conn, err := net.Dial("unix", strings.TrimPrefix(cfg.Socket, "unix://"))
	if err != nil {
		return nil, fmt.Errorf("bench ingest: %w", err)
	}
	defer conn.Close()
	sentAt := make([]int64, cfg.Window)
	var inflight atomic.Int64
	perChan := make([]int64, len(chans))
	var acked, errs atomic.Int64
	readDone := make(chan error, 1)
	var mu sync.Mutex // ack histogram: reader only while running
	go func() {
		br := bufio.NewReaderSize(conn, 256<<10)
		var hdrb [4]byte
		buf := make([]byte, 0, 256)
		var r ingest.Response
		for {
			if _, err := io.ReadFull(br, hdrb[:]); err != nil {
				readDone <- err
				return
			}
			n := 4 + int(binary.BigEndian.Uint32(hdrb[:]))
			buf = append(append(buf[:0], hdrb[:]...), make([]byte, n-4)...)
			if _, err := io.ReadFull(br, buf[4:]); err != nil {
				readDone <- err
				return
			}
			if _, err := ingest.ParseResponse(buf, n, &r); err != nil {
				readDone <- err
				return
			}
			now := time.Now().UnixNano()
			if r.Op == ingest.OpAck {
				acked.Add(1)
			} else {
				errs.Add(1)
			}
			mu.Lock()
			record(ack, now-sentAt[r.Seq%uint64(cfg.Window)])
			mu.Unlock()
			inflight.Add(-1)
		}
	}()
	start := time.Now()
	end := start.Add(cfg.Duration)
	var seq uint64
	var out, body []byte
	var sent int64
	for time.Now().Before(end) && ctx.Err() == nil {
		allowed := int64(cfg.Window) - inflight.Load()
		if cfg.Rate > 0 {
			due := int64(time.Since(start).Seconds()*cfg.Rate) - sent
			allowed = min(allowed, due)
		}
		if allowed <= 0 {
			if cfg.Rate > 0 {
				time.Sleep(200 * time.Microsecond) // pacing
			} else {
				time.Sleep(20 * time.Microsecond) // window full
			}
			continue
		}
		out = out[:0]
		now := time.Now().UnixNano()
		for range min(allowed, 512) {
			seq++
			ch := int(seq % uint64(len(chans)))
			body = payload(body[:0], cfg.Size)
			sentAt[seq%uint64(cfg.Window)] = now
			out = ingest.AppendPublish(out, seq, chans[ch], nil, body)
			perChan[ch]++
			sent++
		}
		inflight.Add(int64(min(allowed, 512)))
		if _, err := conn.Write(out); err != nil {
			return nil, fmt.Errorf("bench ingest: write: %w", err)
		}
	}
	res.Sent = sent
	// Only acks within the measured phase count toward the rate.
	res.Acked = acked.Load()
	drain := time.Now().Add(5 * time.Second)
	for inflight.Load() > 0 && time.Now().Before(drain) {
		time.Sleep(time.Millisecond) // the last acks
	}
	res.Errors = errs.Load()
	select {
	case err := <-readDone:
		return nil, fmt.Errorf("bench ingest: read: %w", err)
	default:
	}
	mu.Lock()
	defer mu.Unlock()
	return perChan, nil
}

// runAPI publishes through POST /api/publish with Window concurrent
// requests (keep-alive connections), paced in all when Rate is set.
func runAPI(ctx context.Context, cfg IngestConfig, chans []string, res *IngestResult, ack *hdr.Histogram) ([]int64, error) {
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Window, MaxConnsPerHost: cfg.Window}, Timeout: 10 * time.Second}
	url := strings.TrimRight(cfg.API, "/") + "/api/publish"
	perChan := make([]int64, len(chans))
	var mu sync.Mutex
	var sent, acked, errs atomic.Int64
	start := time.Now()
	end := start.Add(cfg.Duration)
	var ticket atomic.Int64
	var wg sync.WaitGroup
	for range cfg.Window {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var body []byte
			for time.Now().Before(end) && ctx.Err() == nil {
				n := ticket.Add(1)
				if cfg.Rate > 0 {
					at := start.Add(time.Duration(float64(n) / cfg.Rate * float64(time.Second)))
					if d := time.Until(at); d > 0 {
						time.Sleep(d) // pacing
					}
					if time.Now().After(end) {
						return
					}
				}
				ch := int(n % int64(len(chans)))
				body = payload(body[:0], cfg.Size)
				req, _ := json.Marshal(map[string]any{"channel": chans[ch], "data": json.RawMessage(body)})
				r, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(req))
				r.Header.Set("Authorization", "apikey "+cfg.APIKey)
				t0 := time.Now()
				sent.Add(1)
				resp, err := hc.Do(r)
				if err != nil {
					errs.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				record(ack, time.Since(t0).Nanoseconds())
				perChan[ch]++
				mu.Unlock()
				if resp.StatusCode == http.StatusOK {
					acked.Add(1)
				} else {
					errs.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	res.Sent, res.Acked, res.Errors = sent.Load(), acked.Load(), errs.Load()
	return perChan, nil
}
