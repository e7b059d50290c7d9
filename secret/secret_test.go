package secret_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/mailqueue/mailqueue/secret"
)

func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func TestSealOpen(t *testing.T) {
	t.Parallel()
	box, err := secret.NewBox(key(1))
	if err != nil {
		t.Fatal(err)
	}
	ct, id := box.Seal([]byte("hunter2"), "row:1")
	if bytes.Contains(ct, []byte("hunter2")) {
		t.Fatal("ciphertext contains the plaintext")
	}
	if id != secret.KeyID(key(1)) || id != box.CurrentKeyID() {
		t.Fatalf("key id %s", id)
	}
	pt, err := box.Open(ct, id, "row:1")
	if err != nil || string(pt) != "hunter2" {
		t.Fatalf("open = %q, %v", pt, err)
	}
	ct2, _ := box.Seal([]byte("hunter2"), "row:1")
	if bytes.Equal(ct, ct2) {
		t.Fatal("two seals of the same plaintext are equal: nonce reused")
	}
	if _, err := box.Open(ct, id, "row:2"); err == nil {
		t.Fatal("ciphertext opened under another context")
	}
	ct[len(ct)-1] ^= 1
	if _, err := box.Open(ct, id, "row:1"); err == nil {
		t.Fatal("tampered ciphertext opened")
	}
}

func TestRotation(t *testing.T) {
	t.Parallel()
	old, _ := secret.NewBox(key(1))
	ct, oldID := old.Seal([]byte("s3cret"), "c")

	rotated, err := secret.NewBox(key(2), key(1))
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := rotated.Open(ct, oldID, "c"); err != nil || string(pt) != "s3cret" {
		t.Fatalf("old secret after rotation = %q, %v", pt, err)
	}
	if _, id := rotated.Seal([]byte("x"), "c"); id == oldID {
		t.Fatal("new secrets still sealed with the previous key")
	}
	fresh, _ := secret.NewBox(key(3))
	if _, err := fresh.Open(ct, oldID, "c"); !errors.Is(err, secret.ErrUnknownKey) {
		t.Fatalf("unknown key: %v", err)
	}
}

func TestNewBoxRejectsShortKeys(t *testing.T) {
	t.Parallel()
	if _, err := secret.NewBox([]byte("short")); err == nil {
		t.Fatal("accepted a 5-byte key")
	}
	if _, err := secret.NewBox(key(1), []byte("short")); err == nil {
		t.Fatal("accepted a 5-byte previous key")
	}
}
