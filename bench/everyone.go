package bench

import (
	"bytes"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// The "everyone" broadcast (--all-channel, --all-every): beside its own
// channel every broadcast subscriber subscribes to one channel all of them
// share (a second subscribe command, id subscribeAllID), and one publisher
// connection of its own (roleAllPub, on worker 0's publisher loop)
// publishes {"t":<send time>,"a":<n>,"p":"…"} to it every AllEvery, the
// first half an interval into the measured phase so it does not coincide
// with the per-channel publishes at its start. Subscribers tell its
// deliveries by their prefix {"channel":<all channel>, and account them
// apart: their own HDR histogram of publish → delivery, a 128-bit bitmap
// per connection (missing and duplicated broadcasts), and per broadcast
// the deliveries and the latest one, whose maximum over every process is
// the time until the last subscriber had it. The receive path allocates
// nothing: the per-broadcast arrays are sized before the loops run.

const (
	// subscribeAllID is the id of a subscriber's subscribe to the all
	// channel (pings use their send time as id, publishers ids from 2 on
	// connections of their own).
	subscribeAllID = 2
	// maxAllBroadcasts bounds the broadcasts of one run to what the
	// per-connection bitmap (conn.allSeen) holds.
	maxAllBroadcasts = 128
	minAllEvery      = 100 * time.Millisecond
)

var (
	keyA        = []byte(`"a":`)
	keyCode     = []byte(`"code":`)
	keyPingPush = []byte(`{"ping":{}}`)
)

// validateEveryone checks the everyone-broadcast fields.
func (cfg *Config) validateEveryone() error {
	if cfg.AllChannel == "" {
		return nil
	}
	if cfg.Mode != ModeBroadcast {
		return fmt.Errorf("all-channel: only for broadcast, not %s", cfg.Mode)
	}
	if !strings.Contains(cfg.AllChannel, ":") || strings.ContainsAny(cfg.AllChannel, "\" \\") {
		return fmt.Errorf("all-channel: %q is not namespace:name", cfg.AllChannel)
	}
	for i := range cfg.Channels {
		if cfg.ChannelName(i) == cfg.AllChannel {
			return fmt.Errorf("all-channel: %q is also one of the --channels", cfg.AllChannel)
		}
	}
	if cfg.AllEvery < minAllEvery {
		return fmt.Errorf("all-every: %v under %v", cfg.AllEvery, minAllEvery)
	}
	if n := cfg.allBroadcasts(); n > maxAllBroadcasts {
		return fmt.Errorf("all-every: %v over a %v duration is %d broadcasts, at most %d", cfg.AllEvery, cfg.Duration, n, maxAllBroadcasts)
	}
	return nil
}

// allBroadcasts is how many everyone broadcasts a run sends at most: one
// at AllEvery/2, then every AllEvery while the measured phase lasts.
func (cfg *Config) allBroadcasts() int {
	if cfg.AllChannel == "" || cfg.AllEvery <= 0 {
		return 0
	}
	if cfg.Duration <= cfg.AllEvery/2 {
		return 0
	}
	return int((cfg.Duration-cfg.AllEvery/2-1)/cfg.AllEvery) + 1
}

// allPrefix returns how a delivery of the all channel begins.
func (w *worker) allPrefix() []byte {
	return append(append([]byte(`{"channel":`), strconv.Quote(w.cfg.AllChannel)...), ',')
}

// subscribeAll sends subscriber c's subscribe to the all channel.
func (l *loop) subscribeAll(c *conn) {
	l.pendingSubs++
	c.allPending = true
	l.sendSubscribe(c, true)
}

// startAll puts the all publisher on the pacer: a broadcast every
// AllEvery from half an interval on.
func (l *loop) startAll(c *conn, now int64) {
	every := int64(l.w.cfg.AllEvery)
	l.schedule(c, now, every, every/2)
}

// onAllReply handles the reply to subscribeAll.
func (l *loop) onAllReply(c *conn, good bool) {
	c.allPending = false
	l.pendingSubs--
	if good {
		c.allOK = true
		l.stats.AllSubscribed++
		l.allSubs++
	}
}

// sendAllPublish sends everyone broadcast c.seq+1 on the all publisher c.
func (l *loop) sendAllPublish(c *conn) {
	n := c.seq
	c.seq++
	a := n + 1
	now := nowNanos()
	b := append(l.wbuf[:0], `{"id":`...)
	b = strconv.AppendUint(b, n+subscribeID+1, 10)
	b = append(b, `,"op":"publish","channel":`...)
	b = strconv.AppendQuote(b, l.w.cfg.AllChannel)
	b = append(b, `,"data":{"t":`...)
	b = strconv.AppendInt(b, now, 10)
	b = append(b, `,"a":`...)
	b = strconv.AppendUint(b, a, 10)
	b = append(b, `,"p":"`...)
	for i := publishPadding(l.w.cfg.Size, now, a); i > 0; i-- {
		b = append(b, 'x')
	}
	b = append(b, `"}}`...)
	l.wbuf = b
	if l.sendText(c, b) {
		l.stats.AllSent++
	}
}

// onAll accounts a delivery of the all channel to subscriber c.
func (l *loop) onAll(c *conn, now int64, msg []byte) {
	t, ok1 := jsonInt(msg, keyT)
	a, ok2 := jsonInt(msg, keyA)
	if !ok1 || !ok2 || a < 1 || a > maxAllBroadcasts || l.allLast == nil {
		l.stats.Errors++
		l.fail(fmt.Errorf("everyone push without bench data: %.200s", msg))
		return
	}
	l.stats.AllReceived++
	d := now - t
	record(l.alat, d)
	i := a - 1
	bit := uint64(1) << (i & 63)
	if c.allSeen[i>>6]&bit != 0 {
		l.stats.AllDuplicates++
		return
	}
	c.allSeen[i>>6] |= bit
	l.stats.AllUnique++
	l.allCount[i]++
	if d > l.allLast[i] {
		l.allLast[i] = d
	}
}

// allMissing counts the loop's open subscribers that hold fewer than n
// distinct everyone broadcasts (those whose subscribe to it failed too).
func (l *loop) allMissing(n int64) int64 {
	var k int64
	for _, c := range l.conns {
		if c.role == roleSub && int64(bits.OnesCount64(c.allSeen[0])+bits.OnesCount64(c.allSeen[1])) < n {
			k++
		}
	}
	return k
}

// Everyone is what a run measured of its everyone broadcasts; part of a
// Result.
type Everyone struct {
	Channel string  `json:"channel"`
	Every   float64 `json:"every_s"`
	// Subscribed: subscribers whose subscribe to the channel was
	// acknowledged. Published: broadcasts the server acknowledged.
	// Expected: Published × the subscribers asked for (one that never
	// subscribed shows up as missing deliveries).
	Subscribed int64 `json:"subscribed"`
	Sent       int64 `json:"sent"`
	Published  int64 `json:"published"`
	Expected   int64 `json:"expected_deliveries"`
	Received   int64 `json:"received"`
	Unique     int64 `json:"unique"`
	Duplicates int64 `json:"duplicates"`
	Missing    int64 `json:"missing"`
	// ConnsMissing: subscribers (open after the drain) that missed at
	// least one acknowledged broadcast, subscribed to the channel or not.
	ConnsMissing int64 `json:"conns_missing"`
	// Latency: publish → delivery of every delivery.
	Latency     Summary `json:"latency"`
	LatencyHist string  `json:"latency_hist"`
	// Broadcasts: per broadcast, its deliveries and the time from its
	// publish until the last of them (µs); LastMax the longest of those.
	Broadcasts []Broadcast `json:"broadcasts"`
	LastP50    float64     `json:"last_delivery_p50_us"`
	LastMax    float64     `json:"last_delivery_max_us"`
}

// Broadcast is one everyone broadcast.
type Broadcast struct {
	N          int     `json:"n"`
	Deliveries int64   `json:"deliveries"`
	Last       float64 `json:"last_delivery_us"`
}

// everyoneAcc merges the workers' everyone figures.
type everyoneAcc struct {
	lat   *hdr.Histogram
	last  []int64
	count []int64
}

func newEveryoneAcc() *everyoneAcc {
	return &everyoneAcc{lat: newHist(), last: make([]int64, maxAllBroadcasts), count: make([]int64, maxAllBroadcasts)}
}

func (a *everyoneAcc) add(m *message) error {
	h, err := decodeHist(m.AllLat)
	if err != nil {
		return err
	}
	if dropped := a.lat.Merge(h); dropped != 0 {
		return fmt.Errorf("bench: merging everyone latencies dropped %d samples", dropped)
	}
	for i := 0; i < len(m.AllLast) && i < maxAllBroadcasts; i++ {
		a.last[i] = max(a.last[i], m.AllLast[i])
	}
	for i := 0; i < len(m.AllCount) && i < maxAllBroadcasts; i++ {
		a.count[i] += m.AllCount[i]
	}
	return nil
}

// result builds the Result's Everyone from the merged figures.
func (a *everyoneAcc) result(cfg *Config, s Stats, published int64) *Everyone {
	e := &Everyone{Channel: cfg.AllChannel, Every: cfg.AllEvery.Seconds(), Subscribed: s.AllSubscribed,
		Sent: s.AllSent, Published: published, Expected: published * int64(cfg.Conns), Received: s.AllReceived,
		Unique: s.AllUnique, Duplicates: s.AllDuplicates, ConnsMissing: s.AllConnsMissing,
		Latency: summarize(a.lat), LatencyHist: encodeHist(a.lat)}
	e.Missing = max(0, e.Expected-e.Unique)
	last := newHist()
	for i := range a.count {
		if int64(i) >= max(published, s.AllSent) && a.count[i] == 0 {
			continue
		}
		b := Broadcast{N: i + 1, Deliveries: a.count[i], Last: float64(a.last[i]) / 1e3}
		e.Broadcasts = append(e.Broadcasts, b)
		if b.Deliveries > 0 {
			record(last, a.last[i])
		}
	}
	if last.TotalCount() > 0 {
		e.LastP50 = float64(last.ValueAtQuantile(50)) / 1e3
		e.LastMax = float64(last.Max()) / 1e3
	}
	return e
}

// writeEveryone adds the everyone lines to a summary.
func (e *Everyone) write(b *strings.Builder) {
	fmt.Fprintf(b, "  everyone    %s every %gs: %d subscribed, %d broadcasts sent, %d acknowledged\n",
		e.Channel, e.Every, e.Subscribed, e.Sent, e.Published)
	fmt.Fprintf(b, "  everyone    deliveries expected %d  received %d  unique %d  missing %d (%d connections)  duplicated %d\n",
		e.Expected, e.Received, e.Unique, e.Missing, e.ConnsMissing, e.Duplicates)
	fmt.Fprintf(b, "  everyone    delivery %s\n", e.Latency)
	if len(e.Broadcasts) > 0 {
		fmt.Fprintf(b, "  everyone    time to last delivery p50 %s  max %s; per broadcast", fmtUs(e.LastP50), fmtUs(e.LastMax))
		for i, x := range e.Broadcasts {
			if i == 20 && len(e.Broadcasts) > 21 {
				b.WriteString(" …")
				break
			}
			fmt.Fprintf(b, " %s", fmtUs(x.Last))
		}
		b.WriteString("\n")
	}
}

// isAll reports whether msg is a delivery of the all channel.
func (w *worker) isAll(msg []byte) bool {
	return w.allPfx != nil && bytes.HasPrefix(msg, w.allPfx)
}
