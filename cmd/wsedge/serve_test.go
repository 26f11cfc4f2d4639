package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wsedge/wsedge/engine"
)

func TestLoadServeConfig(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "wsedge.yaml")
	if err := os.WriteFile(file, []byte("max_message: 1000\nping_interval: 7s\nloops: 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	nsFile := filepath.Join(dir, "ns.yaml")
	if err := os.WriteFile(nsFile, []byte("namespaces:\n  - name: orders\n    history_size: 10\n    history_ttl: 30s\n    publish: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badNS := filepath.Join(dir, "badns.yaml")
	if err := os.WriteFile(badNS, []byte("namespaces:\n  - name: Orders\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("max_mesage: 1000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(engine.Config) bool
		err   bool
	}{
		{
			name:  "defaults",
			check: func(c engine.Config) bool { return c.MaxMessage == 64<<10 && c.Path == "/ws" },
		},
		{
			name:  "file",
			args:  []string{"--config", file},
			check: func(c engine.Config) bool { return c.MaxMessage == 1000 && c.PingInterval == 7*time.Second },
		},
		{
			name:  "env beats file",
			args:  []string{"--config=" + file},
			env:   map[string]string{"WSEDGE_MAX_MESSAGE": "2000"},
			check: func(c engine.Config) bool { return c.MaxMessage == 2000 && c.Loops == 3 },
		},
		{
			name:  "flag beats env",
			args:  []string{"--config", file, "--max-message", "3000"},
			env:   map[string]string{"WSEDGE_MAX_MESSAGE": "2000"},
			check: func(c engine.Config) bool { return c.MaxMessage == 3000 },
		},
		{
			name:  "config path from env",
			env:   map[string]string{"WSEDGE_CONFIG": file},
			check: func(c engine.Config) bool { return c.Loops == 3 },
		},
		{
			name: "namespaces replace the defaults",
			args: []string{"--config", nsFile},
			check: func(c engine.Config) bool {
				return len(c.Namespaces) == 1 && c.Namespaces[0].Name == "orders" &&
					c.Namespaces[0].HistorySize == 10 && c.Namespaces[0].HistoryTTL == 30*time.Second && c.Namespaces[0].Publish
			},
		},
		{
			name: "bad namespace name",
			args: []string{"--config", badNS},
			err:  true,
		},
		{
			name: "unknown YAML key",
			args: []string{"--config", bad},
			err:  true,
		},
		{
			name: "invalid value names the field",
			args: []string{"--idle-timeout", "1s"},
			err:  true,
		},
		{
			name: "bad env value",
			env:  map[string]string{"WSEDGE_LOOPS": "many"},
			err:  true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			cfg, _, err := loadServeConfig(tc.args)
			if tc.err {
				if err == nil {
					t.Fatalf("no error for %v", tc.args)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(cfg) {
				t.Fatalf("config %+v", cfg)
			}
		})
	}
	_, _, err := loadServeConfig([]string{"--idle-timeout", "1s"})
	if !errors.Is(err, engine.ErrConfig) {
		t.Fatalf("validation error %v does not wrap ErrConfig", err)
	}
}
