package broker

import (
	"strings"
	"testing"
)

func TestRedisConfigURL(t *testing.T) {
	tests := []struct {
		url     string
		wantErr string
	}{
		{url: "redis://127.0.0.1:6379/0"},
		{url: "redis://user:secret@redis.internal:6380/3"},
		{url: "rediss://redis.internal:6380"},
		{url: "unix:///run/redis.sock?db=2"},
		{url: "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/0?master_name=main"},
		{url: "redis+sentinel://10.0.0.1:26379/0?master_name=main&addr=10.0.0.2:26379"},
		{url: "redis+cluster://10.0.0.1:7000?addr=10.0.0.2:7000"},
		{url: "redis+sentinel://10.0.0.1:26379/0", wantErr: "master_name"},
		{url: "redis+cluster://10.0.0.1:7000/3", wantErr: "URL"},
		{url: "memcached://10.0.0.1", wantErr: "scheme"},
		{url: "redis://h:1/notanumber", wantErr: "URL"},
	}
	for _, tt := range tests {
		cfg := RedisConfig{URL: tt.url}
		cfg.SetDefaults()
		err := cfg.Validate()
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tt.url, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s: error %v, want one naming %q", tt.url, err, tt.wantErr)
		}
	}
}

func TestRedisConfigValidate(t *testing.T) {
	tests := []struct {
		field string
		set   func(c *RedisConfig)
	}{
		{"KeyPrefix", func(c *RedisConfig) { c.KeyPrefix = "a{b}" }},
		{"Shards", func(c *RedisConfig) { c.Shards = -1 }},
		{"PubSub", func(c *RedisConfig) { c.PubSub = "fast" }},
		{"OpTimeout", func(c *RedisConfig) { c.OpTimeout = -1 }},
		{"PresenceRefresh", func(c *RedisConfig) { c.PresenceRefresh = c.PresenceTTL }},
		{"CanaryTimeout", func(c *RedisConfig) { c.CanaryTimeout = c.CanaryInterval }},
		{"ReconnectMin", func(c *RedisConfig) { c.ReconnectMax = c.ReconnectMin / 2 }},
	}
	for _, tt := range tests {
		var cfg RedisConfig
		cfg.SetDefaults()
		if err := cfg.Validate(); err != nil {
			t.Fatalf("defaults: %v", err)
		}
		tt.set(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tt.field) {
			t.Errorf("bad %s: Validate = %v, want an error naming it", tt.field, err)
		}
	}
}

func TestParsePayload(t *testing.T) {
	tests := []struct {
		in    string
		off   uint64
		epoch string
		data  string
		ok    bool
	}{
		{in: "12:ab01:{\"a\":1}", off: 12, epoch: "ab01", data: `{"a":1}`, ok: true},
		{in: "0::x:y", off: 0, epoch: "", data: "x:y", ok: true},
		{in: "3:e:", off: 3, epoch: "e", data: "", ok: true},
		{in: "3:e", ok: false},
		{in: "x:e:d", ok: false},
		{in: "", ok: false},
	}
	for _, tt := range tests {
		off, epoch, data, ok := parsePayload(tt.in)
		if ok != tt.ok || ok && (off != tt.off || epoch != tt.epoch || data != tt.data) {
			t.Errorf("parsePayload(%q) = %d %q %q %v, want %d %q %q %v", tt.in, off, epoch, data, ok, tt.off, tt.epoch, tt.data, tt.ok)
		}
	}
}

func TestPresenceEncoding(t *testing.T) {
	for _, ci := range []ClientInfo{
		{ClientID: "c1"},
		{ClientID: "c2", UserID: "u:1", Info: []byte(`{"n":"a:b"}`)},
		{ClientID: "c3", Info: []byte(`5`)},
		{ClientID: "c4", UserID: "12:34"},
	} {
		got, ok := decodePresence(ci.ClientID, string(encodePresence(ci)))
		if !ok || got.ClientID != ci.ClientID || got.UserID != ci.UserID || string(got.Info) != string(ci.Info) {
			t.Errorf("round trip of %+v = %+v %v", ci, got, ok)
		}
	}
	for _, bad := range []string{"", "x", "5:ab", "-1:"} {
		if _, ok := decodePresence("c", bad); ok {
			t.Errorf("decodePresence(%q) accepted", bad)
		}
	}
}

// The shard of a channel is part of its key names, so it must never
// change between builds or nodes.
func TestShardHashStable(t *testing.T) {
	for in, want := range map[string]uint32{"": 2166136261, "a": 0xe40c292c, "chat:room1": fnv32("chat:room1")} {
		if got := fnv32(in); got != want {
			t.Errorf("fnv32(%q) = %#x, want %#x", in, got, want)
		}
	}
}

func TestParseHistoryRecovered(t *testing.T) {
	entries := []any{"0:a", "0:b"}
	tests := []struct {
		name  string
		res   []any
		since *StreamPosition
		want  bool
	}{
		{"complete", []any{int64(5), "e", int64(4), entries}, &StreamPosition{3, "e"}, true},
		{"trimmed", []any{int64(5), "e", int64(4), entries}, &StreamPosition{2, "e"}, false},
		{"other epoch at the top", []any{int64(5), "e", int64(6), []any{}}, &StreamPosition{5, "f"}, false},
		{"up to date", []any{int64(5), "e", int64(6), []any{}}, &StreamPosition{5, "e"}, true},
		{"future", []any{int64(5), "e", int64(6), []any{}}, &StreamPosition{7, "e"}, false},
		{"no since", []any{int64(5), "e", int64(4), entries}, nil, false},
	}
	for _, tt := range tests {
		hr, ok := parseHistory(tt.res, HistoryRequest{Since: tt.since, Limit: NoLimit})
		if !ok || hr.Recovered != tt.want {
			t.Errorf("%s: Recovered %v (ok %v), want %v", tt.name, hr.Recovered, ok, tt.want)
		}
	}
	hr, _ := parseHistory([]any{int64(5), "e", int64(4), entries}, HistoryRequest{Limit: NoLimit})
	if len(hr.Publications) != 2 || hr.Publications[0].Offset != 4 || string(hr.Publications[1].Data) != "b" {
		t.Errorf("publications %+v, want offsets 4 and 5 with data a and b", hr.Publications)
	}
	if _, ok := parseHistory([]any{int64(5), "e"}, HistoryRequest{}); ok {
		t.Error("short reply accepted")
	}
}
