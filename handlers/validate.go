package handlers

import (
	"fmt"
	"net/mail"
	"strings"
	"time"
	"unicode"

	"github.com/mailqueue/mailqueue/oas"
)

// Limits on what an email may carry, beyond the schema's.
const (
	maxRecipients  = 50 // to + cc + bcc
	maxHeaders     = 50
	maxHeaderValue = 998
	maxScheduleAge = 366 * 24 * time.Hour
)

// reservedHeaders are set by Mail Queue itself; letting a client set them
// would break threading, bounce matching or the message structure.
var reservedHeaders = map[string]bool{
	"from": true, "to": true, "cc": true, "bcc": true, "subject": true, "reply-to": true,
	"message-id": true, "date": true, "sender": true, "return-path": true,
	"mime-version": true, "content-type": true, "content-transfer-encoding": true,
}

// validateEmailRequest checks what the schema cannot: addresses, header
// safety, body presence and time order. Errors name the exact field.
func validateEmailRequest(req *oas.EmailRequest, now time.Time) error {
	if err := validateAddress("from", req.From); err != nil {
		return err
	}
	for _, list := range []struct {
		name string
		addr []oas.Address
	}{{"to", req.To}, {"cc", req.Cc}, {"bcc", req.Bcc}} {
		for i, a := range list.addr {
			if err := validateAddress(fieldIndex(list.name, i), a); err != nil {
				return err
			}
		}
	}
	if n := len(req.To) + len(req.Cc) + len(req.Bcc); n > maxRecipients {
		return invalid("to", "an email may have at most %d recipients across to, cc and bcc (got %d); use POST /v1/emails/batch for more", maxRecipients, n)
	}
	if v, ok := req.ReplyTo.Get(); ok {
		if err := validateAddress("reply_to", v); err != nil {
			return err
		}
	}
	if strings.TrimSpace(req.Subject) == "" {
		return invalid("subject", "subject must not be blank")
	}
	if strings.ContainsAny(req.Subject, "\r\n") {
		return invalid("subject", "subject must not contain line breaks")
	}
	html, hasHTML := req.HTML.Get()
	text, hasText := req.Text.Get()
	if (!hasHTML || html == "") && (!hasText || text == "") {
		return invalid("html", "an email needs a body: set html, text or both")
	}
	if hs, ok := req.Headers.Get(); ok {
		if len(hs) > maxHeaders {
			return invalid("headers", "at most %d custom headers", maxHeaders)
		}
		for name, value := range hs {
			field := "headers." + name
			if !validHeaderName(name) {
				return invalid(field, "%q is not a valid header name", name)
			}
			if reservedHeaders[strings.ToLower(name)] {
				return invalid(field, "header %s is set by Mail Queue and cannot be overridden", name)
			}
			if strings.ContainsAny(value, "\r\n") || len(value) > maxHeaderValue {
				return invalid(field, "header values must be one line of at most %d characters", maxHeaderValue)
			}
		}
	}
	sched, hasSched := req.ScheduledAt.Get()
	if hasSched && sched.After(now.Add(maxScheduleAge)) {
		return invalid("scheduled_at", "scheduled_at may be at most one year ahead")
	}
	if exp, ok := req.ExpiresAt.Get(); ok {
		if !exp.After(now) {
			return invalid("expires_at", "expires_at is already in the past")
		}
		if hasSched && !exp.After(sched) {
			return invalid("expires_at", "expires_at must be after scheduled_at")
		}
	}
	return nil
}

// validateAddress accepts a bare RFC 5322 addr-spec with a domain, and a
// display name without control characters (which could inject headers).
func validateAddress(field string, a oas.Address) error {
	emailField := field + ".email"
	s := a.Email
	if s == "" {
		return invalid(emailField, "%s is required", emailField)
	}
	parsed, err := mail.ParseAddress(s)
	if err != nil || parsed.Address != s || parsed.Name != "" {
		return invalid(emailField, "%s is not a valid email address", emailField)
	}
	at := strings.LastIndexByte(s, '@')
	if at < 1 || at == len(s)-1 || !strings.Contains(s[at+1:], ".") && s[at+1:] != "localhost" {
		return invalid(emailField, "%s is not a valid email address", emailField)
	}
	if name, ok := a.Name.Get(); ok && hasControl(name) {
		return invalid(field+".name", "%s.name must not contain control characters", field)
	}
	return nil
}

func validHeaderName(name string) bool {
	if name == "" || len(name) > 76 {
		return false
	}
	for _, r := range name {
		if r < 33 || r > 126 || r == ':' {
			return false
		}
	}
	return true
}

func hasControl(s string) bool {
	return strings.IndexFunc(s, unicode.IsControl) >= 0
}

func fieldIndex(name string, i int) string { return fmt.Sprintf("%s[%d]", name, i) }

// formatAddress renders an address for a header, quoting the name as needed.
func formatAddress(a oas.Address) string {
	return (&mail.Address{Name: a.Name.Or(""), Address: a.Email}).String()
}

func parseAddress(s string) (oas.Address, error) {
	a, err := mail.ParseAddress(s)
	if err != nil {
		return oas.Address{}, err
	}
	out := oas.Address{Email: a.Address}
	if a.Name != "" {
		out.Name = oas.NewOptString(a.Name)
	}
	return out, nil
}
