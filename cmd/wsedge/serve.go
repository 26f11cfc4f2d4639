package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"gopkg.in/yaml.v3"

	"github.com/wsedge/wsedge/engine"
)

// loadServeConfig builds the configuration from, in rising precedence: the
// built-in defaults, a YAML file (--config or WSEDGE_CONFIG), WSEDGE_*
// environment variables, and flags.
func loadServeConfig(args []string) (engine.Config, string, error) {
	cfg := engine.DefaultConfig()
	if path := configPath(args); path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return cfg, "", fmt.Errorf("config: %w", err)
		}
		dec := yaml.NewDecoder(strings.NewReader(string(b)))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil {
			return cfg, "", fmt.Errorf("config %s: %w", path, err)
		}
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var origins, logLevel string
	upgradeBinary = ""
	fs.String("config", "", "YAML configuration file (env WSEDGE_CONFIG)")
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "WebSocket listen address host:port")
	fs.StringVar(&cfg.Admin, "admin", cfg.Admin, "admin HTTP address for /metrics, /healthz, /readyz (empty disables)")
	fs.StringVar(&cfg.Path, "path", cfg.Path, "WebSocket endpoint path")
	fs.IntVar(&cfg.Loops, "loops", cfg.Loops, "event loops (0: GOMAXPROCS)")
	fs.BoolVar(&cfg.Echo, "echo", cfg.Echo, "echo every data message (conformance and latency benchmarks)")
	fs.IntVar(&cfg.MaxMessage, "max-message", cfg.MaxMessage, "largest message payload in bytes (larger: close 1009)")
	fs.IntVar(&cfg.MaxConns, "max-conns", cfg.MaxConns, "connection ceiling (0: RLIMIT_NOFILE minus a reserve)")
	fs.DurationVar(&cfg.PingInterval, "ping-interval", cfg.PingInterval, "silence before the server pings")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", cfg.IdleTimeout, "silence before the server closes")
	fs.DurationVar(&cfg.HandshakeTimeout, "handshake-timeout", cfg.HandshakeTimeout, "accept to completed upgrade")
	fs.DurationVar(&cfg.CloseTimeout, "close-timeout", cfg.CloseTimeout, "wait for the peer's close frame")
	fs.DurationVar(&cfg.DrainGrace, "drain-grace", cfg.DrainGrace, "spread of close 1001 over a drain (SIGTERM/SIGINT)")
	fs.DurationVar(&cfg.DrainReconnectWindow, "drain-reconnect-window", cfg.DrainReconnectWindow, "a drain's disconnect pushes name reconnect delays spread uniformly over this window (0: none)")
	fs.IntVar(&cfg.MaxOutboundBytes, "max-outbound-bytes", cfg.MaxOutboundBytes, "bytes a connection may have queued before the slow-consumer policy applies")
	fs.IntVar(&cfg.MaxOutboundMessages, "max-outbound-messages", cfg.MaxOutboundMessages, "messages a connection may have queued before the slow-consumer policy applies")
	fs.StringVar(&cfg.SlowConsumer, "slow-consumer", cfg.SlowConsumer, "slow-consumer policy: close (1013) or lag (drop, then tell the client to recover)")
	fs.IntVar(&cfg.SocketSendBuffer, "socket-send-buffer", cfg.SocketSendBuffer, "SO_SNDBUF per connection in bytes (0: kernel autotuning)")
	fs.DurationVar(&cfg.FlushInterval, "flush-interval", cfg.FlushInterval, "write subscribers at most once per interval per loop (0: after every batch); trades latency for fan-out capacity")
	fs.StringVar(&cfg.Compression, "compression", cfg.Compression, "permessage-deflate: on (accept clients' offers) or off")
	fs.IntVar(&cfg.CompressionMinSize, "compression-min-size", cfg.CompressionMinSize, "messages shorter than this many bytes go out uncompressed")
	fs.IntVar(&cfg.CompressionLevel, "compression-level", cfg.CompressionLevel, "deflate level, 1 (fastest) to 9 (smallest)")
	fs.IntVar(&cfg.RecoveryMax, "recovery-max", cfg.RecoveryMax, "most publications in one recovery or history reply")
	fs.StringVar(&cfg.Broker, "broker", cfg.Broker, "memory (one node) or a Redis URL joining a cluster: redis://host:6379/0, rediss://, unix://, redis+sentinel://, redis+cluster://")
	fs.BoolVar(&cfg.InsecureNoAuth, "insecure-no-auth", cfg.InsecureNoAuth, "accept protocol clients without a token, with every permission (benchmarks and local development only)")
	fs.StringVar(&cfg.AuthSecretFile, "auth-secret-file", cfg.AuthSecretFile, "file holding the HS256 secret (at least 32 bytes, mode 0600)")
	pemFiles := strings.Join(cfg.AuthPEMFiles, ",")
	fs.StringVar(&pemFiles, "auth-pem-files", pemFiles, "comma-separated PEM public keys (RS256, ES256, EdDSA)")
	fs.StringVar(&cfg.AuthJWKS, "auth-jwks", cfg.AuthJWKS, "JWKS file or http(s) URL (keys by kid, reloaded)")
	fs.StringVar(&cfg.AuthAudience, "auth-audience", cfg.AuthAudience, "required token audience (aud)")
	fs.StringVar(&cfg.AuthIssuer, "auth-issuer", cfg.AuthIssuer, "required token issuer (iss)")
	fs.DurationVar(&cfg.AuthLeeway, "auth-leeway", cfg.AuthLeeway, "clock skew allowed on exp and nbf")
	fs.DurationVar(&cfg.RefreshWindow, "refresh-window", cfg.RefreshWindow, "time a client has to send a new token after the refresh push")
	fs.IntVar(&cfg.MaxConnsPerUser, "max-conns-per-user", cfg.MaxConnsPerUser, "connections per user on this node (0: no limit)")
	fs.DurationVar(&cfg.OutboundTimeout, "outbound-timeout", cfg.OutboundTimeout, "close (1008) a connection whose unread replies stay over --max-outbound-bytes this long")
	fs.IntVar(&cfg.MaxSubsPerConn, "max-subs-per-conn", cfg.MaxSubsPerConn, "most subscriptions of one connection")
	fs.IntVar(&cfg.CommandRate, "command-rate", cfg.CommandRate, "protocol commands per second per connection (token bucket; 0: no limit)")
	fs.IntVar(&cfg.CommandBurst, "command-burst", cfg.CommandBurst, "burst of the per-connection command bucket")
	fs.IntVar(&cfg.MaxConnsPerIP, "max-conns-per-ip", cfg.MaxConnsPerIP, "open connections per client address (0: no limit; behind a load balancer leave it off)")
	fs.Float64Var(&cfg.HandshakeRatePerIP, "handshake-rate-per-ip", cfg.HandshakeRatePerIP, "handshakes per second per client address (0: no limit)")
	fs.IntVar(&cfg.HandshakeBurstPerIP, "handshake-burst-per-ip", cfg.HandshakeBurstPerIP, "burst of the per-address handshake bucket")
	fs.StringVar(&cfg.HandoffSocket, "handoff-socket", cfg.HandoffSocket, "unix socket where a new process takes this one's connections over (wsedge upgrade, SIGUSR2)")
	fs.StringVar(&cfg.Takeover, "takeover", cfg.Takeover, "unix socket of a running wsedge whose connections this one takes over at start (same port, same configuration)")
	fs.StringVar(&upgradeBinary, "upgrade-binary", "", "binary SIGUSR2 starts to take over (default: this executable's path)")
	fs.StringVar(&origins, "allowed-origins", strings.Join(cfg.AllowedOrigins, ","), "comma-separated Origin values to accept (empty: any)")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	ingestFlags(fs, &cfg.Ingest)
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		env := "WSEDGE_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok && envErr == nil {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("%s: %w", env, err)
			}
		}
	})
	if envErr != nil {
		return cfg, "", envErr
	}
	if err := fs.Parse(args); err != nil {
		return cfg, "", err
	}
	if fs.NArg() > 0 {
		return cfg, "", fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	cfg.AuthPEMFiles = nil
	for _, f := range strings.Split(pemFiles, ",") {
		if f = strings.TrimSpace(f); f != "" {
			cfg.AuthPEMFiles = append(cfg.AuthPEMFiles, f)
		}
	}
	cfg.AllowedOrigins = nil
	for _, o := range strings.Split(origins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			cfg.AllowedOrigins = append(cfg.AllowedOrigins, o)
		}
	}
	return cfg, logLevel, cfg.Validate()
}

// configPath finds --config in args or WSEDGE_CONFIG, before flags are
// parsed, because the file's values are the flags' defaults.
func configPath(args []string) string {
	for i, a := range args {
		for _, p := range []string{"--config", "-config"} {
			if a == p && i+1 < len(args) {
				return args[i+1]
			}
			if v, ok := strings.CutPrefix(a, p+"="); ok {
				return v
			}
		}
	}
	return os.Getenv("WSEDGE_CONFIG")
}

func runServe(args []string) int {
	cfg, level, err := loadServeConfig(args)
	if err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		fmt.Fprintln(os.Stderr, "wsedge serve:", err)
		return 2
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		fmt.Fprintln(os.Stderr, "wsedge serve: --log-level:", err)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	srv, err := engine.New(cfg, log)
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	var tk *engine.Takeover
	if cfg.Takeover != "" {
		// Before listening: the hello tells where client ids start.
		if tk, err = srv.DialTakeover(cfg.Takeover); err != nil {
			log.Error("takeover", "err", err)
			reportTakeover("failed: " + err.Error())
			return 1
		}
	}
	// The first SIGTERM or SIGINT drains; a second one exits at once (an
	// operator who presses Ctrl-C twice does not want to wait the grace).
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		sig := <-sigs
		log.Info("signal: draining; send it again to exit at once", "signal", sig.String())
		cancel()
		sig = <-sigs
		log.Warn("second signal: exiting without finishing the drain", "signal", sig.String())
		os.Exit(130)
	}()
	stopHandoff := startHandoff(srv, cfg, tk, args, log, cancel)
	defer stopHandoff()
	if err := srv.Run(ctx); err != nil {
		log.Error("serve", "err", err)
		return 1
	}
	return 0
}
