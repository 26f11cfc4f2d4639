package shard

import "strings"

// Sub is one connection's subscription to one channel in an Index. The
// engine keeps the *Sub it gets from Index.Add in the connection's own list
// of subscriptions and passes it back to Index.Remove.
//
// Ownership: like its Index, a Sub belongs to the loop goroutine.
type Sub[C any] struct {
	// Conn is the caller's handle for the subscriber: a connection
	// pointer, or a small struct with per-subscription state (a lagging
	// mark, a pending flag) that the loop may update through the *Sub.
	Conn C

	list *subList[C]
	pos  int // index in list.subs
}

// Channel returns the channel of the subscription. It must not be called
// after Remove(s).
func (s *Sub[C]) Channel() string { return s.list.channel }

type subList[C any] struct {
	channel string
	subs    []*Sub[C]
}

// Index maps each channel to its local subscribers on one shard. Add and
// Remove are O(1); removing a closed connection from all its channels is
// O(its subscriptions): call Remove for each *Sub it holds. Channels without
// subscribers are forgotten.
//
// Ownership: an Index belongs to its shard's loop goroutine; no method may be
// called from any other goroutine, and none is safe for concurrent use.
type Index[C any] struct {
	chans map[string]*subList[C]
	subs  int
}

// NewIndex returns an empty index.
func NewIndex[C any]() *Index[C] {
	return &Index[C]{chans: make(map[string]*subList[C])}
}

// Add subscribes conn to channel and reports whether it is the channel's
// first local subscriber (the engine then calls Hub.Add). It does not check
// for a duplicate: whether conn is already subscribed is in the caller's
// own list. It allocates the Sub, and the channel's entry and a copy of
// its name when the channel is new to the shard, so channel may alias a
// reusable buffer.
func (x *Index[C]) Add(channel string, conn C) (s *Sub[C], first bool) {
	l := x.chans[channel]
	if l == nil {
		l = &subList[C]{channel: strings.Clone(channel)}
		x.chans[l.channel] = l
		first = true
	}
	s = &Sub[C]{Conn: conn, list: l, pos: len(l.subs)}
	l.subs = append(l.subs, s)
	x.subs++
	return s, first
}

// Remove unsubscribes s and reports whether its channel has no local
// subscriber left (the engine then calls Hub.Remove with the returned
// channel). It moves the channel's last subscriber into s's place. Removing
// the same Sub twice panics. It does not allocate.
func (x *Index[C]) Remove(s *Sub[C]) (channel string, last bool) {
	l := s.list
	if l == nil {
		panic("BUG: shard.Sub removed twice")
	}
	end := len(l.subs) - 1
	moved := l.subs[end]
	l.subs[s.pos] = moved
	moved.pos = s.pos
	l.subs[end] = nil
	l.subs = l.subs[:end]
	s.list = nil
	x.subs--
	if end == 0 {
		delete(x.chans, l.channel)
		return l.channel, true
	}
	return l.channel, false
}

// Subs returns channel's local subscribers, in no particular order, for a
// fan-out loop. It does not allocate. The slice is the index's own: valid
// until the next Add or Remove on this index, and not to be modified. A
// fan-out that may remove the subscriber it is visiting (slow-consumer
// close) iterates backwards: Remove moves the last element, already visited,
// into the freed place.
func (x *Index[C]) Subs(channel string) []*Sub[C] {
	if l := x.chans[channel]; l != nil {
		return l.subs
	}
	return nil
}

// Channels returns the number of channels with local subscribers.
func (x *Index[C]) Channels() int { return len(x.chans) }

// Len returns the number of subscriptions.
func (x *Index[C]) Len() int { return x.subs }
