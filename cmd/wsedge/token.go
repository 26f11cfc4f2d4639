package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/wsedge/wsedge/auth"
)

// runToken mints a token. Without --key it signs with the development
// secret, which a `wsedge serve` on the default configuration on the same
// machine accepts: `make run`, then `wsedge token --sub alice`.
func runToken(args []string) int {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	var (
		c                       auth.Claims
		channels, publish, subs string
		info, keyPath           string
		ttl                     time.Duration
	)
	fs.StringVar(&c.Sub, "sub", "", "user id (required)")
	fs.StringVar(&channels, "channels", "", "comma-separated channel patterns the user may read, e.g. 'chat:*,user:{sub}'")
	fs.StringVar(&publish, "publish", "", "comma-separated channel patterns the user may publish to")
	fs.StringVar(&subs, "subs", "", "comma-separated channels the server subscribes the connection to at connect")
	fs.StringVar(&info, "info", "", "JSON shown in presence, e.g. '{\"name\":\"Alice\"}'")
	fs.DurationVar(&ttl, "ttl", time.Hour, "validity")
	fs.StringVar(&c.Audience, "aud", "", "audience (aud)")
	fs.StringVar(&c.Issuer, "iss", "", "issuer (iss)")
	fs.StringVar(&keyPath, "key", "", "signing key: an HS256 secret file, or a PEM private key (RS256, ES256, EdDSA); default: the development secret")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if c.Sub == "" || fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "wsedge token: --sub is required (and nothing else may follow the flags)")
		return 2
	}
	c.Channels, c.Publish, c.Subs = splitList(channels), splitList(publish), splitList(subs)
	if info != "" {
		c.Info = json.RawMessage(info)
	}
	key, err := signingKey(keyPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsedge token:", err)
		return 1
	}
	tok, err := auth.Mint(key, c, ttl)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsedge token:", err)
		return 1
	}
	fmt.Println(tok)
	return 0
}

// signingKey reads --key: a PEM private key, else an HMAC secret file;
// without it, the development secret (created on first use).
func signingKey(path string) (auth.Key, error) {
	if path == "" {
		p, err := auth.DevSecretPath()
		if err != nil {
			return auth.Key{}, err
		}
		secret, err := auth.DevSecret(p)
		if err != nil {
			return auth.Key{}, err
		}
		return auth.HMACKey(secret, "")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return auth.Key{}, err
	}
	if strings.Contains(string(data), "-----BEGIN") {
		return auth.ParsePEM(data, "")
	}
	secret, err := auth.ReadSecretFile(path)
	if err != nil {
		return auth.Key{}, err
	}
	return auth.HMACKey(secret, "")
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
