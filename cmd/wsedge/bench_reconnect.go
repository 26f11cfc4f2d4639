package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/wsedge/wsedge/bench"
)

const benchReconnectUsage = `usage: wsedge bench reconnect --url ws://A/ws --to ws://B/ws --server-pid PID-of-A [flags]
       wsedge bench reconnect plot -o storm.svg run.json...

A reconnect storm: --conns clients (the Go client library) connect to node
A, the run sends A SIGTERM and from then on the clients dial node B, as
behind a load balancer; it counts reconnects per --bin since the SIGTERM.
Run it against A with --drain-reconnect-window 0 and again with a window
to see what the server's reconnect spread does.

flags:
`

func runBenchReconnect(args []string) int {
	if len(args) > 0 && args[0] == "plot" {
		return runBenchReconnectPlot(args[1:])
	}
	cfg := bench.DefaultReconnect()
	fs := flag.NewFlagSet("bench reconnect", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(os.Stderr, benchReconnectUsage)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.URL, "url", cfg.URL, "node the clients connect to first (drained)")
	fs.StringVar(&cfg.To, "to", cfg.To, "node the clients reconnect to")
	fs.IntVar(&cfg.Conns, "conns", cfg.Conns, "clients")
	fs.IntVar(&cfg.ServerPID, "server-pid", cfg.ServerPID, "pid of the node behind --url, sent SIGTERM")
	fs.IntVar(&cfg.Sources, "sources", cfg.Sources, "source addresses 127.0.0.2… to spread the clients over")
	fs.IntVar(&cfg.DialConcurrency, "dial-concurrency", cfg.DialConcurrency, "connections opened at once while setting up")
	fs.DurationVar(&cfg.SetupTimeout, "setup-timeout", cfg.SetupTimeout, "max time to connect every client")
	fs.DurationVar(&cfg.Window, "window", cfg.Window, "max wait for every client to be back after the SIGTERM")
	fs.DurationVar(&cfg.Bin, "bin", cfg.Bin, "width of one bin of the count")
	fs.StringVar(&cfg.Label, "label", cfg.Label, "name of this run in the plot")
	jsonOut := fs.String("json", "", "write the result as JSON to this file")
	plot := fs.String("plot", "", "draw reconnects per bin to this .svg")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	res, err := bench.RunReconnect(ctx, cfg, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsedge bench reconnect:", err)
		return 1
	}
	fmt.Print(res.Summary())
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "wsedge bench reconnect:", err)
			return 1
		}
	}
	if *plot != "" {
		if err := writeReconnectPlot(*plot, []*bench.ReconnectResult{res}, ""); err != nil {
			fmt.Fprintln(os.Stderr, "wsedge bench reconnect:", err)
			return 1
		}
	}
	return 0
}

func runBenchReconnectPlot(args []string) int {
	fs := flag.NewFlagSet("bench reconnect plot", flag.ContinueOnError)
	out := fs.String("o", "storm.svg", "output .svg")
	title := fs.String("title", "", "plot title")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "wsedge bench reconnect plot: name one or more result JSON files (from --json)")
		return 2
	}
	var rs []*bench.ReconnectResult
	for _, path := range fs.Args() {
		b, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "wsedge bench reconnect plot:", err)
			return 1
		}
		var r bench.ReconnectResult
		if err := json.Unmarshal(b, &r); err != nil {
			fmt.Fprintf(os.Stderr, "wsedge bench reconnect plot: %s: %v\n", path, err)
			return 1
		}
		rs = append(rs, &r)
	}
	if err := writeReconnectPlot(*out, rs, *title); err != nil {
		fmt.Fprintln(os.Stderr, "wsedge bench reconnect plot:", err)
		return 1
	}
	return 0
}

func writeReconnectPlot(path string, rs []*bench.ReconnectResult, title string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := bench.PlotReconnectSVG(f, rs, title); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
