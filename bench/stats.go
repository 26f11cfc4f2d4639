package bench

// Stats are the counters of a loop, a worker process or a whole run. A loop
// owns its Stats and updates them on its goroutine only; workers and the
// parent only ever see copies taken on that goroutine.
type Stats struct {
	Dialed        int64 `json:"dialed"`
	Connected     int64 `json:"connected"`
	Open          int64 `json:"open"`
	ConnectFailed int64 `json:"connect_failed"`
	// Dropped counts open connections the server closed, or that failed,
	// while the run still needed them.
	Dropped int64 `json:"dropped"`
	// Sent: echo messages or publishes. Received: echo replies or deliveries.
	Sent     int64 `json:"sent"`
	Received int64 `json:"received"`
	// Errors: error replies, protocol violations, unexpected messages.
	Errors int64 `json:"errors"`
	// Subscribed: broadcast subscribers whose subscribe the server
	// acknowledged, or idle connections that got every subscribed push
	// their token owes them.
	Subscribed int64 `json:"subscribed"`
	// ServerSubs counts subscribed pushes: subscriptions the server made
	// itself from a token's subs claim.
	ServerSubs int64 `json:"server_subs,omitempty"`
	PublishOK  int64 `json:"publish_ok"`
	// Unique deliveries (distinct sequence numbers per subscriber).
	Unique     int64 `json:"unique"`
	Duplicates int64 `json:"duplicates"`
	OutOfOrder int64 `json:"out_of_order"`
	// Lagged counts "lagged" pushes (slow-consumer policy lag) to
	// subscribers that were measured.
	Lagged int64 `json:"lagged,omitempty"`
	// Disconnected counts "disconnect" pushes (the server closing the
	// connection, e.g. as a slow consumer) to measured subscribers.
	Disconnected int64 `json:"disconnected,omitempty"`
	// Slow subscribers (--slow): how many subscribed, how many the bench
	// saw closed by the server (close frame, EOF or reset) once it read
	// what was queued for them after the measured phase, and the last close
	// code seen. A lower bound: a slow subscriber whose backlog does not
	// drain within --drain is not counted (ServerStats.SlowClosed is the
	// server's own count).
	SlowSubscribed int64 `json:"slow_subscribed,omitempty"`
	SlowClosed     int64 `json:"slow_closed,omitempty"`
	SlowCloseCode  int64 `json:"slow_close_code,omitempty"`
	// Ping commands the subscribers sent (broadcast --ping-rate), replies
	// that said ok, and error replies.
	Pings      int64 `json:"pings,omitempty"`
	Pongs      int64 `json:"pongs,omitempty"`
	PingErrors int64 `json:"ping_errors,omitempty"`
	// The everyone channel (--all-channel, everyone.go): subscribers whose
	// subscribe to it the server acknowledged; broadcasts sent to it and
	// acknowledged; deliveries of them received, unique per subscriber,
	// duplicated; subscribers that missed at least one acknowledged
	// broadcast (counted once, after the drain).
	AllSubscribed   int64 `json:"all_subscribed,omitempty"`
	AllSent         int64 `json:"all_sent,omitempty"`
	AllPublishOK    int64 `json:"all_publish_ok,omitempty"`
	AllReceived     int64 `json:"all_received,omitempty"`
	AllUnique       int64 `json:"all_unique,omitempty"`
	AllDuplicates   int64 `json:"all_duplicates,omitempty"`
	AllConnsMissing int64 `json:"all_conns_missing,omitempty"`
	// SubRetries: subscribes the server refused with 503 that were sent
	// again after a backoff (retry.go).
	SubRetries int64 `json:"sub_retries,omitempty"`
	// Heartbeats: WebSocket ping frames the server sent (each answered
	// with a pong) and application-level {"ping":{}} pushes.
	PingFrames int64 `json:"ping_frames,omitempty"`
	PingPushes int64 `json:"ping_pushes,omitempty"`
	// Node drain (--drain-nodes): disconnect pushes with code 4001
	// (shutdown); connections the server then closed with 1001 after
	// that push; connections that ended any other way while the nodes
	// drained (no push, another code, EOF or reset).
	DrainPushes int64 `json:"drain_pushes,omitempty"`
	DrainClean  int64 `json:"drain_clean,omitempty"`
	DrainOther  int64 `json:"drain_other,omitempty"`
	// Handshakes completed (connect mode: full connect/upgrade/close cycles).
	Handshakes int64 `json:"handshakes"`
	BytesIn    int64 `json:"bytes_in"`
	BytesOut   int64 `json:"bytes_out"`
	// Pending: dials, handshakes and subscribes not yet answered.
	Pending   int64  `json:"pending"`
	LastError string `json:"last_error,omitempty"`
}

func (s *Stats) add(o Stats) {
	s.Dialed += o.Dialed
	s.Connected += o.Connected
	s.Open += o.Open
	s.ConnectFailed += o.ConnectFailed
	s.Dropped += o.Dropped
	s.Sent += o.Sent
	s.Received += o.Received
	s.Errors += o.Errors
	s.Subscribed += o.Subscribed
	s.ServerSubs += o.ServerSubs
	s.PublishOK += o.PublishOK
	s.Unique += o.Unique
	s.Duplicates += o.Duplicates
	s.OutOfOrder += o.OutOfOrder
	s.Lagged += o.Lagged
	s.Disconnected += o.Disconnected
	s.SlowSubscribed += o.SlowSubscribed
	s.SlowClosed += o.SlowClosed
	if o.SlowCloseCode != 0 {
		s.SlowCloseCode = o.SlowCloseCode
	}
	s.Pings += o.Pings
	s.Pongs += o.Pongs
	s.PingErrors += o.PingErrors
	s.AllSubscribed += o.AllSubscribed
	s.AllSent += o.AllSent
	s.AllPublishOK += o.AllPublishOK
	s.AllReceived += o.AllReceived
	s.AllUnique += o.AllUnique
	s.AllDuplicates += o.AllDuplicates
	s.AllConnsMissing += o.AllConnsMissing
	s.SubRetries += o.SubRetries
	s.PingFrames += o.PingFrames
	s.PingPushes += o.PingPushes
	s.DrainPushes += o.DrainPushes
	s.DrainClean += o.DrainClean
	s.DrainOther += o.DrainOther
	s.Handshakes += o.Handshakes
	s.BytesIn += o.BytesIn
	s.BytesOut += o.BytesOut
	s.Pending += o.Pending
	if o.LastError != "" {
		s.LastError = o.LastError
	}
}
