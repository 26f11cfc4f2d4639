package engine

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wsedge/wsedge/auth"
	"github.com/wsedge/wsedge/frame"
	"github.com/wsedge/wsedge/ingest"
)

const testAPIKey = "test-api-key-0123456789"

func apiDo(t *testing.T, s *Server, method, path, key, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+s.AdminAddr()+path, strings.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "apikey "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s %s: %d %q is not JSON", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, m
}

// TestEventsAndUserOps: a backend reading the event stream sees a user's
// connect, token subscription, and, after the backend disconnects the
// user, its unsubscribe and disconnect; the user got the disconnect.
func TestEventsAndUserOps(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ingest.sock")
	s, mint := authServer(t, func(c *Config) { c.Ingest.Listen = "unix://" + path })
	cl, err := ingest.Dial(t.Context(), "unix://"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	events, err := cl.Events(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// The stream is on once the server acked OpEvents; a ping after it
	// on the same connection orders the two.
	if _, err := cl.Broadcast(t.Context(), "chat", []byte(`1`)); err != nil {
		t.Fatal(err)
	}
	alice := mustUpgrade(t, s.Addr(), mint(auth.Claims{Sub: "alice", Channels: []string{"chat:*"}, Subs: []string{"chat:ev"}}, time.Hour))
	checkFor(t, 5*time.Second, func() error {
		if n := len(s.hub.AppendChannels(nil, "chat:")); n != 1 {
			return fmt.Errorf("%d chat channels", n)
		}
		return nil
	})
	if err := cl.Disconnect(t.Context(), "alice", 4100, "kicked"); err != nil {
		t.Fatal(err)
	}
	alice.expectClose(frame.ClosePolicyViolation)
	var got []string
	checkFor(t, 5*time.Second, func() error {
		for {
			select {
			case b := <-events:
				if b.Lost != 0 {
					t.Fatalf("lost %d events", b.Lost)
				}
				for _, e := range b.Events {
					got = append(got, fmt.Sprintf("%s %s %s %d", e.Kind, e.User, e.Channel, e.Code))
				}
				continue
			default:
			}
			break
		}
		if len(got) < 4 {
			return fmt.Errorf("events %q", got)
		}
		return nil
	})
	want := []string{"connect alice  0", "subscribe alice chat:ev 0", "unsubscribe alice chat:ev 0", "disconnect alice  1008"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("events %q, want %q", got, want)
	}
}

func TestEventLogGap(t *testing.T) {
	e := newEventLog(16)
	for i := range 40 {
		e.add(connEvent{kind: ingest.EventConnect, client: fmt.Sprint(i)})
	}
	evs, first, lost, next := e.read(1, 100, nil)
	if lost != 24 || first != 25 || len(evs) != 16 || next != 41 || evs[0].client != "24" {
		t.Fatalf("read from 1: %d events from %d, lost %d, next %d", len(evs), first, lost, next)
	}
	evs, _, lost, next = e.read(41, 100, evs[:0])
	if len(evs) != 0 || lost != 0 || next != 41 {
		t.Fatalf("read at the end: %d %d %d", len(evs), lost, next)
	}
}

func TestAPI(t *testing.T) {
	s := protoServer(t, func(c *Config) {
		c.Ingest.APIKey = testAPIKey
		c.Ingest.MaxPayload = 1000
	})
	sub := dialProto(t, s.Addr())
	sub.ok(`{"op":"subscribe","channel":"chat:api"}`)
	for _, c := range []struct {
		method, path, key, body string
		status                  int
	}{
		{"POST", "/api/publish", "", `{"channel":"chat:api","data":1}`, 401},
		{"POST", "/api/publish", "wrong-key-0123456789x", `{"channel":"chat:api","data":1}`, 401},
		{"POST", "/api/publish", testAPIKey, `{"channel":"nope:x","data":1}`, 404},
		{"POST", "/api/publish", testAPIKey, `{"channel":"chat:api","data":"` + strings.Repeat("x", 1000) + `"}`, 413},
		{"POST", "/api/publish", testAPIKey, `{"channel":"chat:api"`, 400},
		{"POST", "/api/publish", testAPIKey, `{"channel":"chat:api","data":1,"extra":2}`, 400},
		{"GET", "/api/publish", testAPIKey, ``, 404},
		{"POST", "/api/disconnect", testAPIKey, `{"user":"u","code":1000}`, 400},
		{"GET", "/api/presence?channel=bad", testAPIKey, ``, 400},
	} {
		if st, m := apiDo(t, s, c.method, c.path, c.key, c.body); st != c.status || m["error"] == nil {
			t.Errorf("%s %s %.40s: %d %v, want %d with an error", c.method, c.path, c.body, st, m, c.status)
		}
	}
	st, m := apiDo(t, s, "POST", "/api/publish", testAPIKey, `{"channel":"chat:api","data":{"a":1},"idempotency_key":"k1"}`)
	if st != 200 || m["offset"] != float64(1) || m["duplicate"] != false {
		t.Fatalf("publish: %d %v", st, m)
	}
	st, m = apiDo(t, s, "POST", "/api/publish", testAPIKey, `{"channel":"chat:api","data":{"a":1},"idempotency_key":"k1"}`)
	if st != 200 || m["offset"] != float64(1) || m["duplicate"] != true {
		t.Fatalf("retried publish: %d %v", st, m)
	}
	st, m = apiDo(t, s, "POST", "/api/broadcast", testAPIKey, `{"namespace":"chat","data":"all"}`)
	if st != 200 || m["published"] != float64(1) {
		t.Fatalf("broadcast: %d %v", st, m)
	}
	got := sub.waitPushes(2, onChannel("chat:api"))
	if len(got) != 2 || got[1]["data"] != "all" {
		t.Fatalf("pushes %v", got)
	}
	st, m = apiDo(t, s, "GET", "/api/presence?channel=chat:api", testAPIKey, ``)
	if st != 200 || len(m["clients"].([]any)) != 1 {
		t.Fatalf("presence: %d %v", st, m)
	}
	st, m = apiDo(t, s, "GET", "/api/channels", testAPIKey, ``)
	if st != 200 || fmt.Sprint(m["channels"]) != "[chat:api]" {
		t.Fatalf("channels: %d %v", st, m)
	}
}
