package mail

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"net/textproto"
	"strings"

	"github.com/google/uuid"
)

// Unsubscribe makes and checks the tokens of List-Unsubscribe links
// (RFC 2369, one-click per RFC 8058). A token is the email id and an HMAC
// binding it to the recipient, so it reveals no address, cannot be forged
// or moved to another recipient, and is short enough for the local part of
// a mailto address (at most 64 characters, RFC 5321).
//
// The HMAC key is derived from the configured encryption key; the previous
// encryption keys still verify, so rotating the key does not break the
// links in mail already delivered.
type Unsubscribe struct {
	keys [][]byte // current first
	// PublicURL is where /u/{token} is served (MQ_PUBLIC_URL).
	PublicURL string
	// MailDomain is the domain of the mailto address, one whose MX is the
	// inbound server.
	MailDomain string
}

// unsubscribeMACLen is the HMAC truncated to 80 bits: ample against online
// guessing, and it keeps the token in a mailto local part.
const unsubscribeMACLen = 10

// tokenEncoding is lower-case base32 without padding: safe in URLs and in
// case-insensitive mail local parts.
var tokenEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// ErrBadToken means an unsubscribe token was not made by this service.
var ErrBadToken = errors.New("unsubscribe token is not valid")

// NewUnsubscribe returns token handling keyed from the current encryption
// key and any previous ones.
func NewUnsubscribe(publicURL, mailDomain string, encryptionKey []byte, previous ...[]byte) *Unsubscribe {
	u := &Unsubscribe{PublicURL: strings.TrimRight(publicURL, "/"), MailDomain: mailDomain}
	for _, k := range append([][]byte{encryptionKey}, previous...) {
		m := hmac.New(sha256.New, k)
		m.Write([]byte("mailqueue unsubscribe v1"))
		u.keys = append(u.keys, m.Sum(nil))
	}
	return u
}

func (u *Unsubscribe) mac(key []byte, emailID uuid.UUID, recipient string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(emailID[:])
	m.Write([]byte(strings.ToLower(recipient)))
	return m.Sum(nil)[:unsubscribeMACLen]
}

// Token returns the token for recipient of the email emailID.
func (u *Unsubscribe) Token(emailID uuid.UUID, recipient string) string {
	return tokenEncoding.EncodeToString(append(emailID[:], u.mac(u.keys[0], emailID, recipient)...))
}

// TokenEmail returns the email id a token claims, without checking it:
// the caller looks up the email's recipient and then calls Verify.
func (u *Unsubscribe) TokenEmail(token string) (uuid.UUID, error) {
	raw, ok := decodeToken(token)
	if !ok {
		return uuid.Nil, ErrBadToken
	}
	return uuid.UUID(raw[:16]), nil
}

// decodeToken decodes a token, accepting only the one encoding Token
// makes: base32's last character carries unused bits, and without this
// check several spellings would decode to the same token.
func decodeToken(token string) ([]byte, bool) {
	token = strings.ToLower(token)
	raw, err := tokenEncoding.DecodeString(token)
	if err != nil || len(raw) != 16+unsubscribeMACLen || tokenEncoding.EncodeToString(raw) != token {
		return nil, false
	}
	return raw, true
}

// Verify reports whether token was made for recipient of its email.
func (u *Unsubscribe) Verify(token, recipient string) bool {
	raw, ok := decodeToken(token)
	if !ok {
		return false
	}
	id := uuid.UUID(raw[:16])
	for _, k := range u.keys {
		if hmac.Equal(raw[16:], u.mac(k, id, recipient)) {
			return true
		}
	}
	return false
}

// Headers adds List-Unsubscribe (https and mailto) and List-Unsubscribe-Post
// for recipient of emailID to m, replacing any the client set.
func (u *Unsubscribe) Headers(m *Message, emailID uuid.UUID, recipient string) {
	token := u.Token(emailID, recipient)
	hs := make(map[string]string, len(m.Headers)+2)
	for k, v := range m.Headers {
		switch textproto.CanonicalMIMEHeaderKey(k) {
		case "List-Unsubscribe", "List-Unsubscribe-Post":
			continue
		}
		hs[k] = v
	}
	hs["List-Unsubscribe"] = "<" + u.PublicURL + "/u/" + token + ">, <mailto:unsubscribe+" + token + "@" + u.MailDomain + ">"
	hs["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
	m.Headers = hs
}
