package handlers_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"
)

type acceptedWarnings struct {
	accepted
	Warnings []string `json:"warnings"`
}

func TestCreateEmailPersonalization(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "app", false)

	req := emailReq(func(m map[string]any) {
		m["subject"] = "Hi {{ first_name }} <{{user.address.city}}>"
		m["html"] = `<p>Dear {{name|'Customer'}}, {{first_name}} from {{user.address.city}}: {{score}} {{vip}} {{nope}}</p>`
		m["text"] = "Dear {{name|\"Customer\"}}, {{first_name}} {{user.address.city}} {{nope|'n/a'}}"
		m["personalizations"] = map[string]any{
			"first_name": "<Ada & Bob>", "score": 9.50, "vip": true,
			"user": map[string]any{"address": map[string]any{"city": "Zürich\r\nBcc: x@evil.example"}},
		}
	})
	resp, body := b.do(t, http.MethodPost, "/v1/emails", key, req, nil)
	expectStatus(t, resp, body, http.StatusAccepted)
	a := decode[acceptedWarnings](t, body)
	if len(a.Warnings) != 1 || !strings.Contains(a.Warnings[0], `html: personalization variable "nope"`) {
		t.Errorf("warnings = %q, want one for html's nope", a.Warnings)
	}

	resp, body = b.do(t, http.MethodGet, "/v1/emails/"+a.ID.String(), key, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	e := decode[emailJSON](t, body)
	// Subject: not escaped, line breaks in values flattened (it is a header).
	if want := "Hi <Ada & Bob> <Zürich Bcc: x@evil.example>"; e.Subject != want {
		t.Errorf("subject = %q, want %q", e.Subject, want)
	}
	wantHTML := "<p>Dear Customer, &lt;Ada &amp; Bob&gt; from Zürich\r\nBcc: x@evil.example: 9.5 true </p>"
	if e.HTML == nil || *e.HTML != wantHTML {
		t.Errorf("html = %q, want %q", deref(e.HTML), wantHTML)
	}
	wantText := "Dear Customer, <Ada & Bob> Zürich\r\nBcc: x@evil.example n/a"
	if e.Text == nil || *e.Text != wantText {
		t.Errorf("text = %q, want %q", deref(e.Text), wantText)
	}
	// The values are kept for reference.
	if n := b.count(t, `SELECT count(*) FROM emails WHERE id = $1 AND personalization_data->>'first_name' = '<Ada & Bob>'`, a.ID); n != 1 {
		t.Error("personalization_data not stored")
	}

	// Without variables nothing changes and there are no warnings.
	resp, body = b.do(t, http.MethodPost, "/v1/emails", key, emailReq(func(m map[string]any) { m["text"] = "{{ not a tag }} {{x" }), nil)
	expectStatus(t, resp, body, http.StatusAccepted)
	if a := decode[acceptedWarnings](t, body); len(a.Warnings) != 0 {
		t.Errorf("warnings = %q", a.Warnings)
	}
}

func TestCreateEmailStrictPersonalization(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appID, key := b.createApp(t, "app", false)
	b.strictQueue(t, appID)

	req := emailReq(func(m map[string]any) {
		m["html"] = "<p>{{greeting|'Hi'}} {{first_name}}</p>"
		m["text"] = "{{first_name}}"
	})
	resp, body := b.do(t, http.MethodPost, "/v1/emails", key, req, nil)
	expectError(t, resp, body, http.StatusUnprocessableEntity, "validation_failed", "html")
	if !strings.Contains(string(body), "first_name") {
		t.Errorf("error does not name the variable: %s", body)
	}
	if n := b.count(t, "SELECT count(*) FROM emails"); n != 0 {
		t.Errorf("%d emails stored for a refused request", n)
	}

	req["personalizations"] = map[string]any{"first_name": "Ada"}
	resp, body = b.do(t, http.MethodPost, "/v1/emails", key, req, nil)
	expectStatus(t, resp, body, http.StatusAccepted)
}

func TestCreateEmailPersonalizedSubjectTooLong(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "app", false)
	req := emailReq(func(m map[string]any) {
		m["subject"] = "{{long}}"
		m["personalizations"] = map[string]any{"long": strings.Repeat("é", 999)}
	})
	resp, body := b.do(t, http.MethodPost, "/v1/emails", key, req, nil)
	expectError(t, resp, body, http.StatusUnprocessableEntity, "validation_failed", "subject")
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

// strictQueue sets strict_personalization on the app's default queue.
func (b *bundle) strictQueue(t *testing.T, appID uuid.UUID) {
	t.Helper()
	b.exec(t, `UPDATE queues SET settings = settings || '{"strict_personalization": true}' WHERE app_id = $1 AND name = 'default'`, appID)
}
