package client

import (
	"context"
	"net"
	"net/http"
	"time"
)

// Option configures a Client at Dial.
type Option func(*options)

type options struct {
	token          func(ctx context.Context) (string, error)
	backoff        Backoff
	healthyAfter   time.Duration
	readTimeout    time.Duration
	commandTimeout time.Duration
	dialTimeout    time.Duration
	queueSize      int
	maxMessage     int
	onState        func(StateChange)
	header         http.Header
	netDial        func(ctx context.Context, network, addr string) (net.Conn, error)
	rand           func() float64
}

func defaultOptions() options {
	return options{
		backoff:        DefaultBackoff(),
		healthyAfter:   5 * time.Second,
		readTimeout:    50 * time.Second,
		commandTimeout: 10 * time.Second,
		dialTimeout:    10 * time.Second,
		queueSize:      256,
		maxMessage:     16 << 20,
	}
}

// WithToken sets the callback that supplies the JWT: called before every
// connection attempt and when the server asks for a refresh. The token
// goes in the Authorization header.
func WithToken(get func(ctx context.Context) (string, error)) Option {
	return func(o *options) { o.token = get }
}

// WithBackoff sets the reconnect schedule (default 0.5 s, 20 s, factor 2).
func WithBackoff(b Backoff) Option { return func(o *options) { o.backoff = b } }

// WithHealthyAfter sets how long a connection must stay up for the backoff
// to start again from its first attempt (default 5 s).
func WithHealthyAfter(d time.Duration) Option { return func(o *options) { o.healthyAfter = d } }

// WithReadTimeout sets how long the client waits hearing nothing (no
// reply, no push, no ping) before it takes the connection for dead and
// reconnects (default 50 s: twice the server's default ping interval).
// After half of it the client sends a ping command itself.
func WithReadTimeout(d time.Duration) Option { return func(o *options) { o.readTimeout = d } }

// WithCommandTimeout bounds the wait for a command's reply, and a queued
// publish's wait in the offline queue (default 10 s).
func WithCommandTimeout(d time.Duration) Option { return func(o *options) { o.commandTimeout = d } }

// WithDialTimeout bounds one connection attempt, TCP and upgrade (default 10 s).
func WithDialTimeout(d time.Duration) Option { return func(o *options) { o.dialTimeout = d } }

// WithOfflineQueue sets how many publishes may wait while the client is
// disconnected (default 256; 0 turns the queue off: such publishes fail
// with ErrOffline). Over it Publish fails with ErrQueueFull.
func WithOfflineQueue(n int) Option { return func(o *options) { o.queueSize = n } }

// WithMaxMessage bounds one message from the server (default 16 MiB); a
// larger one ends the connection.
func WithMaxMessage(n int) Option { return func(o *options) { o.maxMessage = n } }

// WithStateHandler sets the callback of every state change, called on the
// dispatcher goroutine in order with the publications.
func WithStateHandler(fn func(StateChange)) Option { return func(o *options) { o.onState = fn } }

// WithHeader adds request headers to the upgrade (e.g. Origin).
func WithHeader(h http.Header) Option { return func(o *options) { o.header = h.Clone() } }

// WithNetDial replaces the TCP dialer (tests, proxies, unix sockets).
func WithNetDial(fn func(ctx context.Context, network, addr string) (net.Conn, error)) Option {
	return func(o *options) { o.netDial = fn }
}

// withRand replaces the jitter's random source (tests).
func withRand(fn func() float64) Option { return func(o *options) { o.rand = fn } }
