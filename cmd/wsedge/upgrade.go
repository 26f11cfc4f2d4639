package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wsedge/wsedge/engine"
)

// Restart without dropping connections (docs/DESIGN.md, "Handoff"): a
// running `wsedge serve --handoff-socket S` hands its connections to a new
// process started with `--takeover S`. `wsedge upgrade` and SIGUSR2 start
// that process and wait for its verdict, which it writes on a pipe (fd 3,
// named by WSEDGE_TAKEOVER_REPORT_FD) rather than on stderr, so that the
// new process never writes to a pipe whose reader has gone.

// upgradeBinary is serve's --upgrade-binary (set by loadServeConfig).
var upgradeBinary string

// reportFDEnv names the descriptor a takeover reports its outcome on.
const reportFDEnv = "WSEDGE_TAKEOVER_REPORT_FD"

var reportOnce sync.Once

// reportTakeover writes the takeover's outcome to whoever started this
// process (wsedge upgrade, or the old process on SIGUSR2), once.
func reportTakeover(msg string) {
	reportOnce.Do(func() {
		fd, err := strconv.Atoi(os.Getenv(reportFDEnv))
		if err != nil || fd < 3 {
			return
		}
		os.Unsetenv(reportFDEnv)
		f := os.NewFile(uintptr(fd), "takeover-report")
		_, _ = io.WriteString(f, msg+"\n")
		f.Close()
	})
}

// startHandoff wires the handoff for serve: the takeover (tk, if any), the
// handoff socket once this process owns every connection it will get, and
// SIGUSR2. cancel stops the server once its connections are handed over.
// The returned function undoes it.
func startHandoff(srv *engine.Server, cfg engine.Config, tk *engine.Takeover, args []string, log *slog.Logger, cancel func()) func() {
	var (
		mu      sync.Mutex
		closers []io.Closer
		stopped bool
	)
	serve := func() {
		if cfg.HandoffSocket == "" {
			return
		}
		// After a takeover the old process frees the socket a moment
		// after it said done.
		deadline := time.Now().Add(10 * time.Second)
		for {
			ln, err := srv.ServeHandoff(cfg.HandoffSocket, func() {
				log.Info("handoff complete: every connection is with the new process; exiting")
				cancel()
			})
			if err == nil {
				mu.Lock()
				if stopped {
					ln.Close()
				} else {
					closers = append(closers, ln)
				}
				mu.Unlock()
				log.Info("handoff socket", "path", cfg.HandoffSocket)
				return
			}
			if time.Now().After(deadline) {
				log.Error("handoff socket", "err", err)
				return
			}
			time.Sleep(50 * time.Millisecond) // waiting for the old process to let go
		}
	}
	go func() {
		if tk != nil {
			start := time.Now()
			n, err := tk.Run()
			if err != nil {
				log.Error("takeover failed; this process serves the connections it took, the old one the rest", "taken", n, "err", err)
				reportTakeover(fmt.Sprintf("failed after %d connections: %v", n, err))
			} else {
				log.Info("takeover done", "connections", n, "took", time.Since(start).Round(time.Millisecond))
				reportTakeover(fmt.Sprintf("ok %d connections in %v", n, time.Since(start).Round(time.Millisecond)))
			}
		} else {
			srv.Addr() // booted
		}
		serve()
	}()
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	go func() {
		for range usr2 {
			if cfg.HandoffSocket == "" {
				log.Warn("SIGUSR2: no --handoff-socket, nothing to upgrade to")
				continue
			}
			bin := upgradeBinary
			if bin == "" {
				bin, _ = os.Executable()
			}
			log.Info("SIGUSR2: starting the new process to take over", "binary", bin)
			p, report, err := spawnTakeover(bin, args, cfg.HandoffSocket, os.Stdout, os.Stderr)
			if err != nil {
				log.Error("SIGUSR2: upgrade", "err", err)
				continue
			}
			go func() {
				log.Info("SIGUSR2: the new process reports", "pid", p.Pid, "report", <-report)
			}()
		}
	}()
	return func() {
		signal.Stop(usr2)
		mu.Lock()
		stopped = true
		for _, c := range closers {
			c.Close()
		}
		mu.Unlock()
	}
}

// spawnTakeover starts bin serve with args (less any --takeover) and
// --takeover socket, in its own session so it outlives its parent. The
// channel gets its report (or why there is none) once.
func spawnTakeover(bin string, args []string, socket string, stdout, stderr *os.File) (*os.Process, <-chan string, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	argv := append([]string{"serve"}, stripFlag(args, "takeover")...)
	argv = append(argv, "--takeover", socket)
	if !hasFlag(args, "handoff-socket") && os.Getenv("WSEDGE_HANDOFF_SOCKET") == "" {
		argv = append(argv, "--handoff-socket", socket) // the next upgrade finds it there
	}
	cmd := exec.Command(bin, argv...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.ExtraFiles = []*os.File{w} // fd 3
	cmd.Env = append(os.Environ(), reportFDEnv+"=3")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, nil, err
	}
	w.Close()
	report := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(r, 4096))
		r.Close()
		msg := strings.TrimSpace(string(b))
		if msg == "" {
			msg = "failed: the new process ended without a report (see its log)"
		}
		report <- msg
		_ = cmd.Wait() // reaped whenever it ends
	}()
	return cmd.Process, report, nil
}

// hasFlag says whether args set --name (or -name), with = or not.
func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == "--"+name || a == "-"+name || strings.HasPrefix(a, "--"+name+"=") || strings.HasPrefix(a, "-"+name+"=") {
			return true
		}
	}
	return false
}

// stripFlag removes --name value and --name=value from args.
func stripFlag(args []string, name string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--"+name || a == "-"+name {
			i++
			continue
		}
		if strings.HasPrefix(a, "--"+name+"=") || strings.HasPrefix(a, "-"+name+"=") {
			continue
		}
		out = append(out, a)
	}
	return out
}

// runUpgrade starts a new wsedge that takes over a running one's
// connections and waits for its report.
func runUpgrade(args []string) int {
	fs := flag.NewFlagSet("upgrade", flag.ContinueOnError)
	socket := fs.String("handoff-socket", os.Getenv("WSEDGE_HANDOFF_SOCKET"), "the running process's --handoff-socket")
	bin := fs.String("binary", "", "the new wsedge binary (default: this one)")
	logPath := fs.String("log", "", "file the new process logs to (default: this command's stdout and stderr, which must outlive it)")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the new process's report")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: wsedge upgrade --handoff-socket unix:///run/wsedge/handoff.sock [--binary path] [--log file] -- <serve flags, as the running process has them>")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if *socket == "" {
		fmt.Fprintln(os.Stderr, "wsedge upgrade: --handoff-socket is required")
		return 2
	}
	if *bin == "" {
		exe, err := os.Executable()
		if err != nil {
			fmt.Fprintln(os.Stderr, "wsedge upgrade:", err)
			return 1
		}
		*bin = exe
	}
	serveArgs := fs.Args()
	if !hasFlag(serveArgs, "handoff-socket") {
		serveArgs = append(serveArgs, "--handoff-socket", *socket)
	}
	out, errw := os.Stdout, os.Stderr
	if *logPath != "" {
		f, err := os.OpenFile(*logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			fmt.Fprintln(os.Stderr, "wsedge upgrade:", err)
			return 1
		}
		defer f.Close()
		out, errw = f, f
	}
	p, report, err := spawnTakeover(*bin, serveArgs, *socket, out, errw)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsedge upgrade:", err)
		return 1
	}
	select {
	case msg := <-report:
		fmt.Printf("wsedge upgrade: new process %d: %s\n", p.Pid, msg)
		if strings.HasPrefix(msg, "ok") {
			return 0
		}
		return 1
	case <-time.After(*timeout):
		fmt.Fprintf(os.Stderr, "wsedge upgrade: no report from process %d after %v\n", p.Pid, *timeout)
		return 1
	}
}
