package redistest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// haTimeout bounds the waits for a replica to sync, a Sentinel to know
// its master's replica, or a cluster to turn ok.
const haTimeout = 15 * time.Second

// waitFor polls cond every 10 ms until it returns nil, failing the test
// with its last error after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: %s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
}

// infoField returns field of the server's INFO section.
func (s *Server) infoField(section, field string) (string, error) {
	info, err := s.Do("INFO", section)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("no %s in INFO %s", field, section)
}

// Sentinel is a master, its replica and one Sentinel watching them, all
// owned by one test. The Sentinel declares the master down after
// DownAfter without an answer and fails over to the replica on its own
// (quorum 1).
type Sentinel struct {
	Master, Replica, Sentinel *Server
	Name                      string // the master's name at the Sentinel
	// Link carries the replication from the master to the replica:
	// Link.Stall(true) makes the replica fall behind, so that a failover
	// loses what the master acknowledged since.
	Link *Proxy
}

// DownAfter is the Sentinel's down-after-milliseconds.
const DownAfter = 500 * time.Millisecond

// StartSentinel starts a master, a replica of it and a Sentinel, and
// returns once the replica is in sync and the Sentinel knows both.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	skipWithout(t, "redis-server")
	h := &Sentinel{Name: "wsedge-test"}
	h.Master = startServer(t, "")
	h.Link = NewProxy(t, h.Master.Addr())
	_, linkPort, _ := strings.Cut(h.Link.Addr(), ":")
	h.Replica = startServer(t, "", "--replicaof", "127.0.0.1", linkPort)
	waitFor(t, haTimeout, "replica in sync", func() error {
		if v, err := h.Replica.infoField("replication", "master_link_status"); err != nil || v != "up" {
			return fmt.Errorf("master_link_status %q, %v", v, err)
		}
		return nil
	})
	conf := filepath.Join(t.TempDir(), "sentinel.conf")
	text := fmt.Sprintf("sentinel monitor %[1]s 127.0.0.1 %[2]d 1\n"+
		"sentinel down-after-milliseconds %[1]s %[3]d\n"+
		"sentinel failover-timeout %[1]s 2000\n"+
		"sentinel parallel-syncs %[1]s 1\n", h.Name, h.Master.port, DownAfter.Milliseconds())
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	h.Sentinel = startServer(t, conf)
	waitFor(t, haTimeout, "sentinel knows the replica", func() error {
		reps, err := h.Sentinel.Do("SENTINEL", "REPLICAS", h.Name)
		if err != nil {
			return err
		}
		if !strings.Contains(reps, "\n"+strconv.Itoa(h.Replica.port)+"\n") || strings.Contains(reps, "s_down") || strings.Contains(reps, "disconnected") {
			return fmt.Errorf("replicas: %q", reps)
		}
		return nil
	})
	return h
}

// URL is the redis+sentinel:// URL of the master, database 0.
func (h *Sentinel) URL() string {
	return "redis+sentinel://" + h.Sentinel.Addr() + "/0?master_name=" + h.Name
}

// MasterAddr is the master's address as the Sentinel names it now.
func (h *Sentinel) MasterAddr() (string, error) {
	r, err := h.Sentinel.Do("SENTINEL", "GET-MASTER-ADDR-BY-NAME", h.Name)
	if err != nil {
		return "", err
	}
	host, port, ok := strings.Cut(r, "\n")
	if !ok {
		return "", fmt.Errorf("redistest: master address %q", r)
	}
	return host + ":" + port, nil
}

// Cluster is a Redis Cluster of masters without replicas, owned by one
// test; the slots are split evenly among the masters. A master that stops
// answering is marked failed after NodeTimeout, and then the cluster
// fails (cluster-require-full-coverage).
type Cluster struct {
	Nodes []*Server
}

// NodeTimeout is the cluster's cluster-node-timeout.
const NodeTimeout = time.Second

// StartCluster starts n masters (n >= 1) and returns once every node
// reports cluster_state:ok and knows the others.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	skipWithout(t, "redis-server")
	c := &Cluster{}
	bus := make([]int, n)
	for i := range n {
		// The bus port is explicit: port+10000 may be taken or out of range.
		bus[i] = freePort(t)
		c.Nodes = append(c.Nodes, startServer(t, "",
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", strconv.FormatInt(NodeTimeout.Milliseconds(), 10),
			"--cluster-port", strconv.Itoa(bus[i])))
	}
	for i, s := range c.Nodes {
		lo, hi := slotRange(i, n)
		if _, err := s.Do("CLUSTER", "ADDSLOTSRANGE", strconv.Itoa(lo), strconv.Itoa(hi)); err != nil {
			t.Fatalf("redistest: ADDSLOTSRANGE on %s: %v", s.Addr(), err)
		}
		if i > 0 {
			if _, err := c.Nodes[0].Do("CLUSTER", "MEET", "127.0.0.1", strconv.Itoa(s.port), strconv.Itoa(bus[i])); err != nil {
				t.Fatalf("redistest: CLUSTER MEET %s: %v", s.Addr(), err)
			}
		}
	}
	want := "cluster_known_nodes:" + strconv.Itoa(n)
	waitFor(t, haTimeout, "cluster ok", func() error {
		for _, s := range c.Nodes {
			info, err := s.Do("CLUSTER", "INFO")
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, want+"\r\n") {
				return fmt.Errorf("%s: %q", s.Addr(), info)
			}
		}
		return nil
	})
	return c
}

// URL is the redis+cluster:// URL naming every node.
func (c *Cluster) URL() string {
	u := "redis+cluster://" + c.Nodes[0].Addr()
	for i, s := range c.Nodes[1:] {
		if i == 0 {
			u += "?addr=" + s.Addr()
		} else {
			u += "&addr=" + s.Addr()
		}
	}
	return u
}

// NodeOf returns the index in Nodes of the master that owns key's slot.
func (c *Cluster) NodeOf(key string) (int, error) {
	r, err := c.Nodes[0].Do("CLUSTER", "KEYSLOT", key)
	if err != nil {
		return 0, err
	}
	slot, err := strconv.Atoi(r)
	if err != nil {
		return 0, err
	}
	n := len(c.Nodes)
	for i := range n {
		if lo, hi := slotRange(i, n); slot >= lo && slot <= hi {
			return i, nil
		}
	}
	return 0, fmt.Errorf("redistest: slot %d out of range", slot)
}

// slotRange is the slots of node i of n.
func slotRange(i, n int) (lo, hi int) { return i * 16384 / n, (i+1)*16384/n - 1 }
