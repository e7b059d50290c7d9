// Package mail builds RFC 5322 messages and delivers them over pooled SMTP
// connections, classifying failures so the caller can decide between retry,
// dead-lettering and "delivery uncertain".
//
// Messages are rendered with github.com/wneessen/go-mail; the SMTP
// transaction is driven with go-mail's low-level smtp package rather than its
// Client.Send, because Client.Send adds a NOOP and an RSET round trip to every
// message and hides the server's reply behind an error type that cannot be
// unwrapped.
package mail

import (
	"errors"
	"fmt"
	netmail "net/mail"
	"net/textproto"
	"strings"

	gomail "github.com/wneessen/go-mail"
)

// Address is a mailbox with an optional display name.
type Address struct {
	Email string
	Name  string
}

// Message is an outbound email as the rest of Mail Queue describes it.
type Message struct {
	// MessageID is the Message-ID without angle brackets, e.g. "0190…@example.com".
	MessageID string
	From      Address
	To        []Address
	Cc        []Address
	Bcc       []Address
	ReplyTo   *Address
	Subject   string
	HTML      string
	Text      string
	// Headers are extra header fields. Names that Build sets itself are ignored.
	Headers map[string]string
}

// reservedHeaders are set by Build or by go-mail's writer; letting a custom
// header through would duplicate them or break the MIME structure.
var reservedHeaders = map[string]bool{
	"From":                      true,
	"To":                        true,
	"Cc":                        true,
	"Bcc":                       true,
	"Subject":                   true,
	"Message-Id":                true,
	"Date":                      true,
	"Reply-To":                  true,
	"Mime-Version":              true,
	"Content-Type":              true,
	"Content-Transfer-Encoding": true,
}

// Build renders m as a go-mail message: Message-ID and Date set, text and
// HTML as multipart/alternative when both are present, non-ASCII subjects,
// display names and header values RFC 2047-encoded.
func Build(m *Message) (*gomail.Msg, error) {
	if m == nil {
		return nil, errors.New("building message: nil message")
	}
	if m.MessageID == "" || strings.ContainsAny(m.MessageID, "<> \t\r\n") {
		return nil, fmt.Errorf("building message: invalid Message-ID %q", m.MessageID)
	}
	if len(m.To)+len(m.Cc)+len(m.Bcc) == 0 {
		return nil, errors.New("building message: no recipients")
	}

	msg := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
	msg.SetMessageIDWithValue(m.MessageID)
	msg.SetDate()

	from, err := mailAddress(m.From)
	if err != nil {
		return nil, fmt.Errorf("building message: From: %w", err)
	}
	msg.FromMailAddress(from)

	for _, set := range []struct {
		header gomail.AddrHeader
		addrs  []Address
	}{
		{gomail.HeaderTo, m.To},
		{gomail.HeaderCc, m.Cc},
		{gomail.HeaderBcc, m.Bcc},
	} {
		if len(set.addrs) == 0 {
			continue
		}
		list := make([]*netmail.Address, 0, len(set.addrs))
		for _, a := range set.addrs {
			addr, err := mailAddress(a)
			if err != nil {
				return nil, fmt.Errorf("building message: %s: %w", set.header, err)
			}
			list = append(list, addr)
		}
		msg.SetAddrHeaderFromMailAddress(set.header, list...)
	}
	if m.ReplyTo != nil {
		addr, err := mailAddress(*m.ReplyTo)
		if err != nil {
			return nil, fmt.Errorf("building message: Reply-To: %w", err)
		}
		msg.ReplyToMailAddress(addr)
	}

	if strings.ContainsAny(m.Subject, "\r\n") {
		return nil, errors.New("building message: subject contains a line break")
	}
	msg.Subject(m.Subject)

	for name, value := range m.Headers {
		if !validHeaderName(name) {
			return nil, fmt.Errorf("building message: invalid header name %q", name)
		}
		if reservedHeaders[textproto.CanonicalMIMEHeaderKey(name)] {
			continue
		}
		if strings.ContainsAny(value, "\r\n") {
			return nil, fmt.Errorf("building message: header %s contains a line break", name)
		}
		msg.SetGenHeader(gomail.Header(name), value)
	}

	switch {
	case m.Text != "" && m.HTML != "":
		// Plain text first: in multipart/alternative the last part is preferred.
		msg.SetBodyString(gomail.TypeTextPlain, m.Text)
		msg.AddAlternativeString(gomail.TypeTextHTML, m.HTML)
	case m.HTML != "":
		msg.SetBodyString(gomail.TypeTextHTML, m.HTML)
	default:
		msg.SetBodyString(gomail.TypeTextPlain, m.Text)
	}
	return msg, nil
}

// mailAddress validates the bare address (so a display name smuggled into
// Email is refused) and attaches the name, which net/mail encodes on output.
func mailAddress(a Address) (*netmail.Address, error) {
	parsed, err := netmail.ParseAddress(a.Email)
	if err != nil {
		return nil, fmt.Errorf("parsing address %q: %w", a.Email, err)
	}
	if parsed.Name != "" || parsed.Address != strings.TrimSpace(a.Email) {
		return nil, fmt.Errorf("address %q must be a bare email address", a.Email)
	}
	if strings.ContainsAny(a.Name, "\r\n") {
		return nil, fmt.Errorf("display name for %q contains a line break", a.Email)
	}
	return &netmail.Address{Name: a.Name, Address: parsed.Address}, nil
}

// validHeaderName reports whether name is an RFC 5322 field name: printable
// ASCII except colon.
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 33 || c > 126 || c == ':' {
			return false
		}
	}
	return true
}
