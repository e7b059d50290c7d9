package handlers_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestCreateEmailValidation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "app", false)

	to := func(addrs ...string) func(m map[string]any) {
		return func(m map[string]any) {
			var list []any
			for _, a := range addrs {
				list = append(list, map[string]any{"email": a})
			}
			m["to"] = list
		}
	}
	set := func(k string, v any) func(m map[string]any) { return func(m map[string]any) { m[k] = v } }
	del := func(k string) func(m map[string]any) { return func(m map[string]any) { delete(m, k) } }
	many := func(n int) []any {
		var out []any
		for i := range n {
			out = append(out, map[string]any{"email": fmt.Sprintf("r%d@example.com", i)})
		}
		return out
	}
	now := time.Now().UTC()

	cases := []struct {
		name   string
		change func(m map[string]any)
		status int
		field  string
	}{
		{"to not an address", to("ok@example.com", "not-an-address"), 422, "to[1].email"},
		{"to no domain", to("ok@example.com", "a@"), 422, "to[1].email"},
		{"to no local part", to("ok@example.com", "@b.com"), 422, "to[1].email"},
		{"to space", to("ok@example.com", "a b@c.com"), 422, "to[1].email"},
		{"to with display name", to("ok@example.com", "Name <a@b.com>"), 422, "to[1].email"},
		{"to dotless domain", to("a@b"), 422, "to[0].email"},
		{"to CRLF", to("a@b.com\r\nBcc: x@y.com"), 422, "to[0].email"},
		{"to empty", to(""), 422, "to[0].email"},
		{"to missing", del("to"), 400, "to"},
		{"to empty list", set("to", []any{}), 400, "to"},
		{"from invalid", set("from", map[string]any{"email": "nope"}), 422, "from.email"},
		{"from name CRLF", set("from", map[string]any{"email": "a@b.com", "name": "x\r\nBcc: v@w.com"}), 422, "from.name"},
		{"cc invalid", set("cc", []any{map[string]any{"email": "bad@"}}), 422, "cc[0].email"},
		{"bcc invalid", set("bcc", []any{map[string]any{"email": "ok@x.com"}, map[string]any{"email": "bad"}}), 422, "bcc[1].email"},
		{"reply_to invalid", set("reply_to", map[string]any{"email": "x"}), 422, "reply_to.email"},
		{"subject missing", del("subject"), 400, "subject"},
		{"subject blank", set("subject", "  \t "), 422, "subject"},
		{"subject CRLF", set("subject", "Hi\r\nBcc: evil@example.com"), 422, "subject"},
		{"subject LF", set("subject", "Hi\nthere"), 422, "subject"},
		{"subject too long", set("subject", strings.Repeat("s", 999)), 400, "subject"},
		{"no body", del("text"), 422, "html"},
		{"empty bodies", func(m map[string]any) { m["text"] = ""; m["html"] = "" }, 422, "html"},
		{"reserved header", set("headers", map[string]any{"Subject": "x"}), 422, "headers.Subject"},
		{"reserved header lower", set("headers", map[string]any{"bcc": "x@y.com"}), 422, "headers.bcc"},
		{"header name space", set("headers", map[string]any{"X Bad": "v"}), 422, "headers.X Bad"},
		{"header name colon", set("headers", map[string]any{"X-Bad:": "v"}), 422, "headers.X-Bad:"},
		{"header value CRLF", set("headers", map[string]any{"X-Ok": "v\r\nBcc: x@y.com"}), 422, "headers.X-Ok"},
		{"header value too long", set("headers", map[string]any{"X-Ok": strings.Repeat("v", 999)}), 422, "headers.X-Ok"},
		{"51 recipients in to", set("to", many(51)), 400, "to"},
		{"51 recipients across to and cc", func(m map[string]any) { m["to"] = many(30); m["cc"] = many(21) }, 422, "to"},
		{"expires_at past", set("expires_at", now.Add(-time.Minute).Format(time.RFC3339)), 422, "expires_at"},
		{"expires_at before scheduled_at", func(m map[string]any) {
			m["scheduled_at"] = now.Add(2 * time.Hour).Format(time.RFC3339)
			m["expires_at"] = now.Add(time.Hour).Format(time.RFC3339)
		}, 422, "expires_at"},
		{"scheduled_at two years ahead", set("scheduled_at", now.AddDate(2, 0, 0).Format(time.RFC3339)), 422, "scheduled_at"},
		{"scheduled_at not a time", set("scheduled_at", "tomorrow"), 400, "scheduled_at"},
		{"priority 11", set("priority", 11), 400, "priority"},
		{"priority 0", set("priority", 0), 400, "priority"},
		{"priority string", set("priority", "high"), 400, "priority"},
		{"unknown queue", set("queue", "nope"), 422, "queue"},
		{"metadata not an object", set("metadata", []any{1}), 400, "metadata"},
	}
	for _, tc := range cases {
		resp, body := b.do(t, http.MethodPost, "/v1/emails", key, emailReq(tc.change), nil)
		t.Run(tc.name, func(t *testing.T) {
			wantCode := "validation_failed"
			if tc.status == 400 {
				wantCode = "" // schema errors: validation_failed or invalid_request
			}
			expectError(t, resp, body, tc.status, wantCode, tc.field)
		})
	}
	for _, raw := range []string{``, `{`, `{"to": "x"}`, `null`, `"str"`} {
		resp, body := b.do(t, http.MethodPost, "/v1/emails", key, raw, nil)
		expectError(t, resp, body, http.StatusBadRequest, "", "")
	}
	resp, body := b.do(t, http.MethodPost, "/v1/emails", key, `{}`, map[string]string{"Content-Type": "text/plain"})
	if resp.StatusCode != http.StatusUnsupportedMediaType && resp.StatusCode != http.StatusBadRequest {
		t.Errorf("text/plain body: status %d: %s", resp.StatusCode, body)
	}

	if n := b.count(t, "SELECT count(*) FROM emails"); n != 0 {
		t.Errorf("emails = %d after refused requests, want 0", n)
	}
	if n := b.count(t, "SELECT count(*) FROM river_job"); n != 0 {
		t.Errorf("river jobs = %d after refused requests, want 0", n)
	}
	if n := b.count(t, "SELECT count(*) FROM email_events"); n != 0 {
		t.Errorf("events = %d after refused requests, want 0", n)
	}
}

func TestCreateEmailAcceptedEdgeCases(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "app", false)

	const sqlish = `'; DROP TABLE emails; --`
	a := b.send(t, key, emailReq(func(m map[string]any) {
		m["subject"] = sqlish
		m["from"] = map[string]any{"email": "sender@example.com", "name": sqlish}
		m["metadata"] = map[string]any{sqlish: sqlish}
		m["headers"] = map[string]any{"X-Note": sqlish}
	}))
	resp, body := b.do(t, http.MethodGet, "/v1/emails/"+a.ID.String(), key, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	e := decode[emailJSON](t, body)
	if e.Subject != sqlish || e.From.Name != sqlish || e.Headers["X-Note"] != sqlish {
		t.Errorf("stored %+v", e)
	}
	if n := b.count(t, "SELECT count(*) FROM emails WHERE subject = $1", sqlish); n != 1 {
		t.Errorf("emails with the subject verbatim = %d", n)
	}

	// Exactly 50 recipients, a maximal subject, Unicode everywhere.
	var fifty []any
	for i := range 50 {
		fifty = append(fifty, map[string]any{"email": fmt.Sprintf("r%d@example.com", i)})
	}
	b.send(t, key, emailReq(func(m map[string]any) {
		m["to"] = fifty
		m["subject"] = strings.Repeat("é", 998)
		m["html"] = "<p>日本語 🎉</p>"
	}))
	b.send(t, key, emailReq(func(m map[string]any) {
		m["to"] = []any{map[string]any{"email": "user@localhost"}}
		m["priority"] = 1
	}))
	if n := b.count(t, "SELECT count(*) FROM emails"); n != 3 {
		t.Errorf("emails = %d, want 3", n)
	}
}

// Every length the schema allows must be storable: the API promises that
// nothing a client sends produces a 5xx.
func TestCreateEmailLongDisplayNames(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "app", false)
	long := strings.Repeat("é", 256) // maxLength of Address.name
	local := strings.Repeat("a", 64)
	addr := local + "@" + strings.Repeat("d", 60) + ".example.com"

	for _, tc := range []struct {
		name   string
		change func(m map[string]any)
	}{
		{"from name", func(m map[string]any) { m["from"] = map[string]any{"email": addr, "name": long} }},
		{"to name", func(m map[string]any) { m["to"] = []any{map[string]any{"email": addr, "name": long}} }},
		{"reply_to name", func(m map[string]any) { m["reply_to"] = map[string]any{"email": addr, "name": long} }},
	} {
		resp, body := b.do(t, http.MethodPost, "/v1/emails", key, emailReq(tc.change), nil)
		t.Run(tc.name, func(t *testing.T) {
			if resp.StatusCode != http.StatusAccepted && (resp.StatusCode < 400 || resp.StatusCode >= 500) {
				t.Errorf("status %d (want 202, or a 4xx naming the field): %s", resp.StatusCode, body)
			}
		})
	}
}
