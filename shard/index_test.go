package shard

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

type testConn struct {
	id   int
	subs []*Sub[*testConn]
}

// checkIndex verifies every position and that the index holds exactly
// want (channel → sorted conn ids).
func checkIndex(t *testing.T, x *Index[*testConn], want map[string][]int) {
	t.Helper()
	total := 0
	for ch, ids := range want {
		var got []int
		for i, s := range x.Subs(ch) {
			if s.pos != i || s.Channel() != ch {
				t.Fatalf("channel %q: sub %d has pos %d channel %q", ch, i, s.pos, s.Channel())
			}
			got = append(got, s.Conn.id)
		}
		slices.Sort(got)
		if !slices.Equal(got, ids) {
			t.Fatalf("channel %q: subscribers %v, want %v", ch, got, ids)
		}
		total += len(ids)
	}
	if x.Channels() != len(want) || x.Len() != total {
		t.Fatalf("Channels %d Len %d, want %d and %d", x.Channels(), x.Len(), len(want), total)
	}
}

func TestIndexAddRemove(t *testing.T) {
	type op struct {
		add   bool
		ch    string
		conn  int
		first bool // Add: first; Remove: last
	}
	tests := []struct {
		name string
		ops  []op
		want map[string][]int
	}{
		{
			name: "first and last",
			ops: []op{
				{add: true, ch: "a", conn: 1, first: true},
				{add: true, ch: "a", conn: 2, first: false},
				{add: false, ch: "a", conn: 1, first: false},
				{add: false, ch: "a", conn: 2, first: true},
			},
			want: map[string][]int{},
		},
		{
			name: "remove from the middle",
			ops: []op{
				{add: true, ch: "a", conn: 1, first: true},
				{add: true, ch: "a", conn: 2, first: false},
				{add: true, ch: "a", conn: 3, first: false},
				{add: false, ch: "a", conn: 1, first: false},
			},
			want: map[string][]int{"a": {2, 3}},
		},
		{
			name: "channels independent",
			ops: []op{
				{add: true, ch: "a", conn: 1, first: true},
				{add: true, ch: "b", conn: 1, first: true},
				{add: false, ch: "a", conn: 1, first: true},
			},
			want: map[string][]int{"b": {1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := NewIndex[*testConn]()
			conns := map[int]*testConn{}
			for i, o := range tt.ops {
				c := conns[o.conn]
				if c == nil {
					c = &testConn{id: o.conn}
					conns[o.conn] = c
				}
				if o.add {
					s, first := x.Add(o.ch, c)
					if first != o.first {
						t.Fatalf("op %d %+v: first %v", i, o, first)
					}
					c.subs = append(c.subs, s)
					continue
				}
				j := slices.IndexFunc(c.subs, func(s *Sub[*testConn]) bool { return s.Channel() == o.ch })
				ch, last := x.Remove(c.subs[j])
				if ch != o.ch || last != o.first {
					t.Fatalf("op %d %+v: Remove = %q, %v", i, o, ch, last)
				}
				c.subs = slices.Delete(c.subs, j, j+1)
			}
			checkIndex(t, x, tt.want)
		})
	}
}

func TestIndexRandomAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	x := NewIndex[*testConn]()
	conns := make([]*testConn, 50)
	for i := range conns {
		conns[i] = &testConn{id: i}
	}
	channels := []string{"a", "b", "c", "d", "e"}
	model := map[string][]int{}
	for step := range 20_000 {
		c := conns[rng.IntN(len(conns))]
		ch := channels[rng.IntN(len(channels))]
		j := slices.IndexFunc(c.subs, func(s *Sub[*testConn]) bool { return s.Channel() == ch })
		if j < 0 {
			s, first := x.Add(ch, c)
			if first != (len(model[ch]) == 0) {
				t.Fatalf("step %d: Add first = %v with %d subscribers", step, first, len(model[ch]))
			}
			c.subs = append(c.subs, s)
			model[ch] = append(model[ch], c.id)
			slices.Sort(model[ch])
		} else {
			_, last := x.Remove(c.subs[j])
			c.subs = slices.Delete(c.subs, j, j+1)
			k := slices.Index(model[ch], c.id)
			model[ch] = slices.Delete(model[ch], k, k+1)
			if last != (len(model[ch]) == 0) {
				t.Fatalf("step %d: Remove last = %v with %d left", step, last, len(model[ch]))
			}
			if len(model[ch]) == 0 {
				delete(model, ch)
			}
		}
		if step%100 == 0 {
			checkIndex(t, x, model)
		}
	}
	checkIndex(t, x, model)
}

func TestIndexCloseConnection(t *testing.T) {
	x := NewIndex[*testConn]()
	h := NewHub()
	a, b := &testConn{id: 1}, &testConn{id: 2}
	for i := range 10 {
		ch := fmt.Sprint("ch", i)
		for _, c := range []*testConn{a, b} {
			s, first := x.Add(ch, c)
			if first {
				h.Add(ch, 0)
			}
			c.subs = append(c.subs, s)
		}
	}
	s, _ := x.Add("only-a", a)
	h.Add("only-a", 0)
	a.subs = append(a.subs, s)
	// What the engine does when a closes: O(a's subscriptions).
	for _, s := range a.subs {
		if ch, last := x.Remove(s); last {
			h.Remove(ch, 0)
		}
	}
	a.subs = nil
	want := map[string][]int{}
	for i := range 10 {
		want[fmt.Sprint("ch", i)] = []int{2}
	}
	checkIndex(t, x, want)
	if h.Len() != 10 {
		t.Fatalf("hub has %d channels, want 10", h.Len())
	}
}

func TestIndexRemoveWhileIteratingBackwards(t *testing.T) {
	x := NewIndex[*testConn]()
	for i := range 10 {
		x.Add("a", &testConn{id: i})
	}
	var visited []int
	subs := x.Subs("a")
	for i := len(subs) - 1; i >= 0; i-- {
		s := subs[i]
		visited = append(visited, s.Conn.id)
		if s.Conn.id%3 == 0 { // slow consumers closed during fan-out
			x.Remove(s)
		}
	}
	slices.Sort(visited)
	if !slices.Equal(visited, seq(0, 10)) {
		t.Fatalf("visited %v, want each subscriber once", visited)
	}
	checkIndex(t, x, map[string][]int{"a": {1, 2, 4, 5, 7, 8}})
}

func TestIndexCopiesChannelName(t *testing.T) {
	x := NewIndex[*testConn]()
	buf := []byte("chat:room1")
	s, _ := x.Add(unsafeString(buf), &testConn{})
	x.Add(unsafeString(buf), &testConn{})
	copy(buf, "xxxxxxxxxx")
	if len(x.Subs("chat:room1")) != 2 || s.Channel() != "chat:room1" {
		t.Fatalf("index lost the channel when the caller's buffer changed: %q", s.Channel())
	}
}

func TestIndexDoubleRemovePanics(t *testing.T) {
	x := NewIndex[*testConn]()
	s, _ := x.Add("a", &testConn{})
	x.Add("a", &testConn{})
	x.Remove(s)
	defer func() {
		if msg, _ := recover().(string); !strings.HasPrefix(msg, "BUG: ") {
			t.Fatalf("panic %q, want BUG: ...", msg)
		}
	}()
	x.Remove(s)
}

func TestIndexAllocs(t *testing.T) {
	x := NewIndex[*testConn]()
	c := &testConn{}
	for i := range 100 {
		x.Add("a", &testConn{id: i})
	}
	var sink int
	fanOut := testing.AllocsPerRun(1000, func() {
		for _, s := range x.Subs("a") {
			sink += s.Conn.id
		}
	})
	addRemove := testing.AllocsPerRun(1000, func() {
		s, _ := x.Add("a", c)
		x.Remove(s)
	})
	if fanOut != 0 {
		t.Fatalf("Subs + iteration: %v allocs, want 0", fanOut)
	}
	if addRemove != 1 {
		t.Fatalf("Add+Remove on a known channel: %v allocs, want 1 (the Sub)", addRemove)
	}
}
