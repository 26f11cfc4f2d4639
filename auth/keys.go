package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/golang-jwt/jwt/v5"
)

// Alg is a signature algorithm wsedge accepts. Every key carries exactly one;
// a token whose alg header differs from its key's is refused. A plain value.
type Alg uint8

// The accepted algorithms. "none" and every other alg are refused.
const (
	HS256 Alg = iota + 1 // HMAC-SHA256 with a shared secret
	RS256                // RSASSA-PKCS1-v1_5 with SHA-256, RSA keys of at least 2048 bits
	ES256                // ECDSA on P-256 with SHA-256
	EdDSA                // Ed25519
	numAlgs
)

var algNames = [numAlgs]string{HS256: "HS256", RS256: "RS256", ES256: "ES256", EdDSA: "EdDSA"}

// String is the algorithm's JOSE name, as in a token's alg header.
func (a Alg) String() string {
	if a == 0 || a >= numAlgs {
		return "invalid"
	}
	return algNames[a]
}

// ParseAlg returns the algorithm named name (JOSE spelling), or 0.
func ParseAlg(name string) Alg {
	for a := HS256; a < numAlgs; a++ {
		if algNames[a] == name {
			return a
		}
	}
	return 0
}

func (a Alg) method() jwt.SigningMethod {
	switch a {
	case HS256:
		return jwt.SigningMethodHS256
	case RS256:
		return jwt.SigningMethodRS256
	case ES256:
		return jwt.SigningMethodES256
	case EdDSA:
		return jwt.SigningMethodEdDSA
	}
	return nil
}

// minRSABits refuses RSA keys that are too weak to trust.
const minRSABits = 2048

// minHMACBytes refuses HMAC secrets too short to resist guessing (RFC 7518
// 3.2 asks for at least the hash size).
const minHMACBytes = 32

// Sentinel errors for keys and key sources.
var (
	ErrKey  = errors.New("auth: unusable key")
	ErrJWKS = errors.New("auth: unusable JWKS")
)

// Key is one verification or signing key: its algorithm, an optional kid, and
// the key material (an HMAC secret, or an RSA, P-256 or Ed25519 public or
// private key). It is immutable once built and safe to share.
type Key struct {
	alg Alg
	kid string
	mat any // []byte | *rsa.PublicKey | *ecdsa.PublicKey | ed25519.PublicKey, or a private twin
}

// Alg is the key's algorithm.
func (k Key) Alg() Alg { return k.alg }

// Kid is the key's id; empty if it has none.
func (k Key) Kid() string { return k.kid }

// HMACKey makes an HS256 key from a shared secret of at least 32 bytes. The
// secret is copied.
func HMACKey(secret []byte, kid string) (Key, error) {
	if len(secret) < minHMACBytes {
		return Key{}, fmt.Errorf("%w: HMAC secret of %d bytes, want at least %d", ErrKey, len(secret), minHMACBytes)
	}
	return Key{alg: HS256, kid: kid, mat: append([]byte(nil), secret...)}, nil
}

// NewKey makes a key from crypto material: *rsa.PublicKey or *rsa.PrivateKey
// (RS256), *ecdsa.PublicKey or *ecdsa.PrivateKey on P-256 (ES256),
// ed25519.PublicKey or ed25519.PrivateKey (EdDSA). The algorithm follows from
// the key type.
func NewKey(material any, kid string) (Key, error) {
	switch m := material.(type) {
	case *rsa.PublicKey:
		if m.N.BitLen() < minRSABits {
			return Key{}, fmt.Errorf("%w: RSA key of %d bits, want at least %d", ErrKey, m.N.BitLen(), minRSABits)
		}
		return Key{alg: RS256, kid: kid, mat: m}, nil
	case *rsa.PrivateKey:
		if m.N.BitLen() < minRSABits {
			return Key{}, fmt.Errorf("%w: RSA key of %d bits, want at least %d", ErrKey, m.N.BitLen(), minRSABits)
		}
		return Key{alg: RS256, kid: kid, mat: m}, nil
	case *ecdsa.PublicKey:
		if m.Curve != elliptic.P256() {
			return Key{}, fmt.Errorf("%w: EC key on %s, want P-256", ErrKey, m.Curve.Params().Name)
		}
		return Key{alg: ES256, kid: kid, mat: m}, nil
	case *ecdsa.PrivateKey:
		if m.Curve != elliptic.P256() {
			return Key{}, fmt.Errorf("%w: EC key on %s, want P-256", ErrKey, m.Curve.Params().Name)
		}
		return Key{alg: ES256, kid: kid, mat: m}, nil
	case ed25519.PublicKey:
		if len(m) != ed25519.PublicKeySize {
			return Key{}, fmt.Errorf("%w: Ed25519 public key of %d bytes", ErrKey, len(m))
		}
		return Key{alg: EdDSA, kid: kid, mat: m}, nil
	case ed25519.PrivateKey:
		if len(m) != ed25519.PrivateKeySize {
			return Key{}, fmt.Errorf("%w: Ed25519 private key of %d bytes", ErrKey, len(m))
		}
		return Key{alg: EdDSA, kid: kid, mat: m}, nil
	}
	return Key{}, fmt.Errorf("%w: unsupported key type %T", ErrKey, material)
}

// ParsePEM reads the first key of a PEM document: a public key (PKIX "PUBLIC
// KEY", PKCS #1 "RSA PUBLIC KEY") or a private key (PKCS #8 "PRIVATE KEY",
// PKCS #1 "RSA PRIVATE KEY", SEC 1 "EC PRIVATE KEY"). A certificate is not
// accepted: configure its public key.
func ParsePEM(data []byte, kid string) (Key, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return Key{}, fmt.Errorf("%w: no key in PEM data", ErrKey)
		}
		var (
			m   any
			err error
		)
		switch b.Type {
		case "PUBLIC KEY":
			m, err = x509.ParsePKIXPublicKey(b.Bytes)
		case "RSA PUBLIC KEY":
			m, err = x509.ParsePKCS1PublicKey(b.Bytes)
		case "PRIVATE KEY":
			m, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			m, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			m, err = x509.ParseECPrivateKey(b.Bytes)
		default:
			continue // parameters blocks and the like precede keys in some files
		}
		if err != nil {
			return Key{}, fmt.Errorf("%w: %s: %v", ErrKey, b.Type, err)
		}
		return NewKey(m, kid)
	}
}

// Public returns the verification half of k: k itself for HMAC and public
// keys, the public key of a private one.
func (k Key) Public() Key {
	if s, ok := k.mat.(crypto.Signer); ok {
		// Each private type above returns the pointer or slice NewKey expects.
		k.mat = s.Public()
	}
	return k
}

// IsZero says whether k is the zero Key.
func (k Key) IsZero() bool { return k.alg == 0 }

// signer reports whether k can sign (an HMAC secret or a private key).
func (k Key) signer() bool {
	switch k.mat.(type) {
	case []byte, crypto.Signer:
		return true
	}
	return false
}

// verifyMaterial is what jwt's Verify expects for k's algorithm, boxed once
// so that handing it to the library on every token does not allocate.
func (k Key) verifyMaterial() any {
	return k.Public().mat
}
