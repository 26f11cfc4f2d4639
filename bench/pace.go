package bench

// pacer is a min-heap of senders ordered by their next due time (unix
// nanoseconds). Each loop owns one; nothing else touches it.
//
// Open-loop pacing: a sender that is late keeps its schedule (next += period)
// rather than resetting it, so the offered rate stays what the user asked
// for and the loop's lateness is measured separately (the "client lag").
type pacer struct {
	items []*pacedItem
}

// pacedItem is one sender on a pacer: a connection sending at a fixed period.
type pacedItem struct {
	next   int64 // unix nanos when the next send is due
	period int64 // nanoseconds between sends
	idx    int   // position in the heap, -1 when not scheduled
	c      *conn
}

func (p *pacer) len() int { return len(p.items) }

// push schedules it. It must not be scheduled already.
func (p *pacer) push(it *pacedItem) {
	it.idx = len(p.items)
	p.items = append(p.items, it)
	p.up(it.idx)
}

// peek returns the earliest item, or nil.
func (p *pacer) peek() *pacedItem {
	if len(p.items) == 0 {
		return nil
	}
	return p.items[0]
}

// remove unschedules it; a no-op if it is not scheduled.
func (p *pacer) remove(it *pacedItem) {
	i := it.idx
	if i < 0 || i >= len(p.items) || p.items[i] != it {
		return
	}
	last := len(p.items) - 1
	p.swap(i, last)
	p.items[last] = nil
	p.items = p.items[:last]
	it.idx = -1
	if i < last {
		p.down(i)
		p.up(i)
	}
}

// due pops every item due at now, advances each by its period, reschedules
// it and calls fn with it and how late the send is (ns). It returns the
// number of sends.
func (p *pacer) due(now int64, fn func(it *pacedItem, lateNs int64)) int {
	n := 0
	for len(p.items) > 0 && p.items[0].next <= now {
		it := p.items[0]
		late := now - it.next
		it.next += it.period
		p.down(0)
		n++
		fn(it, late)
	}
	return n
}

func (p *pacer) clear() {
	for _, it := range p.items {
		it.idx = -1
	}
	p.items = p.items[:0]
}

func (p *pacer) less(i, j int) bool { return p.items[i].next < p.items[j].next }

func (p *pacer) swap(i, j int) {
	p.items[i], p.items[j] = p.items[j], p.items[i]
	p.items[i].idx = i
	p.items[j].idx = j
}

func (p *pacer) up(j int) {
	for j > 0 {
		i := (j - 1) / 2
		if !p.less(j, i) {
			break
		}
		p.swap(i, j)
		j = i
	}
}

func (p *pacer) down(i int) {
	n := len(p.items)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		j := l
		if r := l + 1; r < n && p.less(r, l) {
			j = r
		}
		if !p.less(j, i) {
			return
		}
		p.swap(i, j)
		i = j
	}
}
