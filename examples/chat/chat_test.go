package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/png"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wsedge/wsedge/engine"
)

// TestChatScreenshot serves the chat page, runs wsedge in this process
// with the secret the page's tokens are signed with, and has two Chromium
// pages chat through it: each sees every message in order, alice's page
// shows "connected", and its screenshot is written (to
// examples/chat/screenshot.png with WSEDGE_UPDATE_SCREENSHOT=1).
func TestChatScreenshot(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not found: the screenshot test needs Node.js and Debian's chromium (.ci/run installs both)")
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium not found (apt-get install chromium; .ci/run does)")
	}
	scripts, err := filepath.Abs(filepath.Join("..", "..", "cmd", "wsedge", "testdata", "browser"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(scripts, "node_modules", "playwright-core")); err != nil {
		t.Fatalf("playwright-core is not installed: run `npm ci` in %s (.ci/run and make test do): %v", scripts, err)
	}
	secret := []byte("0123456789abcdef0123456789abcdef-chat-example")
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := engine.DefaultConfig()
	cfg.Listen, cfg.Admin, cfg.AuthSecretFile = "127.0.0.1:0", "", secretFile
	srv, err := engine.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})

	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	h, err := newHandler(dir, "ws://"+srv.Addr()+"/ws", secret)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })

	shot := filepath.Join(t.TempDir(), "chat.png")
	if os.Getenv("WSEDGE_UPDATE_SCREENSHOT") != "" {
		shot = filepath.Join(dir, "screenshot.png")
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer rcancel()
	cmd := exec.CommandContext(rctx, node, "chat_screenshot.js")
	cmd.Dir = scripts
	cmd.Env = append(os.Environ(), "PAGE_URL=http://"+ln.Addr().String()+"/", "SCREENSHOT="+shot,
		"CHROMIUM="+chromium, "WSEDGE_STEP_TIMEOUT_MS=30000")
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chat_screenshot.js: %v\n%s", err, stderr.String())
	}
	var seen struct {
		Alice, Bob  []string
		State       string
		JoinVisible bool
	}
	if err := json.Unmarshal(out, &seen); err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
	want := []string{"alice:hello from alice", "bob:hi alice, bob here", "alice:the offline queue keeps what I type on a train"}
	if !slices.Equal(seen.Alice, want) || !slices.Equal(seen.Bob, want) {
		t.Fatalf("alice sees %q, bob sees %q, want %q on both", seen.Alice, seen.Bob, want)
	}
	if seen.State != "connected" || seen.JoinVisible {
		t.Fatalf("alice's state badge says %q, join form visible: %v", seen.State, seen.JoinVisible)
	}

	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 720 || b.Dy() != 520 {
		t.Fatalf("screenshot %v, want 720x520", b)
	}
	// The page rendered: the green "connected" badge and the blue bubbles
	// of alice's own messages are on it.
	if n := countColor(img, 0x2a, 0x9d, 0x3a); n < 100 {
		t.Fatalf("%d pixels of the connected badge's green in the screenshot", n)
	}
	if n := countColor(img, 0xe0, 0xec, 0xff); n < 2000 {
		t.Fatalf("%d pixels of alice's message bubbles in the screenshot", n)
	}
}

// lockedBuffer collects the script's stderr (written by exec's copier).
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func countColor(img image.Image, r, g, b uint8) int {
	n := 0
	bounds := img.Bounds()
	for y := bounds.Min.Y; y < bounds.Max.Y; y++ {
		for x := bounds.Min.X; x < bounds.Max.X; x++ {
			cr, cg, cb, _ := img.At(x, y).RGBA()
			if uint8(cr>>8) == r && uint8(cg>>8) == g && uint8(cb>>8) == b {
				n++
			}
		}
	}
	return n
}
