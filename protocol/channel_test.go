package protocol

import (
	"errors"
	"strings"
	"testing"
)

func TestParseChannel(t *testing.T) {
	tests := []struct {
		name     string
		ch       string
		wantNS   string
		wantName string
		wantErr  bool
	}{
		{
			name:     "namespaced",
			ch:       "chat:room42",
			wantNS:   "chat",
			wantName: "room42",
		},
		{
			name:     "personal",
			ch:       "user:42",
			wantNS:   "user",
			wantName: "42",
		},
		{
			name:     "name with colons and punctuation",
			ch:       "a_b-9:x:y/z.~!",
			wantNS:   "a_b-9",
			wantName: "x:y/z.~!",
		},
		{
			name:     "longest namespace and total",
			ch:       strings.Repeat("n", 32) + ":" + strings.Repeat("x", 255-33),
			wantNS:   strings.Repeat("n", 32),
			wantName: strings.Repeat("x", 255-33),
		},
		{
			name:    "empty",
			ch:      "",
			wantErr: true,
		},
		{
			name:    "no colon",
			ch:      "room42",
			wantErr: true,
		},
		{
			name:    "empty namespace",
			ch:      ":room42",
			wantErr: true,
		},
		{
			name:    "empty name",
			ch:      "chat:",
			wantErr: true,
		},
		{
			name:    "upper-case namespace",
			ch:      "Chat:room",
			wantErr: true,
		},
		{
			name:    "namespace too long",
			ch:      strings.Repeat("n", 33) + ":x",
			wantErr: true,
		},
		{
			name:    "too long",
			ch:      "chat:" + strings.Repeat("x", 251),
			wantErr: true,
		},
		{
			name:    "space in name",
			ch:      "chat:a b",
			wantErr: true,
		},
		{
			name:    "control in name",
			ch:      "chat:a\x7f",
			wantErr: true,
		},
		{
			name:    "non-ASCII name",
			ch:      "chat:é",
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns, name, err := ParseChannel([]byte(tt.ch))
			if tt.wantErr {
				if !errors.Is(err, ErrBadChannel) {
					t.Fatalf("ParseChannel(%q) error = %v, want ErrBadChannel", tt.ch, err)
				}
				return
			}
			if err != nil || string(ns) != tt.wantNS || string(name) != tt.wantName {
				t.Fatalf("ParseChannel(%q) = %q, %q, %v; want %q, %q", tt.ch, ns, name, err, tt.wantNS, tt.wantName)
			}
		})
	}
}
