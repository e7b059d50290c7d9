package mail_test

import (
	"bytes"
	"mime"
	netmail "net/mail"
	"strings"
	"testing"

	"github.com/mailqueue/mailqueue/mail"
)

func render(t *testing.T, m *mail.Message) (*netmail.Message, string) {
	t.Helper()
	msg, err := mail.Build(m)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	var buf bytes.Buffer
	if _, err := msg.WriteTo(&buf); err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	parsed, err := netmail.ReadMessage(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("parsing rendered message: %v\n%s", err, buf.String())
	}
	return parsed, buf.String()
}

func TestBuildHeaders(t *testing.T) {
	t.Parallel()
	parsed, raw := render(t, &mail.Message{
		MessageID: "0190abcd@mailqueue.test",
		From:      mail.Address{Email: "from@example.org", Name: "Jörg"},
		To:        []mail.Address{{Email: "to@example.org"}},
		ReplyTo:   &mail.Address{Email: "reply@example.org"},
		Subject:   "Ünïcödé subject ✓",
		Text:      "only text",
		Headers: map[string]string{
			"X-Tag":      "Grüße",
			"message-id": "<evil@example.org>",
			"DATE":       "yesterday",
		},
	})
	if got := parsed.Header.Get("Message-Id"); got != "<0190abcd@mailqueue.test>" {
		t.Fatalf("Message-ID = %q", got)
	}
	if _, err := parsed.Header.Date(); err != nil {
		t.Fatalf("Date: %v", err)
	}
	if strings.Contains(raw, "evil@") || strings.Contains(raw, "yesterday") {
		t.Fatalf("reserved headers overridden:\n%s", raw)
	}
	if strings.Contains(raw, "Ünïcödé") {
		t.Fatalf("subject not encoded:\n%s", raw)
	}
	dec := new(mime.WordDecoder)
	if s, _ := dec.DecodeHeader(parsed.Header.Get("Subject")); s != "Ünïcödé subject ✓" {
		t.Fatalf("Subject decodes to %q", s)
	}
	if s, _ := dec.DecodeHeader(parsed.Header.Get("X-Tag")); s != "Grüße" {
		t.Fatalf("X-Tag decodes to %q", s)
	}
	if got := parsed.Header.Get("Reply-To"); got != "<reply@example.org>" {
		t.Fatalf("Reply-To = %q", got)
	}
	if ct := parsed.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("text-only message has Content-Type %q", ct)
	}
}

func TestBuildHTMLOnly(t *testing.T) {
	t.Parallel()
	parsed, _ := render(t, &mail.Message{
		MessageID: "1@x.test",
		From:      mail.Address{Email: "from@example.org"},
		To:        []mail.Address{{Email: "to@example.org"}},
		HTML:      "<b>hi</b>",
	})
	if ct := parsed.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Fatalf("HTML-only message has Content-Type %q", ct)
	}
}

func TestBuildRejectsInvalidInput(t *testing.T) {
	t.Parallel()
	base := func() *mail.Message {
		return &mail.Message{
			MessageID: "1@x.test",
			From:      mail.Address{Email: "from@example.org"},
			To:        []mail.Address{{Email: "to@example.org"}},
			Text:      "x",
		}
	}
	cases := map[string]func(m *mail.Message){
		"no message id":     func(m *mail.Message) { m.MessageID = "" },
		"bracketed id":      func(m *mail.Message) { m.MessageID = "<1@x.test>" },
		"bad from":          func(m *mail.Message) { m.From.Email = "not an address" },
		"name in email":     func(m *mail.Message) { m.To[0].Email = "Bob <bob@example.org>" },
		"no recipients":     func(m *mail.Message) { m.To = nil },
		"header injection":  func(m *mail.Message) { m.Headers = map[string]string{"X-A": "a\r\nBcc: x@y.z"} },
		"bad header name":   func(m *mail.Message) { m.Headers = map[string]string{"X A": "a"} },
		"subject injection": func(m *mail.Message) { m.Subject = "a\nBcc: x@y.z" },
	}
	for name, mutate := range cases {
		m := base()
		mutate(m)
		if _, err := mail.Build(m); err == nil {
			t.Errorf("%s: Build succeeded, want error", name)
		}
	}
}
