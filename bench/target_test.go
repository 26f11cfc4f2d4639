package bench

import "testing"

// TestTargetsSpreadChannels: with several URLs every channel's subscribers
// land on every node (a channel pinned to one node would measure no
// cross-node delivery), and publishers go to the publish URL.
func TestTargetsSpreadChannels(t *testing.T) {
	cfg := Defaults()
	cfg.Mode = ModeBroadcast
	cfg.URL = "ws://127.0.0.1:1001/ws,ws://127.0.0.1:1002/ws,ws://127.0.0.1:1003/ws"
	cfg.PublishURL = "ws://127.0.0.1:1004/ws"
	cfg.Channels = 4
	ts, err := cfg.targets()
	if err != nil {
		t.Fatal(err)
	}
	w := &worker{cfg: cfg, t: ts[0], subT: ts[:3], pubT: ts[3]}
	nodes := map[int]map[int]bool{} // channel → ports
	for i := range 4 * 6 {
		ch := i % cfg.Channels
		if nodes[ch] == nil {
			nodes[ch] = map[int]bool{}
		}
		nodes[ch][w.target(roleSub, i, 0).port] = true
	}
	for ch, ports := range nodes {
		if len(ports) != 3 {
			t.Errorf("channel %d has subscribers on %v, want all 3 nodes", ch, ports)
		}
	}
	if p := w.target(rolePub, 0, 0).port; p != 1004 {
		t.Errorf("publisher on port %d, want 1004", p)
	}
	cfg.PublishURL = ""
	ts, _ = cfg.targets()
	w = &worker{cfg: cfg, t: ts[0], subT: ts[:3], pubT: ts[3]}
	if p := w.target(rolePub, 0, 0).port; p != 1001 {
		t.Errorf("publisher without --publish-url on port %d, want the first URL's 1001", p)
	}
}
