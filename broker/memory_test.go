package broker_test

import (
	"time"

	"testing"

	"github.com/wsedge/wsedge/broker"
	"github.com/wsedge/wsedge/broker/brokertest"
)

func newMemory(t *testing.T) *broker.Memory {
	t.Helper()
	m, err := broker.NewMemory(broker.MemoryConfig{JanitorInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestMemoryConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) broker.Broker { return newMemory(t) })
}

func TestMemoryPresenceConformance(t *testing.T) {
	brokertest.RunPresence(t, func(t *testing.T) broker.PresenceManager { return newMemory(t) })
}
