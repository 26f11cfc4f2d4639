package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// RunChild is the entry point of a child process (wsedge bench --child):
// the first line on r is its spec, later lines are commands; events go to w
// as JSON lines. It returns when the run is over or r is closed.
func RunChild(ctx context.Context, r io.Reader, w io.Writer) error {
	raiseFileLimit()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	if !sc.Scan() {
		return errors.New("bench child: no spec on stdin")
	}
	var first message
	if err := json.Unmarshal(sc.Bytes(), &first); err != nil || first.Spec == nil {
		return fmt.Errorf("bench child: bad spec: %v", err)
	}
	spec := *first.Spec
	if err := spec.validate(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	in := make(chan message, 4)
	out := make(chan message, 4)
	go func() {
		defer close(in)
		for sc.Scan() {
			var m message
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				in <- m
			}
		}
	}()
	errc := make(chan error, 1)
	go func() { errc <- runWorker(ctx, spec.Config, spec.Index, spec.Count, in, out); close(out) }()
	enc := json.NewEncoder(w)
	for m := range out {
		if err := enc.Encode(m); err != nil {
			cancel()
		}
	}
	err := <-errc
	if err != nil {
		_ = enc.Encode(message{Type: msgError, Worker: spec.Index, Err: err.Error()})
	}
	return err
}

// raiseFileLimit lifts the soft open-file limit to the hard one.
func raiseFileLimit() {
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	}
}

// workerHandle is the parent's side of one worker.
type workerHandle struct {
	in   chan message // commands to the worker
	wait func() error
}

// startInProcess runs worker index in this process.
func startInProcess(ctx context.Context, cfg Config, index, count int, events chan<- message) *workerHandle {
	in := make(chan message, 4)
	out := make(chan message, 4)
	errc := make(chan error, 1)
	go func() { errc <- runWorker(ctx, cfg, index, count, in, out); close(out) }()
	go func() {
		for m := range out {
			events <- m
		}
		events <- message{Type: msgExit, Worker: index}
	}()
	var once sync.Once
	var err error
	return &workerHandle{in: in, wait: func() error {
		once.Do(func() { err = <-errc })
		return err
	}}
}

// startChild runs worker index in a child process started with cfg.Exe.
func startChild(ctx context.Context, cfg Config, index, count int, events chan<- message) (*workerHandle, error) {
	exe := cfg.Exe
	if len(exe) == 0 {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("bench: finding own executable: %w", err)
		}
		exe = []string{self, "bench", "--child"}
	}
	cmd := exec.Command(exe[0], exe[1:]...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: starting child: %w", err)
	}
	enc := json.NewEncoder(stdin)
	child := cfg
	child.Exe = nil
	if err := enc.Encode(message{Spec: &childSpec{Config: child, Index: index, Count: count}}); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("bench: writing child spec: %w", err)
	}
	in := make(chan message, 4)
	go func() {
		for m := range in {
			if enc.Encode(m) != nil {
				break
			}
		}
		stdin.Close()
	}()
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			var m message
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				events <- message{Type: msgError, Worker: index, Err: fmt.Sprintf("child %d: bad line: %v", index, err)}
				continue
			}
			m.Worker = index
			events <- m
		}
		events <- message{Type: msgExit, Worker: index}
	}()
	go func() {
		<-ctx.Done()
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}()
	var once sync.Once
	var werr error
	return &workerHandle{in: in, wait: func() error {
		once.Do(func() {
			<-readDone
			werr = cmd.Wait()
		})
		return werr
	}}, nil
}
