package brokertest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"

	"github.com/wsedge/wsedge/broker"
)

// RunPresence runs the PresenceManager conformance suite against instances
// from newPresence.
func RunPresence(t *testing.T, newPresence func(t *testing.T) broker.PresenceManager) {
	runCases(t, newPresence, []testCase[broker.PresenceManager]{
		{
			name: "AddRemoveCounts",
			run:  testPresenceCounts,
		},
		{
			name: "AnonymousClientsAreUsersEach",
			run:  testPresenceAnonymous,
		},
		{
			name: "ReAddReplaces",
			run:  testPresenceReplace,
		},
		{
			name: "MassAddAndRemoveConcurrently",
			run:  testPresenceMass,
		},
		{
			name: "InfoIsCopied",
			run:  testPresenceInfoCopied,
		},
		{
			name: "CloseIdempotent",
			run:  testPresenceClose,
		},
	})
}

// checkPresence asserts the channel's exact members and counts.
func checkPresence(t *testing.T, pm broker.PresenceManager, ch string, want map[string]broker.ClientInfo, wantUsers int) {
	t.Helper()
	ctx := context.Background()
	got, err := pm.Presence(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %d clients present, want %d", ch, len(got), len(want))
	}
	for id, w := range want {
		g, ok := got[id]
		if !ok || g.ClientID != w.ClientID || g.UserID != w.UserID || string(g.Info) != string(w.Info) {
			t.Fatalf("%s: client %s = %+v (present %v), want %+v", ch, id, g, ok, w)
		}
	}
	st, err := pm.PresenceStats(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	if st.NumClients != len(want) || st.NumUsers != wantUsers {
		t.Fatalf("%s: stats %+v, want %d clients %d users", ch, st, len(want), wantUsers)
	}
}

func add(t *testing.T, pm broker.PresenceManager, ch string, ci broker.ClientInfo) {
	t.Helper()
	if err := pm.AddPresence(context.Background(), ch, ci); err != nil {
		t.Fatal(err)
	}
}

func remove(t *testing.T, pm broker.PresenceManager, ch, client string) {
	t.Helper()
	if err := pm.RemovePresence(context.Background(), ch, client); err != nil {
		t.Fatal(err)
	}
}

func testPresenceCounts(t *testing.T, pm broker.PresenceManager) {
	ch, other := channel("presence"), channel("presence-other")
	c1 := broker.ClientInfo{ClientID: "c1", UserID: "u1", Info: []byte(`{"name":"ann"}`)}
	c2 := broker.ClientInfo{ClientID: "c2", UserID: "u1"}
	c3 := broker.ClientInfo{ClientID: "c3", UserID: "u2"}
	checkPresence(t, pm, ch, map[string]broker.ClientInfo{}, 0)
	add(t, pm, ch, c1)
	add(t, pm, ch, c2)
	add(t, pm, ch, c3)
	add(t, pm, other, c3)
	checkPresence(t, pm, ch, map[string]broker.ClientInfo{"c1": c1, "c2": c2, "c3": c3}, 2)
	checkPresence(t, pm, other, map[string]broker.ClientInfo{"c3": c3}, 1)
	remove(t, pm, ch, "c2")
	checkPresence(t, pm, ch, map[string]broker.ClientInfo{"c1": c1, "c3": c3}, 2)
	remove(t, pm, ch, "c1")
	remove(t, pm, ch, "c1")
	remove(t, pm, ch, "never-added")
	checkPresence(t, pm, ch, map[string]broker.ClientInfo{"c3": c3}, 1)
	remove(t, pm, ch, "c3")
	checkPresence(t, pm, ch, map[string]broker.ClientInfo{}, 0)
	checkPresence(t, pm, other, map[string]broker.ClientInfo{"c3": c3}, 1)
}

func testPresenceAnonymous(t *testing.T, pm broker.PresenceManager) {
	ch := channel("anonymous")
	a1 := broker.ClientInfo{ClientID: "a1"}
	a2 := broker.ClientInfo{ClientID: "a2", Info: []byte(`{"guest":true}`)}
	c1 := broker.ClientInfo{ClientID: "c1", UserID: "u1"}
	c2 := broker.ClientInfo{ClientID: "c2", UserID: "u1"}
	add(t, pm, ch, a1)
	checkPresence(t, pm, ch, map[string]broker.ClientInfo{"a1": a1}, 1)
	add(t, pm, ch, a2)
	add(t, pm, ch, a1) // a re-add is the same client, not another user
	checkPresence(t, pm, ch, map[string]broker.ClientInfo{"a1": a1, "a2": a2}, 2)
	add(t, pm, ch, c1)
	add(t, pm, ch, c2)
	checkPresence(t, pm, ch, map[string]broker.ClientInfo{"a1": a1, "a2": a2, "c1": c1, "c2": c2}, 3)
	remove(t, pm, ch, "a1")
	remove(t, pm, ch, "a1")
	checkPresence(t, pm, ch, map[string]broker.ClientInfo{"a2": a2, "c1": c1, "c2": c2}, 2)
	// A client that authenticates stops being anonymous, and back.
	named := broker.ClientInfo{ClientID: "a2", UserID: "u1"}
	add(t, pm, ch, named)
	checkPresence(t, pm, ch, map[string]broker.ClientInfo{"a2": named, "c1": c1, "c2": c2}, 1)
	add(t, pm, ch, a2)
	checkPresence(t, pm, ch, map[string]broker.ClientInfo{"a2": a2, "c1": c1, "c2": c2}, 2)
	remove(t, pm, ch, "a2")
	remove(t, pm, ch, "c1")
	checkPresence(t, pm, ch, map[string]broker.ClientInfo{"c2": c2}, 1)
	remove(t, pm, ch, "c2")
	checkPresence(t, pm, ch, map[string]broker.ClientInfo{}, 0)
}

func testPresenceReplace(t *testing.T, pm broker.PresenceManager) {
	ch := channel("replace")
	add(t, pm, ch, broker.ClientInfo{ClientID: "c1", UserID: "u1"})
	add(t, pm, ch, broker.ClientInfo{ClientID: "c1", UserID: "u1"})
	checkPresence(t, pm, ch, map[string]broker.ClientInfo{"c1": {ClientID: "c1", UserID: "u1"}}, 1)
	moved := broker.ClientInfo{ClientID: "c1", UserID: "u2", Info: []byte(`1`)}
	add(t, pm, ch, moved)
	checkPresence(t, pm, ch, map[string]broker.ClientInfo{"c1": moved}, 1)
	remove(t, pm, ch, "c1")
	checkPresence(t, pm, ch, map[string]broker.ClientInfo{}, 0)
}

func testPresenceMass(t *testing.T, pm broker.PresenceManager) {
	const goroutines, clients, users = 8, 1000, 97
	ch := channel("mass")
	// Every fourth client is anonymous; the others share users u0 .. u96.
	ci := func(i int) broker.ClientInfo {
		if i%4 == 3 {
			return broker.ClientInfo{ClientID: "c" + strconv.Itoa(i)}
		}
		return broker.ClientInfo{ClientID: "c" + strconv.Itoa(i), UserID: "u" + strconv.Itoa(i%users)}
	}
	parallel := func(op func(i int) error) {
		runParallel(t, goroutines, func(g int) error {
			for i := g; i < clients; i += goroutines {
				if err := op(i); err != nil {
					return err
				}
			}
			return nil
		})
	}
	ctx := context.Background()
	parallel(func(i int) error { return pm.AddPresence(ctx, ch, ci(i)) })
	want := make(map[string]broker.ClientInfo, clients)
	for i := 0; i < clients; i++ {
		want[ci(i).ClientID] = ci(i)
	}
	// Each of the 97 users has named clients (97 and 4 are coprime), and
	// each of the 250 anonymous clients is a user.
	checkPresence(t, pm, ch, want, users+clients/4)

	// Remove all but the last 97 clients: their named users are distinct
	// (97 consecutive numbers modulo 97), so each client is one user.
	parallel(func(i int) error {
		if i < clients-users {
			return pm.RemovePresence(ctx, ch, ci(i).ClientID)
		}
		return nil
	})
	want = make(map[string]broker.ClientInfo, users)
	for i := clients - users; i < clients; i++ {
		want[ci(i).ClientID] = ci(i)
	}
	checkPresence(t, pm, ch, want, users)

	parallel(func(i int) error { return pm.RemovePresence(ctx, ch, ci(i).ClientID) })
	checkPresence(t, pm, ch, map[string]broker.ClientInfo{}, 0)
}

func testPresenceInfoCopied(t *testing.T, pm broker.PresenceManager) {
	ch := channel("info")
	info := []byte(`{"n":1}`)
	add(t, pm, ch, broker.ClientInfo{ClientID: "c1", UserID: "u1", Info: info})
	info[5] = '2'
	checkPresence(t, pm, ch, map[string]broker.ClientInfo{"c1": {ClientID: "c1", UserID: "u1", Info: []byte(`{"n":1}`)}}, 1)
}

func testPresenceClose(t *testing.T, pm broker.PresenceManager) {
	for i := 0; i < 2; i++ {
		if err := pm.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
	err := pm.AddPresence(context.Background(), channel("closed"), broker.ClientInfo{ClientID: "c", UserID: "u"})
	if !errors.Is(err, broker.ErrClosed) {
		t.Fatal(fmt.Errorf("AddPresence after Close = %v, want ErrClosed", err))
	}
}
