package auth

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// DevSecretEnv names the environment variable that overrides where the
// development secret lives.
const DevSecretEnv = "WSEDGE_DEV_SECRET_FILE"

// DevSecretPath is where `wsedge serve` (default configuration) and `wsedge
// token` (no key flag) find the development secret: $WSEDGE_DEV_SECRET_FILE
// if set, else $XDG_CONFIG_HOME/wsedge/dev-secret, else
// ~/.config/wsedge/dev-secret.
func DevSecretPath() (string, error) {
	if p := os.Getenv(DevSecretEnv); p != "" {
		return p, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("auth: no place for the development secret (set %s): %w", DevSecretEnv, err)
	}
	return filepath.Join(dir, "wsedge", "dev-secret"), nil
}

// DevSecret returns the development HMAC secret stored at path, creating it
// on first use: 32 random bytes written as 64 hex digits and a newline, in
// a file of mode 0600 (its directory 0700 if it has to be made). The
// secret is the file's text without the newline, so any tool that reads
// the file signs with the same key.
//
// Creation is race-safe across processes: the content is written to a
// temporary file in the same directory and then linked to path, which fails
// if path exists; the loser reads the winner's file. No reader ever sees a
// partly written secret.
func DevSecret(path string) ([]byte, error) {
	s, err := ReadSecretFile(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return s, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("auth: development secret: %w", err)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, fmt.Errorf("auth: development secret: %w", err)
	}
	text := append(hex.AppendEncode(nil, raw[:]), '\n')
	tmp, err := os.CreateTemp(dir, ".dev-secret-*") // mode 0600
	if err != nil {
		return nil, fmt.Errorf("auth: development secret: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(text)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("auth: development secret: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("auth: development secret: %w", err)
	}
	return ReadSecretFile(path)
}

// ReadSecretFile reads an HMAC secret from a file: its content without
// trailing blanks and newlines, at least 32 bytes. A file that the group or
// others may read is refused, as ssh refuses such a key.
func ReadSecretFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("auth: secret file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("auth: secret file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("auth: secret file %s has mode %v: others may read it (chmod 600)", path, st.Mode().Perm())
	}
	data, err := io.ReadAll(io.LimitReader(f, 4<<10+1))
	if err != nil {
		return nil, fmt.Errorf("auth: secret file: %w", err)
	}
	if len(data) > 4<<10 {
		return nil, fmt.Errorf("auth: secret file %s: over 4 KiB", path)
	}
	data = bytes.TrimRight(data, " \t\r\n")
	if len(data) < minHMACBytes {
		return nil, fmt.Errorf("auth: secret file %s: %d bytes, want at least %d", path, len(data), minHMACBytes)
	}
	return data, nil
}
