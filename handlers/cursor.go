package handlers

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"

	"github.com/mailqueue/mailqueue/oas"
	"github.com/mailqueue/mailqueue/store"
)

// cursors turns list positions into opaque, tamper-proof strings: the
// position in JSON, then an HMAC of it, so a client can neither read a
// cursor's meaning into its contract nor forge one to probe other rows.
type cursors struct {
	key []byte
}

func newCursors(secret []byte) *cursors {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("mailqueue cursor v1"))
	return &cursors{key: m.Sum(nil)}
}

func (c *cursors) encode(p store.Cursor) string {
	payload, _ := json.Marshal(p)
	return base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(c.sign(payload))
}

var errBadCursor = errors.New("cursor is not one this API returned")

func (c *cursors) decode(s string) (*store.Cursor, error) {
	p64, s64, ok := strings.Cut(s, ".")
	if !ok {
		return nil, errBadCursor
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(p64)
	sig, err2 := base64.RawURLEncoding.DecodeString(s64)
	if err1 != nil || err2 != nil || !hmac.Equal(sig, c.sign(payload)) {
		return nil, errBadCursor
	}
	var p store.Cursor
	if err := json.Unmarshal(payload, &p); err != nil {
		return nil, errBadCursor
	}
	return &p, nil
}

func (c *cursors) sign(payload []byte) []byte {
	m := hmac.New(sha256.New, c.key)
	m.Write(payload)
	return m.Sum(nil)[:16]
}

// page converts one page of rows for the response and returns the cursor
// that continues after it, or none on the last page.
func page[R interface{ Position() store.Cursor }, T any](h *Handler, rows []R, more bool, conv func(R) T) ([]T, oas.OptString) {
	data := make([]T, 0, len(rows))
	for _, r := range rows {
		data = append(data, conv(r))
	}
	if !more || len(rows) == 0 {
		return data, oas.OptString{}
	}
	return data, oas.NewOptString(h.cursors.encode(rows[len(rows)-1].Position()))
}
