package handlers

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
)

// API key prefixes: live keys send for real, test keys run the sandbox.
const (
	prefixLive = "mq_live_"
	prefixTest = "mq_test_"
)

// newAPIKey returns a fresh key: the prefix and 32 bytes from crypto/rand,
// base64url-encoded. Only its SHA-256 digest is stored (DESIGN.md, decision 4).
func newAPIKey(sandbox bool) (key string, digest []byte) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	prefix := prefixLive
	if sandbox {
		prefix = prefixTest
	}
	key = prefix + base64.RawURLEncoding.EncodeToString(b[:])
	return key, hashAPIKey(key)
}

// hashAPIKey is the digest under which a key is stored and looked up.
func hashAPIKey(key string) []byte {
	sum := sha256.Sum256([]byte(key))
	return sum[:]
}
