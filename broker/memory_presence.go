package broker

import (
	"bytes"
	"context"
	"maps"
)

// presenceSet is one channel's presence, guarded by its shard's pmu.
type presenceSet struct {
	clients map[string]ClientInfo
	users   map[string]int // connections per non-empty user id
	anon    int            // connections with an empty user id, each a user
}

// AddPresence implements PresenceManager. It copies info.Info.
func (m *Memory) AddPresence(ctx context.Context, channel string, info ClientInfo) error {
	if err := m.check(ctx); err != nil {
		return err
	}
	info.Info = bytes.Clone(info.Info)
	sh := m.shard(channel)
	sh.pmu.Lock()
	defer sh.pmu.Unlock()
	ps := sh.presence[channel]
	if ps == nil {
		ps = &presenceSet{clients: make(map[string]ClientInfo), users: make(map[string]int)}
		sh.presence[channel] = ps
	}
	if old, ok := ps.clients[info.ClientID]; ok {
		ps.removeUser(old.UserID)
	}
	ps.clients[info.ClientID] = info
	ps.addUser(info.UserID)
	return nil
}

// RemovePresence implements PresenceManager.
func (m *Memory) RemovePresence(ctx context.Context, channel, clientID string) error {
	if err := m.check(ctx); err != nil {
		return err
	}
	sh := m.shard(channel)
	sh.pmu.Lock()
	defer sh.pmu.Unlock()
	ps := sh.presence[channel]
	if ps == nil {
		return nil
	}
	old, ok := ps.clients[clientID]
	if !ok {
		return nil
	}
	delete(ps.clients, clientID)
	ps.removeUser(old.UserID)
	if len(ps.clients) == 0 {
		delete(sh.presence, channel)
	}
	return nil
}

func (ps *presenceSet) addUser(user string) {
	if user == "" {
		ps.anon++
		return
	}
	ps.users[user]++
}

func (ps *presenceSet) removeUser(user string) {
	if user == "" {
		ps.anon--
		return
	}
	if n := ps.users[user]; n > 1 {
		ps.users[user] = n - 1
	} else {
		delete(ps.users, user)
	}
}

// Presence implements PresenceManager.
func (m *Memory) Presence(ctx context.Context, channel string) (map[string]ClientInfo, error) {
	if err := m.check(ctx); err != nil {
		return nil, err
	}
	sh := m.shard(channel)
	sh.pmu.Lock()
	defer sh.pmu.Unlock()
	ps := sh.presence[channel]
	if ps == nil {
		return map[string]ClientInfo{}, nil
	}
	return maps.Clone(ps.clients), nil
}

// PresenceStats implements PresenceManager. It does not allocate.
func (m *Memory) PresenceStats(ctx context.Context, channel string) (PresenceStats, error) {
	if err := m.check(ctx); err != nil {
		return PresenceStats{}, err
	}
	sh := m.shard(channel)
	sh.pmu.Lock()
	defer sh.pmu.Unlock()
	ps := sh.presence[channel]
	if ps == nil {
		return PresenceStats{}, nil
	}
	return PresenceStats{NumClients: len(ps.clients), NumUsers: len(ps.users) + ps.anon}, nil
}
