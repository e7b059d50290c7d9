// Package secret encrypts the secrets Mail Queue keeps in its database
// (SMTP passwords, webhook signing secrets, MFA secrets) with AES-256-GCM
// under a key from the environment (DESIGN.md, decision 8).
//
// Every ciphertext is stored with the id of the key that made it, so the key
// can be rotated: new writes use the current key, and ciphertexts made with
// a previous key still open as long as that key is configured.
package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
)

// ErrUnknownKey means a ciphertext was made with a key that is not
// configured (neither current nor previous).
var ErrUnknownKey = errors.New("secret was encrypted with a key that is not configured")

// Box seals and opens secrets.
type Box struct {
	current string
	aeads   map[string]cipher.AEAD
}

// KeyID names a key without revealing it: the first 8 bytes of its SHA-256,
// in hex.
func KeyID(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:8])
}

// NewBox returns a Box sealing with current and opening with current or any
// of previous. Every key must be 32 bytes.
func NewBox(current []byte, previous ...[]byte) (*Box, error) {
	b := &Box{aeads: map[string]cipher.AEAD{}}
	for i, k := range append([][]byte{current}, previous...) {
		if len(k) != 32 {
			return nil, fmt.Errorf("encryption key %d is %d bytes, want 32", i, len(k))
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, fmt.Errorf("encryption key %d: %w", i, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("encryption key %d: %w", i, err)
		}
		id := KeyID(k)
		if i == 0 {
			b.current = id
		}
		b.aeads[id] = aead
	}
	return b, nil
}

// Seal encrypts plaintext with the current key. context binds the
// ciphertext to where it is stored (e.g. "smtp_configs.password:<id>"), so
// a ciphertext copied into another row does not open there.
func (b *Box) Seal(plaintext []byte, context string) (ciphertext []byte, keyID string) {
	aead := b.aeads[b.current]
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return aead.Seal(nonce, nonce, plaintext, []byte(context)), b.current
}

// Open decrypts a ciphertext made by Seal with the same context.
func (b *Box) Open(ciphertext []byte, keyID, context string) ([]byte, error) {
	aead, ok := b.aeads[keyID]
	if !ok {
		return nil, fmt.Errorf("key %s: %w", keyID, ErrUnknownKey)
	}
	n := aead.NonceSize()
	if len(ciphertext) < n+aead.Overhead() {
		return nil, errors.New("ciphertext too short")
	}
	out, err := aead.Open(nil, ciphertext[:n], ciphertext[n:], []byte(context))
	if err != nil {
		return nil, fmt.Errorf("opening secret: %w", err)
	}
	return out, nil
}

// CurrentKeyID is the id of the key new secrets are sealed with.
func (b *Box) CurrentKeyID() string { return b.current }
