package engine

import (
	"testing"
	"time"

	"github.com/wsedge/wsedge/ingest"
)

// TestIngestHotPathAllocs: what an ingest publish does before the broker
// — decode, validate, intern the channel name, hash and look up its
// idempotency key — does not allocate once the channel and key are known.
func TestIngestHotPathAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under -race")
	}
	s, err := New(DefaultConfig(), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	il := &ingestLoop{names: make(map[string]string)}
	frame := ingest.AppendPublish(nil, 1, "chat:room42", []byte("key-1"), []byte(`{"text":"hello"}`))
	var r ingest.Request
	now := time.Now()
	k := s.idem.key([]byte("chat:room42"), []byte("key-1"))
	s.idem.reserve(k, now)
	s.idem.complete(k, 7, "e")
	il.intern([]byte("chat:room42"))
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := ingest.ParseRequest(frame, ingest.DefaultFrame, &r); err != nil {
			panic(err)
		}
		if _, code := s.checkPublication(r.Channel, r.Payload, 1<<16); code != 0 {
			panic(code)
		}
		_ = il.intern(r.Channel)
		if _, st := s.idem.reserve(s.idem.key(r.Channel, r.Key), now); st != idemDone {
			panic(st)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per request, want 0", allocs)
	}
}
