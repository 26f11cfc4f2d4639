package engine

import (
	"testing"

	"github.com/wsedge/wsedge/broker"
)

// isPubOrNotice keeps a channel's publications and its reset/lagged
// notices, in arrival order.
func isPubOrNotice(ch string) func(map[string]any) bool {
	return func(p map[string]any) bool {
		if p["channel"] == ch {
			return true
		}
		for _, k := range []string{"reset", "lagged"} {
			if n, ok := p[k].(map[string]any); ok && n["channel"] == ch {
				return true
			}
		}
		return false
	}
}

// TestStreamResetNotice: a channel's history stream is lost while a client
// stays subscribed (here RemoveHistory; with Redis, its restart or a TTL).
// The new stream's offsets start again at 1: the subscriber gets a reset
// push with the new epoch and then every publication of the new stream —
// before the fix they were dropped as "already delivered" (offset ≤ last).
func TestStreamResetNotice(t *testing.T) {
	s := protoServer(t, nil)
	sub := dialProto(t, s.Addr())
	pub := dialProto(t, s.Addr())
	first := sub.ok(`{"op":"subscribe","channel":"chat:reset"}`)
	for range 2 {
		pub.ok(`{"op":"publish","channel":"chat:reset","data":"old"}`)
	}
	sub.waitPushes(2, onChannel("chat:reset"))
	if err := s.broker.RemoveHistory(t.Context(), "chat:reset"); err != nil {
		t.Fatal(err)
	}
	var epoch any
	for i := 1; i <= 3; i++ {
		res := pub.ok(`{"op":"publish","channel":"chat:reset","data":"new"}`)
		if res["offset"] != float64(i) {
			t.Fatalf("publish on the new stream: %v, want offset %d", res, i)
		}
		epoch = res["epoch"]
	}
	if epoch == first["epoch"] {
		t.Fatalf("new stream kept epoch %v", epoch)
	}
	got := sub.waitPushes(6, isPubOrNotice("chat:reset"))
	if got[0]["offset"] != float64(1) || got[1]["offset"] != float64(2) {
		t.Fatalf("old stream pushes %v", got[:2])
	}
	r, _ := got[2]["reset"].(map[string]any)
	if r == nil || r["offset"] != float64(0) || r["epoch"] != epoch {
		t.Fatalf("push 3 = %v, want a reset to offset 0 in epoch %v", got[2], epoch)
	}
	for i, p := range got[3:] {
		if p["offset"] != float64(i+1) || p["data"] != "new" {
			t.Fatalf("new stream push %d: %v", i+1, p)
		}
	}
	if n := s.m.StreamResets.Get(); n != 1 {
		t.Fatalf("wsedge_stream_resets_total = %d, want 1", n)
	}
	// A fresh subscriber on the new stream gets no reset.
	other := dialProto(t, s.Addr())
	other.ok(`{"op":"subscribe","channel":"chat:reset"}`)
	pub.ok(`{"op":"publish","channel":"chat:reset","data":"later"}`)
	if p := other.waitPushes(1, isPubOrNotice("chat:reset"))[0]; p["offset"] != float64(4) {
		t.Fatalf("fresh subscriber got %v, want offset 4", p)
	}
}

// TestDeliveryGapNotice: publications that never reached this node (a
// broker connection lost and resubscribed drops pub/sub messages) show as
// an offset jump; the subscriber is told with a lagged push naming the
// last offset it got, then the publication is delivered.
func TestDeliveryGapNotice(t *testing.T) {
	s := protoServer(t, nil)
	sub := dialProto(t, s.Addr())
	pub := dialProto(t, s.Addr())
	res := sub.ok(`{"op":"subscribe","channel":"chat:gap"}`)
	epoch := res["epoch"].(string)
	pub.ok(`{"op":"publish","channel":"chat:gap","data":1}`)
	sub.waitPushes(1, onChannel("chat:gap"))
	// Offsets 2 and 3 are lost on the way: 4 arrives.
	s.onPublication("chat:gap", broker.Publication{Offset: 4, Epoch: epoch, Data: []byte("4")})
	s.onPublication("chat:gap", broker.Publication{Offset: 5, Epoch: epoch, Data: []byte("5")})
	got := sub.waitPushes(4, isPubOrNotice("chat:gap"))
	l, _ := got[1]["lagged"].(map[string]any)
	if l == nil || l["offset"] != float64(1) {
		t.Fatalf("push 2 = %v, want lagged at offset 1", got[1])
	}
	if got[2]["offset"] != float64(4) || got[3]["offset"] != float64(5) {
		t.Fatalf("pushes after the notice: %v", got[2:])
	}
	if n := s.m.DeliveryGaps.Get(); n != 1 {
		t.Fatalf("wsedge_delivery_gaps_total = %d, want 1", n)
	}
}
