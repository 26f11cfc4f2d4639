package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/wsedge/wsedge/engine"
	"github.com/wsedge/wsedge/ingest"
)

// ingestFlags adds the ingest socket's and HTTP API's flags to serve.
func ingestFlags(fs *flag.FlagSet, c *engine.IngestConfig) {
	fs.StringVar(&c.Listen, "ingest", c.Listen, "ingest socket unix:///path (empty: off); see docs/INGEST.md")
	fs.StringVar(&c.Group, "ingest-group", c.Group, "group that owns the ingest socket (mode 0660)")
	fs.IntVar(&c.Loops, "ingest-loops", c.Loops, "event loops serving ingest connections (0: one)")
	fs.IntVar(&c.MaxPayload, "ingest-max-payload", c.MaxPayload, "largest ingest/API payload in bytes (0: --max-message)")
	fs.IntVar(&c.MaxFrame, "ingest-max-frame", c.MaxFrame, "largest ingest request frame in bytes")
	fs.DurationVar(&c.OverloadWait, "ingest-overload-wait", c.OverloadWait, "how long an ingest publish waits for full shard inboxes before \"overloaded\"")
	fs.DurationVar(&c.IdemWindow, "ingest-idem-window", c.IdemWindow, "how long idempotency keys are remembered")
	fs.IntVar(&c.IdemMax, "ingest-idem-max", c.IdemMax, "most idempotency keys remembered (oldest dropped first)")
	fs.IntVar(&c.EventBuffer, "ingest-event-buffer", c.EventBuffer, "connection events kept for slow event-stream readers")
	fs.StringVar(&c.APIKey, "api-key", c.APIKey, "API key of the HTTP API on the admin port (prefer WSEDGE_API_KEY or --api-key-file; empty: API off)")
	fs.StringVar(&c.APIKeyFile, "api-key-file", c.APIKeyFile, "file holding the HTTP API key")
}

// runPublish is `wsedge publish`: one message from the arguments, or one
// per line from stdin, to a channel through the ingest socket or the HTTP
// API; it prints each offset.
func runPublish(args []string) int {
	fs := flag.NewFlagSet("publish", flag.ContinueOnError)
	sock := fs.String("ingest", os.Getenv("WSEDGE_INGEST"), "ingest socket unix:///path (env WSEDGE_INGEST)")
	apiURL := fs.String("api", "", "HTTP API base URL, e.g. http://127.0.0.1:9090 (instead of --ingest)")
	apiKey := fs.String("api-key", os.Getenv("WSEDGE_API_KEY"), "HTTP API key (env WSEDGE_API_KEY)")
	channel := fs.String("channel", "", "channel to publish to, ns:name")
	key := fs.String("key", "", "idempotency key (one message only; default: generated per message)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up on a message after this long")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: wsedge publish (--ingest unix:///path | --api http://host:port) --channel ns:name ['<json>' | < lines]\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	switch {
	case *channel == "":
		fmt.Fprintln(os.Stderr, "wsedge publish: --channel is required")
		return 2
	case (*sock == "") == (*apiURL == ""):
		fmt.Fprintln(os.Stderr, "wsedge publish: give exactly one of --ingest and --api")
		return 2
	case fs.NArg() > 1:
		fmt.Fprintln(os.Stderr, "wsedge publish: one message argument at most (quote the JSON), or lines on stdin")
		return 2
	case *key != "" && fs.NArg() != 1:
		fmt.Fprintln(os.Stderr, "wsedge publish: --key needs a single message argument")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var pub func(ctx context.Context, msg []byte) (uint64, error)
	if *sock != "" {
		dctx, cancel := context.WithTimeout(ctx, *timeout)
		cl, err := ingest.Dial(dctx, *sock, ingest.Options{RetryFor: *timeout})
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, "wsedge publish:", err)
			return 1
		}
		defer cl.Close()
		pub = func(ctx context.Context, msg []byte) (uint64, error) {
			var k []byte
			if *key != "" {
				k = []byte(*key)
			}
			call, err := cl.PublishAsync(ctx, *channel, msg, k)
			if err != nil {
				return 0, err
			}
			if err := cl.Wait(ctx, call); err != nil {
				return 0, err
			}
			return call.Offset, nil
		}
	} else {
		hc := &http.Client{Timeout: *timeout}
		pub = func(ctx context.Context, msg []byte) (uint64, error) {
			return apiPublish(ctx, hc, *apiURL, *apiKey, *channel, *key, msg)
		}
	}
	one := func(msg []byte) bool {
		mctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		off, err := pub(mctx, msg)
		if err != nil {
			fmt.Fprintln(os.Stderr, "wsedge publish:", err)
			return false
		}
		fmt.Println(off)
		return true
	}
	if fs.NArg() == 1 {
		if !one([]byte(fs.Arg(0))) {
			return 1
		}
		return 0
	}
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	failed := false
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if !one(line) {
			failed = true
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "wsedge publish: stdin:", err)
		return 1
	}
	if failed {
		return 1
	}
	return 0
}

// apiPublish is one POST /api/publish.
func apiPublish(ctx context.Context, hc *http.Client, base, key, channel, idem string, msg []byte) (uint64, error) {
	if !json.Valid(msg) {
		return 0, errors.New("message is not JSON")
	}
	body, _ := json.Marshal(map[string]any{"channel": channel, "data": json.RawMessage(msg), "idempotency_key": idem})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(base, "/")+"/api/publish", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "apikey "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	var out struct {
		Offset uint64 `json:"offset"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return 0, fmt.Errorf("bad API response %q: %w", b, err)
	}
	return out.Offset, nil
}
