package shard

import "strings"

// AppendChannels appends the channels with subscribers on this node whose
// name starts with prefix (every channel for ""), in no particular order.
// It takes every stripe's read lock in turn, so a channel added or removed
// meanwhile may or may not be listed. For the ingest broadcast and the
// HTTP API's channel list, not for hot paths.
func (h *Hub) AppendChannels(dst []string, prefix string) []string {
	for i := range h.stripes {
		s := &h.stripes[i]
		s.mu.RLock()
		for name := range s.m {
			if strings.HasPrefix(name, prefix) {
				dst = append(dst, name)
			}
		}
		s.mu.RUnlock()
	}
	return dst
}
