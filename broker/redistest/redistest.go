// Package redistest starts a test's own redis-server and puts a
// fault-injecting TCP proxy in front of it. Tests never touch a Redis they
// did not start: each server listens on a free loopback port, keeps its
// files in the test's temporary directory, persists nothing, and is killed
// at the test's cleanup.
//
// A Server and a Proxy are safe for concurrent use; the test goroutine
// starts, kills and restarts them while the code under test uses them.
package redistest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startTimeout bounds the wait for a started server to answer PING.
const startTimeout = 10 * time.Second

// Server is a redis-server process owned by one test.
type Server struct {
	t    testing.TB
	port int
	dir  string
	args []string
	conf string // a config file, for a Sentinel

	mu  sync.Mutex
	cmd *exec.Cmd
}

// Start starts redis-server on a free loopback port with the extra
// arguments (say "--cluster-enabled", "yes"). Without redis-server on the
// PATH the test is skipped, unless the environment has CI set: CI
// installs it (.ci/run) and must not skip silently.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	skipWithout(t, "redis-server")
	return startServer(t, "", args...)
}

// skipWithout skips the test when cmd is not on the PATH, unless CI is
// set (see Start).
func skipWithout(t testing.TB, cmd string) {
	t.Helper()
	if _, err := exec.LookPath(cmd); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redistest: %s not found on CI: %v", cmd, err)
		}
		t.Skipf("redistest: %s not installed (apt-get install redis-server)", cmd)
	}
}

// startServer starts redis-server with the config file conf (none when
// "") and the extra arguments.
func startServer(t testing.TB, conf string, args ...string) *Server {
	t.Helper()
	s := &Server{t: t, port: freePort(t), dir: t.TempDir(), args: args, conf: conf}
	s.start()
	t.Cleanup(s.Kill)
	return s
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// URL is the server's redis:// URL, database 0.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

func (s *Server) start() {
	s.t.Helper()
	var args []string
	if s.conf != "" {
		args = append(args, s.conf, "--sentinel")
	}
	args = append(append(args,
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
		"--logfile", "",
		"--loglevel", "warning",
	), s.args...)
	cmd := exec.Command("redis-server", args...)
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("redistest: start redis-server: %v", err)
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	deadline := time.Now().Add(startTimeout)
	for {
		err := ping(s.Addr())
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.Kill()
			s.t.Fatalf("redistest: redis-server on %s did not answer within %v: %v\n%s", s.Addr(), startTimeout, err, out.String())
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
}

// Kill stops the server with SIGKILL, as a crash would, and waits for it
// to exit. Idempotent.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
}

// Restart kills the server if it runs and starts a new one on the same
// port: an empty one, since nothing is persisted.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.start()
}

// Do sends one command over a fresh connection and returns its reply as
// text (an array's elements one per line), or the error Redis answered;
// for test setup and inspection.
func (s *Server) Do(args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var b bytes.Buffer
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write(b.Bytes()); err != nil {
		return "", err
	}
	return readReply(bufio.NewReader(c))
}

// readReply reads one RESP2 reply.
func readReply(rd *bufio.Reader) (string, error) {
	line, err := rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("redistest: empty reply line")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("redistest: %s", line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", err
		}
		parts := make([]string, 0, max(n, 0))
		for i := 0; i < n; i++ {
			p, err := readReply(rd)
			if err != nil {
				return "", err
			}
			parts = append(parts, p)
		}
		return strings.Join(parts, "\n"), nil
	}
	return "", fmt.Errorf("redistest: unexpected reply %q", line)
}

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(c, "PING\r\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Proxy forwards TCP connections from its own loopback port to a target
// address, and injects faults that a real network produces without
// closing anything: it can wedge the pub/sub connections it carries (they
// stay open, but nothing passes any more, in either direction) or stall
// every connection, old and new.
type Proxy struct {
	target string
	l      net.Listener

	mu     sync.Mutex
	stall  bool
	cut    []byte // see CutReplyTo
	conns  map[*proxyConn]struct{}
	closed bool
	wg     sync.WaitGroup
}

type proxyConn struct {
	client, server net.Conn

	mu      sync.Mutex
	pubsub  bool // the client sent a (S)SUBSCRIBE
	wedged  bool
	cutting bool // the next reply closes the connection instead
	stalled func() bool
}

// NewProxy listens on a free loopback port and forwards to target; it is
// closed at the test's cleanup.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	p := &Proxy{target: target, l: l, conns: make(map[*proxyConn]struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.l.Addr().String() }

// URL is the proxy's redis:// URL, database 0.
func (p *Proxy) URL() string { return "redis://" + p.Addr() + "/0" }

// WedgePubSub makes every pub/sub connection open now drop what it
// carries, silently and in both directions; connections made later work.
// It returns how many it wedged.
func (p *Proxy) WedgePubSub() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for c := range p.conns {
		c.mu.Lock()
		if c.pubsub && !c.wedged {
			c.wedged = true
			n++
		}
		c.mu.Unlock()
	}
	return n
}

// CutReplyTo arms a one-shot fault: the next request that contains
// marker is forwarded to the server, which applies it, and then the
// connection is closed instead of carrying the reply, as when a network
// fails at the worst moment. A client that sends the request again
// applies it twice.
func (p *Proxy) CutReplyTo(marker string) {
	p.mu.Lock()
	p.cut = []byte(marker)
	p.mu.Unlock()
}

// takeCut reports whether b carries the armed marker, disarming it.
func (p *Proxy) takeCut(b []byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut == nil || !bytes.Contains(b, p.cut) {
		return false
	}
	p.cut = nil
	return true
}

// Stall makes every connection, open or new, drop what it carries while
// on is true: a network that silently loses everything.
func (p *Proxy) Stall(on bool) {
	p.mu.Lock()
	p.stall = on
	p.mu.Unlock()
}

func (p *Proxy) stalled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stall
}

// Close stops accepting, closes every connection and waits for the
// forwarding goroutines. Idempotent.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	for c := range p.conns {
		c.client.Close()
		c.server.Close()
	}
	p.mu.Unlock()
	p.l.Close()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.l.Accept()
		if err != nil {
			return
		}
		server, err := net.DialTimeout("tcp", p.target, time.Second)
		if err != nil {
			client.Close()
			continue
		}
		c := &proxyConn{client: client, server: server, stalled: p.stalled}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			client.Close()
			server.Close()
			return
		}
		p.conns[c] = struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pipe(c, client, server, true)
		go p.pipe(c, server, client, false)
	}
}

// pipe copies src to dst until either fails, dropping what a fault says
// to drop.
func (p *Proxy) pipe(c *proxyConn, src, dst net.Conn, fromClient bool) {
	defer p.wg.Done()
	defer func() {
		src.Close()
		dst.Close()
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			cut := fromClient && p.takeCut(buf[:n])
			c.mu.Lock()
			if fromClient && !c.pubsub && isSubscribe(buf[:n]) {
				c.pubsub = true
			}
			if cut {
				c.cutting = true
			}
			drop := c.wedged
			cutNow := !fromClient && c.cutting
			c.mu.Unlock()
			if cutNow {
				return // the deferred Close drops the reply and the connection
			}
			if !drop && !c.stalled() {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// isSubscribe reports whether b starts with a (S)SUBSCRIBE command, the
// first command a client sends on a connection it makes for pub/sub.
func isSubscribe(b []byte) bool {
	// *<n>\r\n$<len>\r\n<name>\r\n
	_, rest, ok := bytes.Cut(b, []byte("\r\n"))
	if !ok || len(b) == 0 || b[0] != '*' {
		return false
	}
	_, rest, ok = bytes.Cut(rest, []byte("\r\n"))
	if !ok {
		return false
	}
	name, _, ok := bytes.Cut(rest, []byte("\r\n"))
	name = bytes.ToLower(name)
	return ok && (string(name) == "subscribe" || string(name) == "ssubscribe")
}
