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

// runBenchIngest is `wsedge bench ingest`.
func runBenchIngest(args []string) int {
	cfg := bench.IngestConfig{URL: "ws://127.0.0.1:8080/ws", Channel: "bench:ingest", Window: 4096, Size: 64, Duration: 10e9}
	fs := flag.NewFlagSet("bench ingest", flag.ContinueOnError)
	fs.StringVar(&cfg.Socket, "socket", cfg.Socket, "ingest socket unix:///path")
	fs.StringVar(&cfg.API, "api", cfg.API, "publish through the HTTP API at this admin URL instead (http://127.0.0.1:9090)")
	fs.StringVar(&cfg.APIKey, "api-key", os.Getenv("WSEDGE_API_KEY"), "HTTP API key (env WSEDGE_API_KEY)")
	fs.StringVar(&cfg.URL, "url", cfg.URL, "WebSocket endpoint for the subscribers")
	fs.IntVar(&cfg.Subs, "subs", cfg.Subs, "WebSocket subscribers (round-robin over the channels)")
	fs.IntVar(&cfg.Channels, "channels", 1, "channels <channel>-1 … <channel>-N, published round-robin")
	fs.StringVar(&cfg.Channel, "channel", cfg.Channel, "channel name prefix")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "publishes per second in all (0: as fast as the window allows)")
	fs.IntVar(&cfg.Window, "window", cfg.Window, "requests in flight (socket: pipelined on one connection; API: concurrent requests)")
	fs.IntVar(&cfg.Size, "size", cfg.Size, "payload bytes")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "measured phase")
	jsonOut := fs.String("json", "", "also write the result as JSON to this file")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, err := bench.RunIngest(ctx, cfg, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsedge bench ingest:", err)
		return 1
	}
	fmt.Printf("transport %s, %d subscribers, %d channels, rate %.0f/s, window %d, %d B\n",
		res.Transport, cfg.Subs, cfg.Channels, cfg.Rate, cfg.Window, cfg.Size)
	fmt.Printf("acked %d of %d sent in %v (%d errors): %.0f acks/s\n", res.Acked, res.Sent, cfg.Duration, res.Errors, res.AcksPerSec)
	fmt.Printf("ack latency      p50 %.0f µs  p99 %.0f µs  p99.9 %.0f µs  max %.0f µs\n", res.Ack.P50, res.Ack.P99, res.Ack.P999, res.Ack.Max)
	if cfg.Subs > 0 {
		fmt.Printf("delivered %d of %d\n", res.Delivered, res.Expected)
		fmt.Printf("delivery latency p50 %.0f µs  p99 %.0f µs  p99.9 %.0f µs  max %.0f µs\n", res.Delivery.P50, res.Delivery.P99, res.Delivery.P999, res.Delivery.Max)
	}
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "wsedge bench ingest:", err)
			return 1
		}
	}
	return 0
}
