package mail_test

import (
	"testing"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/mail"
)

func TestUnsubscribeTokens(t *testing.T) {
	t.Parallel()
	key, old := make([]byte, 32), make([]byte, 32)
	key[0], old[0] = 1, 2
	u := mail.NewUnsubscribe("https://mq.example.com/", "in.example.com", key, old)
	id := uuid.Must(uuid.NewV7())
	token := u.Token(id, "Reader@Example.com")

	if got, err := u.TokenEmail(token); err != nil || got != id {
		t.Errorf("TokenEmail = %v, %v; want %v", got, err, id)
	}
	if !u.Verify(token, "reader@example.com") {
		t.Error("token does not verify for its recipient (case-insensitively)")
	}
	if u.Verify(token, "other@example.com") {
		t.Error("token verifies for another recipient")
	}
	// Every other spelling is refused, including those that differ only in
	// the unused bits of the last base32 character.
	for i := range token {
		for _, c := range "abcdefghijklmnopqrstuvwxyz234567" {
			if byte(c) == token[i] {
				continue
			}
			bad := token[:i] + string(c) + token[i+1:]
			if u.Verify(bad, "reader@example.com") {
				t.Fatalf("altered token %q verifies", bad)
			}
		}
	}
	for _, bad := range []string{"", "x", token + "a", token[:len(token)-1]} {
		if _, err := u.TokenEmail(bad); err == nil {
			t.Errorf("TokenEmail(%q) accepted", bad)
		}
	}
	// Links made before a key rotation keep working.
	prev := mail.NewUnsubscribe("https://mq.example.com", "in.example.com", old)
	if !u.Verify(prev.Token(id, "reader@example.com"), "reader@example.com") {
		t.Error("a token made with the previous key does not verify")
	}
	if other := mail.NewUnsubscribe("https://mq.example.com", "in.example.com", old); other.Verify(token, "reader@example.com") {
		t.Error("a token verifies under a key that did not make it")
	}

	m := &mail.Message{Headers: map[string]string{"list-unsubscribe": "<mailto:x@y>", "X-Keep": "1"}}
	u.Headers(m, id, "reader@example.com")
	want := "<https://mq.example.com/u/" + token + ">, <mailto:unsubscribe+" + token + "@in.example.com>"
	if len(m.Headers) != 3 || m.Headers["List-Unsubscribe"] != want || m.Headers["List-Unsubscribe-Post"] != "List-Unsubscribe=One-Click" || m.Headers["X-Keep"] != "1" {
		t.Errorf("headers = %v", m.Headers)
	}
}
