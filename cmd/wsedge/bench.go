package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/wsedge/wsedge/bench"
)

const benchUsage = `usage: wsedge bench <idle|echo|broadcast|connect> [flags]
       wsedge bench ingest --socket unix:///path [--subs N] (or --api http://admin; see -h)
       wsedge bench plot -o out.svg|out.png result.json...
       wsedge bench plot --open -o out.svg result.json...  (connections open over time)
       wsedge bench table result.json...     (markdown, one row per --label)
       wsedge bench reconnect --url ws://A/ws --to ws://B/ws --server-pid PID [flags]
                                             (a reconnect storm: drain A, count reconnects to B)

Runs a bounded load against a WebSocket server and prints HDR latency
percentiles. Loopback targets only unless --allow-remote.

examples:
  wsedge bench echo --url ws://127.0.0.1:8080/ws --conns 1000 --rate 10 --size 1024 --duration 30s
  wsedge bench echo --conns 100 --rate 0                      (closed loop)
  wsedge bench idle --conns 19000 --procs 2 --server-pid 1234
  wsedge bench broadcast --conns 10000 --rate 10 --size 64 --procs 2
  wsedge bench broadcast --conns 19000 --channels 1000 --rate 50 --procs 2
  wsedge bench broadcast --conns 1000 --slow 1000 --rate 10000 --server-pid 1234
  wsedge bench connect --conns 64 --duration 10s
  wsedge bench connect --conns 10000 --duration 10s --token-key secret --token-channels 'chat:*'
                                                              (a token of its own per connection, minted first)
  wsedge bench idle --conns 19000 --procs 2 --token-key secret --token-subs 'user:{sub}' --server-pid 1234
  wsedge bench broadcast --url ws://A/ws,ws://B/ws --conns 30000 --channels 100 --rate 0.1 --procs 4 \
      --token-key secret --token-channels 'bench:*' --token-publish 'bench:*' --token-subs 'user:{sub}' \
      --all-channel bench:all --all-every 10s --node-pids PA,PB --node-metrics http://A/metrics,http://B/metrics \
      --drain-nodes                                           (a cluster: everyone broadcasts, nodes drained at the end)
  wsedge bench broadcast --conns 5000 --rate 2 --size 64 --ping-rate 10 --procs 2 \
      --server-pid PID --server-metrics http://ADMIN/metrics --server-rss-bound 2GiB \
      --slowloris 2000 --no-read 1000 --history-flood 100 --oversize 5 --overflow 5 --churn 500
                                                              (hostile clients beside measured ones)

flags:
`

func runBench(args []string) int {
	if len(args) > 0 && args[0] == "--child" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		if err := bench.RunChild(ctx, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "wsedge bench child:", err)
			return 1
		}
		return 0
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(os.Stderr, benchUsage)
		return 2
	}
	switch args[0] {
	case "plot":
		return runBenchPlot(args[1:])
	case "table":
		return runBenchTable(args[1:])
	case "reconnect":
		return runBenchReconnect(args[1:])
	case "ingest":
		return runBenchIngest(args[1:])
	}
	cfg := bench.Defaults()
	cfg.Mode = bench.Mode(args[0])
	fs := flag.NewFlagSet("bench "+args[0], flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(os.Stderr, benchUsage)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.URL, "url", cfg.URL, "WebSocket endpoint (ws://host:port/path, IPv4); several separated by commas spread each channel's subscribers over them")
	fs.StringVar(&cfg.PublishURL, "publish-url", cfg.PublishURL, "broadcast: where publishers connect (default the first --url): another node for cross-node delivery")
	fs.IntVar(&cfg.Conns, "conns", cfg.Conns, "connections (broadcast: subscribers; connect: handshakes in flight)")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "echo: msg/s per connection (0 = closed loop); broadcast: publishes/s per channel; connect: handshakes/s (default unpaced)")
	fs.Float64Var(&cfg.ConnectRate, "connect-rate", cfg.ConnectRate, "new connections per second while opening (0 = no cap)")
	fs.IntVar(&cfg.Size, "size", cfg.Size, "echo payload / publish data size in bytes")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "measured phase (idle: hold time)")
	fs.DurationVar(&cfg.Drain, "drain", cfg.Drain, "max wait for replies and deliveries after the duration")
	fs.DurationVar(&cfg.SetupTimeout, "setup-timeout", cfg.SetupTimeout, "max time to open and subscribe every connection")
	fs.StringVar(&cfg.Channel, "channel", cfg.Channel, "broadcast channel (namespace:name); with --channels N, N channels named <channel>-1 … <channel>-N")
	fs.IntVar(&cfg.Channels, "channels", cfg.Channels, "broadcast: spread subscribers round-robin over this many channels; --rate is per channel")
	fs.IntVar(&cfg.Publishers, "publishers", cfg.Publishers, "broadcast: publisher connections sharing the channels (0 = one per 20,000 publishes/s)")
	fs.IntVar(&cfg.Slow, "slow", cfg.Slow, "broadcast: extra subscribers (4 KiB receive buffer) that stop reading after subscribing; not in the delivery figures")
	fs.Float64Var(&cfg.PingRate, "ping-rate", cfg.PingRate, "broadcast: each subscriber also sends the ping command this often per second (echo over the protocol)")
	fs.StringVar(&cfg.AllChannel, "all-channel", cfg.AllChannel, "broadcast: every subscriber also subscribes to this channel, and an everyone broadcast goes to it every --all-every (measured apart)")
	fs.DurationVar(&cfg.AllEvery, "all-every", cfg.AllEvery, "broadcast: interval of the everyone broadcasts (--all-channel)")
	fs.Var(intListFlag{&cfg.NodePIDs}, "node-pids", "comma-separated pids of a cluster's nodes: RSS read at start, ready and end of the measured phase")
	fs.Var(listFlag{&cfg.NodeMetrics}, "node-metrics", "comma-separated admin /metrics URLs of the nodes (same order as --node-pids): goroutines at start, ready and end")
	fs.BoolVar(&cfg.DrainNodes, "drain-nodes", cfg.DrainNodes, "after the drain, send SIGTERM to every --node-pids process and count each connection's disconnect push and close code")
	fs.DurationVar(&cfg.DrainWait, "drain-wait", cfg.DrainWait, "--drain-nodes: longest wait for the nodes to close every connection")
	a := &cfg.Attack
	fs.IntVar(&a.Slowloris, "slowloris", a.Slowloris, "attackers sending their upgrade request one byte per second (kept up: replaced when closed)")
	fs.IntVar(&a.NoRead, "no-read", a.NoRead, "attackers that subscribe to the (first) channel with a 4 KiB receive buffer and never read (kept up)")
	fs.IntVar(&a.Flood, "history-flood", a.Flood, "attackers sending history requests as fast as the socket takes them, never reading (kept up)")
	fs.IntVar(&a.HistoryLimit, "history-limit", a.HistoryLimit, "limit of the flood's history requests")
	fs.Float64Var(&a.Oversize, "oversize", a.Oversize, "attackers per second sending a frame that declares --oversize-len bytes, then streaming it")
	fs.Var(bytesFlag{&a.OversizeLen}, "oversize-len", "length the oversize frame declares (more than the server's max message)")
	fs.Float64Var(&a.Overflow, "overflow", a.Overflow, "attackers per second sending a 1-byte fragment, then a continuation declaring 2^63-1 bytes, then streaming")
	fs.Var(bytesFlag{&a.StreamMax}, "stream-max", "payload one oversize or overflow attacker streams at most")
	fs.Float64Var(&a.Churn, "churn", a.Churn, "attackers per second that upgrade and close at once")
	fs.DurationVar(&a.Hold, "attack-hold", a.Hold, "longest life of one attacker connection")
	fs.IntVar(&a.Sources, "attack-sources", a.Sources, "source addresses 127.1.0.1… attackers are spread over (apart from the measured clients')")
	tc := &cfg.Auth
	fs.StringVar(&tc.Token, "token", tc.Token, "one token every connection sends (see --token-in)")
	fs.StringVar(&tc.Key, "token-key", tc.Key, "mint one token per connection (sub u<N>) before connecting, with this key: an HS256 secret file or a PEM private key (RS256, ES256, EdDSA)")
	channels, publish, subs := listFlag{&tc.Channels}, listFlag{&tc.Publish}, listFlag{&tc.Subs}
	fs.Var(channels, "token-channels", "comma-separated read patterns of minted tokens, e.g. 'chat:*,user:{sub}'")
	fs.Var(publish, "token-publish", "comma-separated publish patterns of minted tokens")
	fs.Var(subs, "token-subs", "comma-separated channels the server subscribes each connection to, e.g. 'user:{sub}' (idle waits for each subscribed push)")
	fs.DurationVar(&tc.TTL, "token-ttl", tc.TTL, "validity of minted tokens")
	fs.StringVar(&tc.In, "token-in", bench.TokenInHeader, "where the token goes: header (Authorization: Bearer), query (?token=) or subprotocol (token.<jwt> entry)")
	fs.BoolVar(&cfg.Deflate, "deflate", cfg.Deflate, "idle, connect: offer permessage-deflate as browsers do (the load generator does not inflate)")
	fs.BoolVar(&cfg.Protocol, "protocol", cfg.Protocol, "idle, connect: offer the wsedge.v1.json subprotocol, which a wsedge server without --echo requires (implied by a token)")
	fs.IntVar(&cfg.Procs, "procs", cfg.Procs, "client processes to spread connections over (≤19,500 each)")
	fs.IntVar(&cfg.Loops, "loops", cfg.Loops, "event loops per process (0 = cores/procs)")
	fs.IntVar(&cfg.Sources, "sources", cfg.Sources, "source addresses 127.0.0.2… to spread loopback connections over")
	fs.BoolVar(&cfg.AllowRemote, "allow-remote", cfg.AllowRemote, "allow a non-loopback target")
	fs.IntVar(&cfg.ServerPID, "server-pid", cfg.ServerPID, "server process to read RSS and threads from")
	fs.StringVar(&cfg.ServerMetrics, "server-metrics", cfg.ServerMetrics, "server /metrics URL: go_goroutines and RSS sampled every second, wsedge_*_total counters")
	fs.Var(bytesFlag{&cfg.RSSBound}, "server-rss-bound", "the memory bound the server is configured to, printed beside its RSS peak")
	fs.Var(bytesFlag{&cfg.AbortRSS}, "abort-rss", "end the run early if the server's RSS passes this (0: never)")
	fs.StringVar(&cfg.Label, "label", cfg.Label, "name of this run in summaries and plots")
	jsonOut := fs.Bool("json", false, "print the result as JSON instead of a summary")
	jsonFile := fs.String("json-file", "", "also write the result as JSON to this file")
	plot := fs.String("plot", "", "draw the latency percentile distribution to this .svg or .png")
	quiet := fs.Bool("quiet", false, "no progress line")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	rateSet := false
	fs.Visit(func(f *flag.Flag) { rateSet = rateSet || f.Name == "rate" })
	if !rateSet && cfg.Mode == bench.ModeConnect {
		cfg.Rate = 0 // unpaced unless asked
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "wsedge bench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if ext := strings.ToLower(filepath.Ext(*plot)); *plot != "" && ext != ".svg" && ext != ".png" {
		fmt.Fprintf(os.Stderr, "wsedge bench: --plot %s: use a .svg or .png name\n", *plot)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var progress io.Writer // nil: no progress line
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 && !*quiet {
		progress = os.Stderr
	}
	res, err := bench.Run(ctx, cfg, progress)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsedge bench:", err)
		return 1
	}
	res.Command = "wsedge bench " + strings.Join(args, " ")
	if *jsonOut {
		if err := res.WriteJSON(os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "wsedge bench:", err)
			return 1
		}
	} else {
		res.WriteSummary(os.Stdout)
	}
	if *jsonFile != "" {
		if err := writeResultFile(*jsonFile, res); err != nil {
			fmt.Fprintln(os.Stderr, "wsedge bench:", err)
			return 1
		}
	}
	if *plot != "" {
		if err := writePlot(*plot, []*bench.Result{res}); err != nil {
			fmt.Fprintln(os.Stderr, "wsedge bench:", err)
			return 1
		}
	}
	return 0
}

func runBenchPlot(args []string) int {
	fs := flag.NewFlagSet("bench plot", flag.ContinueOnError)
	out := fs.String("o", "latency.svg", "output file, .svg or .png")
	title := fs.String("title", "", "plot title")
	openPlot := fs.Bool("open", false, "plot connections open over time instead of the latency distribution")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "wsedge bench plot: name one or more result JSON files (from --json)")
		return 2
	}
	rs, err := bench.ReadResultFiles(fs.Args()...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsedge bench plot:", err)
		return 1
	}
	write := writePlotTitled
	if *openPlot {
		write = writeOpenPlot
	}
	if err := write(*out, rs, *title); err != nil {
		fmt.Fprintln(os.Stderr, "wsedge bench plot:", err)
		return 1
	}
	return 0
}

func writeResultFile(path string, r *bench.Result) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = r.WriteJSON(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func writePlot(path string, rs []*bench.Result) error { return writePlotTitled(path, rs, "") }

func writePlotTitled(path string, rs []*bench.Result, title string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".svg":
		err = bench.PlotSVG(f, rs, title)
	case ".png":
		err = bench.PlotPNG(f, rs, title)
	default:
		err = fmt.Errorf("plot: %s: use a .svg or .png name", path)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// writeOpenPlot draws connections open over time.
func writeOpenPlot(path string, rs []*bench.Result, title string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".svg":
		err = bench.PlotOpenSVG(f, rs, title)
	case ".png":
		err = bench.PlotOpenPNG(f, rs, title)
	default:
		err = fmt.Errorf("plot: %s: use a .svg or .png name", path)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func runBenchTable(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "wsedge bench table: name one or more result JSON files (from --json)")
		return 2
	}
	rs, err := bench.ReadResultFiles(args...)
	if err == nil {
		err = bench.WriteTable(os.Stdout, rs)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsedge bench table:", err)
		return 1
	}
	return 0
}

// listFlag is a flag holding a comma-separated list; empty entries are
// dropped.
type listFlag struct{ p *[]string }

func (f listFlag) String() string {
	if f.p == nil {
		return ""
	}
	return strings.Join(*f.p, ",")
}

func (f listFlag) Set(s string) error {
	*f.p = nil
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			*f.p = append(*f.p, e)
		}
	}
	return nil
}

// intListFlag is a flag holding a comma-separated list of integers.
type intListFlag struct{ p *[]int }

func (f intListFlag) String() string {
	if f.p == nil {
		return ""
	}
	var parts []string
	for _, v := range *f.p {
		parts = append(parts, strconv.Itoa(v))
	}
	return strings.Join(parts, ",")
}

func (f intListFlag) Set(s string) error {
	*f.p = nil
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e == "" {
			continue
		}
		v, err := strconv.Atoi(e)
		if err != nil {
			return fmt.Errorf("%q is not a number", e)
		}
		*f.p = append(*f.p, v)
	}
	return nil
}

// bytesFlag is a flag holding a byte count written like 512MiB or 4G.
type bytesFlag struct{ p *int64 }

func (f bytesFlag) String() string {
	if f.p == nil {
		return "0"
	}
	return strconv.FormatInt(*f.p, 10)
}

func (f bytesFlag) Set(s string) error {
	v, err := bench.ParseBytes(s)
	if err != nil {
		return err
	}
	*f.p = v
	return nil
}
