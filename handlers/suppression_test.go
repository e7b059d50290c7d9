package handlers_test

import (
	"bufio"
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/mail"
)

type suppressionOut struct {
	ID            uuid.UUID  `json:"id"`
	Email         string     `json:"email"`
	Reason        string     `json:"reason"`
	Scope         string     `json:"scope"`
	SourceEmailID *uuid.UUID `json:"source_email_id"`
	ExpiresAt     *time.Time `json:"expires_at"`
}

type suppressionPage struct {
	Data    []suppressionOut `json:"data"`
	Cursor  *string          `json:"cursor"`
	HasMore bool             `json:"has_more"`
}

func (b *bundle) listSuppressions(t *testing.T, key, query string) suppressionPage {
	t.Helper()
	resp, body := b.do(t, http.MethodGet, "/v1/suppression"+query, key, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	return decode[suppressionPage](t, body)
}

func TestSuppressionCRUD(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appA, keyA := b.createApp(t, "a", false)
	_, keyB := b.createApp(t, "b", false)

	resp, body := b.do(t, http.MethodPost, "/v1/suppression", keyA, map[string]any{"email": "Someone@Example.com"}, nil)
	expectStatus(t, resp, body, http.StatusCreated)
	s := decode[suppressionOut](t, body)
	if s.Email != "someone@example.com" || s.Reason != "manual" || s.Scope != "app" || s.ExpiresAt != nil {
		t.Errorf("created %+v, want someone@example.com, manual, app, permanent", s)
	}
	resp, body = b.do(t, http.MethodPost, "/v1/suppression", keyA, map[string]any{"email": "someone@EXAMPLE.com"}, nil)
	expectError(t, resp, body, http.StatusConflict, "already_exists", "")
	resp, body = b.do(t, http.MethodPost, "/v1/suppression", keyA, map[string]any{"email": "not an address"}, nil)
	expectError(t, resp, body, http.StatusUnprocessableEntity, "validation_failed", "email")
	resp, body = b.do(t, http.MethodPost, "/v1/suppression", keyA, map[string]any{"email": "x@example.com", "expires_at": "2001-01-01T00:00:00Z"}, nil)
	expectError(t, resp, body, http.StatusUnprocessableEntity, "validation_failed", "expires_at")
	resp, _ = b.do(t, http.MethodPost, "/v1/suppression", keyA, map[string]any{"email": "x@example.com", "reason": "bogus"}, nil)
	if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusUnprocessableEntity {
		t.Errorf("unknown reason: status %d, want 400 or 422", resp.StatusCode)
	}
	soon := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	resp, body = b.do(t, http.MethodPost, "/v1/suppression", keyA, map[string]any{"email": "soft@example.com", "reason": "soft_bounce", "expires_at": soon}, nil)
	expectStatus(t, resp, body, http.StatusCreated)
	if got := decode[suppressionOut](t, body); got.ExpiresAt == nil || !got.ExpiresAt.Equal(soon) {
		t.Errorf("expires_at = %v, want %v", got.ExpiresAt, soon)
	}

	// Another app sees none of A's entries and may add the same address.
	if p := b.listSuppressions(t, keyB, ""); len(p.Data) != 0 {
		t.Errorf("app B sees %d entries of app A", len(p.Data))
	}
	resp, body = b.do(t, http.MethodPost, "/v1/suppression", keyB, map[string]any{"email": "someone@example.com"}, nil)
	expectStatus(t, resp, body, http.StatusCreated)
	resp, body = b.do(t, http.MethodDelete, "/v1/suppression/soft@example.com", keyB, nil, nil)
	expectError(t, resp, body, http.StatusNotFound, "not_found", "")

	p := b.listSuppressions(t, keyA, "")
	if len(p.Data) != 2 || p.Data[0].Email != "soft@example.com" || p.Data[1].Email != "someone@example.com" {
		t.Errorf("list = %+v, want soft then someone (newest first)", p.Data)
	}
	p = b.listSuppressions(t, keyA, "?reason=soft_bounce")
	if len(p.Data) != 1 || p.Data[0].Reason != "soft_bounce" {
		t.Errorf("reason filter = %+v", p.Data)
	}
	p = b.listSuppressions(t, keyA, "?limit=1")
	if len(p.Data) != 1 || !p.HasMore || p.Cursor == nil {
		t.Fatalf("page 1 = %+v", p)
	}
	p2 := b.listSuppressions(t, keyA, "?limit=1&cursor="+url.QueryEscape(*p.Cursor))
	if len(p2.Data) != 1 || p2.HasMore || p2.Data[0].ID == p.Data[0].ID {
		t.Errorf("page 2 = %+v", p2)
	}

	resp, body = b.do(t, http.MethodDelete, "/v1/suppression/SOMEONE@example.com", keyA, nil, nil)
	expectStatus(t, resp, body, http.StatusNoContent)
	resp, body = b.do(t, http.MethodDelete, "/v1/suppression/someone@example.com", keyA, nil, nil)
	expectError(t, resp, body, http.StatusNotFound, "not_found", "")
	if n := b.count(t, `SELECT count(*) FROM suppression_list WHERE email_address = 'someone@example.com'`); n != 1 {
		t.Errorf("%d entries for someone@example.com left, want app B's only", n)
	}
	if n := b.count(t, `SELECT count(*) FROM audit_logs WHERE app_id = $1 AND action IN ('suppression.create', 'suppression.delete')`, appA); n != 3 {
		t.Errorf("%d audit entries for app A, want 3", n)
	}
}

func TestSuppressionScopesAndGlobal(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appA, master := b.createApp(t, "a", false)
	_, keyB := b.createApp(t, "b", false)
	manage := b.insertKey(t, appA, []string{"suppression:manage"}, nil, nil)
	sendOnly := b.insertKey(t, appA, []string{"email:send"}, nil, nil)

	for _, c := range []struct{ method, path string }{
		{http.MethodPost, "/v1/suppression"}, {http.MethodGet, "/v1/suppression"},
		{http.MethodGet, "/v1/suppression/export"}, {http.MethodDelete, "/v1/suppression/x@example.com"},
	} {
		var body any
		if c.method == http.MethodPost {
			body = map[string]any{"email": "x@example.com"}
		}
		resp, out := b.do(t, c.method, c.path, sendOnly, body, nil)
		expectError(t, resp, out, http.StatusForbidden, "insufficient_scope", "")
	}

	resp, body := b.do(t, http.MethodPost, "/v1/suppression", manage, map[string]any{"email": "g@example.com", "global": true}, nil)
	expectError(t, resp, body, http.StatusForbidden, "insufficient_scope", "")
	resp, body = b.do(t, http.MethodPost, "/v1/suppression", master, map[string]any{"email": "g@example.com", "global": true, "reason": "complaint"}, nil)
	expectStatus(t, resp, body, http.StatusCreated)
	if s := decode[suppressionOut](t, body); s.Scope != "global" {
		t.Errorf("scope = %q, want global", s.Scope)
	}
	// A global entry is visible to every app and suppresses their email.
	if p := b.listSuppressions(t, keyB, ""); len(p.Data) != 1 || p.Data[0].Scope != "global" {
		t.Errorf("app B list = %+v, want the global entry", p.Data)
	}
	a := b.send(t, keyB, emailReq(func(m map[string]any) { m["to"] = []any{map[string]any{"email": "G@example.com"}} }))
	if a.Status != "cancelled" {
		t.Errorf("email to a globally suppressed address: status %s, want cancelled", a.Status)
	}
	// Only an admin key removes it, and only with global=true.
	resp, body = b.do(t, http.MethodDelete, "/v1/suppression/g@example.com", manage, nil, nil)
	expectError(t, resp, body, http.StatusNotFound, "not_found", "")
	resp, body = b.do(t, http.MethodDelete, "/v1/suppression/g@example.com?global=true", manage, nil, nil)
	expectError(t, resp, body, http.StatusForbidden, "insufficient_scope", "")
	resp, body = b.do(t, http.MethodDelete, "/v1/suppression/g@example.com?global=true", master, nil, nil)
	expectStatus(t, resp, body, http.StatusNoContent)
	if n := b.count(t, `SELECT count(*) FROM suppression_list`); n != 0 {
		t.Errorf("%d entries left", n)
	}
}

func TestSuppressionImportExport(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "a", false)
	_, other := b.createApp(t, "b", false)
	b.do(t, http.MethodPost, "/v1/suppression", key, map[string]any{"email": "old@example.com"}, nil)

	csv := "Email,Reason,expires_at\n" +
		"one@example.com,hard_bounce,\n" + // 2
		"not-an-address,manual,\n" + // 3
		"two@example.com,nope,\n" + // 4
		"three@example.com,soft_bounce,2999-01-01T00:00:00Z\n" + // 5
		"four@example.com,manual,yesterday\n" + // 6
		"OLD@example.com,,\n" + // 7: already there
		"one@example.com,manual,\n" + // 8: repeated
		"\"unterminated,manual,\n" // 9
	resp, body := b.do(t, http.MethodPost, "/v1/suppression/import", key, csv, map[string]string{"Content-Type": "text/csv"})
	expectStatus(t, resp, body, http.StatusOK)
	type result struct {
		Imported int `json:"imported"`
		Skipped  int `json:"skipped"`
		Errors   []struct {
			Line    int    `json:"line"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	r := decode[result](t, body)
	var lines []int
	for _, e := range r.Errors {
		lines = append(lines, e.Line)
	}
	if r.Imported != 2 || r.Skipped != 2 || len(lines) != 4 || lines[0] != 3 || lines[1] != 4 || lines[2] != 6 || lines[3] != 9 {
		t.Errorf("csv import = %s, want 2 imported, 2 skipped, errors on lines 3 4 6 9", body)
	}

	nd := `{"email":"five@example.com","reason":"unsubscribe","global":true}` + "\n\n" +
		`{"email":"six@example.com"` + "\n" +
		`{"email":"bad address"}` + "\n" +
		`{"email":"three@example.com"}` + "\n"
	resp, body = b.do(t, http.MethodPost, "/v1/suppression/import", key, nd, map[string]string{"Content-Type": "application/x-ndjson"})
	expectStatus(t, resp, body, http.StatusOK)
	r = decode[result](t, body)
	if r.Imported != 1 || r.Skipped != 1 || len(r.Errors) != 2 || r.Errors[0].Line != 3 || r.Errors[1].Line != 4 {
		t.Errorf("ndjson import = %s, want 1 imported, 1 skipped, errors on lines 3 and 4", body)
	}
	if n := b.count(t, `SELECT count(*) FROM suppression_list WHERE app_id IS NULL`); n != 0 {
		t.Error("an import wrote to the global list")
	}

	resp, body = b.do(t, http.MethodPost, "/v1/suppression/import", key, "address\nx@example.com\n", map[string]string{"Content-Type": "text/csv"})
	expectError(t, resp, body, http.StatusUnprocessableEntity, "validation_failed", "")

	resp, body = b.do(t, http.MethodGet, "/v1/suppression/export", key, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-ndjson") {
		t.Errorf("export Content-Type = %q", ct)
	}
	var got []string
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		got = append(got, decode[suppressionOut](t, sc.Bytes()).Email)
	}
	want := []string{"old@example.com", "one@example.com", "three@example.com", "five@example.com"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("export = %v, want %v", got, want)
	}
	resp, body = b.do(t, http.MethodGet, "/v1/suppression/export", other, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	if len(body) != 0 {
		t.Errorf("another app's export: %s", body)
	}
}

type acceptedWithRecipients struct {
	ID         uuid.UUID `json:"id"`
	Status     string    `json:"status"`
	Recipients []struct {
		Email  string `json:"email"`
		Result string `json:"result"`
	} `json:"recipients"`
}

func TestCreateEmailDropsSuppressedRecipients(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "a", false)
	b.do(t, http.MethodPost, "/v1/suppression", key, map[string]any{"email": "gone@example.com", "reason": "unsubscribe"}, nil)

	resp, body := b.do(t, http.MethodPost, "/v1/emails", key, emailReq(func(m map[string]any) {
		m["to"] = []any{map[string]any{"email": "Gone@example.com"}, map[string]any{"email": "here@example.com"}}
		m["bcc"] = []any{map[string]any{"email": "gone@EXAMPLE.com"}}
	}), nil)
	expectStatus(t, resp, body, http.StatusAccepted)
	a := decode[acceptedWithRecipients](t, body)
	if a.Status != "queued" || len(a.Recipients) != 3 || a.Recipients[0].Result != "suppressed" ||
		a.Recipients[1].Result != "queued" || a.Recipients[2].Result != "suppressed" {
		t.Errorf("accepted = %s", body)
	}
	resp, body = b.do(t, http.MethodGet, "/v1/emails/"+a.ID.String(), key, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	e := decode[struct {
		To  []map[string]any `json:"to"`
		Bcc []map[string]any `json:"bcc"`
	}](t, body)
	if len(e.To) != 1 || e.To[0]["email"] != "here@example.com" || len(e.Bcc) != 0 {
		t.Errorf("stored to %v bcc %v, want only here@example.com", e.To, e.Bcc)
	}

	resp, body = b.do(t, http.MethodPost, "/v1/emails", key, emailReq(func(m map[string]any) {
		m["to"] = []any{map[string]any{"email": "gone@example.com"}}
	}), nil)
	expectStatus(t, resp, body, http.StatusAccepted)
	a = decode[acceptedWithRecipients](t, body)
	if a.Status != "cancelled" || len(a.Recipients) != 1 || a.Recipients[0].Result != "suppressed" {
		t.Errorf("all suppressed: %s", body)
	}
	if n := b.count(t, `SELECT count(*) FROM emails WHERE id = $1 AND status = 'cancelled' AND job_id IS NULL`, a.ID); n != 1 {
		t.Error("the all-suppressed email is not stored cancelled without a job")
	}
	if n := b.count(t, `SELECT count(*) FROM river_job WHERE args->>'email_id' = $1`, a.ID.String()); n != 0 {
		t.Error("a send job was enqueued for an all-suppressed email")
	}
	resp, body = b.do(t, http.MethodGet, "/v1/emails/"+a.ID.String()+"/events", key, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	if !strings.Contains(string(body), `"suppressed"`) || !strings.Contains(string(body), `"unsubscribe"`) {
		t.Errorf("events = %s, want a suppressed event naming the reason", body)
	}
}

func TestUnsubscribeOneClick(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appID, key := b.createApp(t, "a", false)
	a := b.send(t, key, emailReq(func(m map[string]any) { m["to"] = []any{map[string]any{"email": "Reader@example.com"}} }))
	u := mail.NewUnsubscribe(cfg.PublicURL, cfg.InboundMailDomain(), cfg.EncryptionKeyBytes(), cfg.PreviousEncryptionKeys()...)
	token := u.Token(a.ID, "reader@example.com")
	form := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}

	// Viewing the page changes nothing.
	resp, body := b.do(t, http.MethodGet, "/u/"+token, "", nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") || !strings.Contains(string(body), `method="post"`) {
		t.Errorf("page: Content-Type %q body %s", ct, body)
	}
	if n := b.count(t, `SELECT count(*) FROM suppression_list`); n != 0 {
		t.Error("viewing the unsubscribe page suppressed the address")
	}

	for range 2 { // idempotent
		resp, body = b.do(t, http.MethodPost, "/u/"+token, "", "List-Unsubscribe=One-Click", form)
		expectStatus(t, resp, body, http.StatusOK)
	}
	if n := b.count(t, `SELECT count(*) FROM suppression_list WHERE app_id = $1 AND email_address = 'reader@example.com'
		AND reason = 'unsubscribe' AND source_email_id = $2 AND expires_at IS NULL`, appID, a.ID); n != 1 {
		t.Errorf("%d unsubscribe entries, want 1", n)
	}
	if n := b.count(t, `SELECT count(*) FROM email_events WHERE email_id = $1 AND event_type = 'unsubscribed'
		AND event_data->>'method' = 'one_click'`, a.ID); n != 1 {
		t.Errorf("%d unsubscribed events, want 1", n)
	}
	again := b.send(t, key, emailReq(func(m map[string]any) { m["to"] = []any{map[string]any{"email": "reader@example.com"}} }))
	if again.Status != "cancelled" {
		t.Errorf("email after unsubscribing: status %s, want cancelled", again.Status)
	}

	tampered := []byte(token)
	tampered[len(tampered)-1] ^= 1
	if tampered[len(tampered)-1] == token[len(token)-1] || !strings.ContainsRune("abcdefghijklmnopqrstuvwxyz234567", rune(tampered[len(tampered)-1])) {
		tampered[len(tampered)-1] = 'a' + (token[len(token)-1]-'a'+1)%26
	}
	other := u.Token(a.ID, "someone-else@example.com")
	for _, bad := range []string{string(tampered), other, "not-a-token", u.Token(uuid.Must(uuid.NewV7()), "reader@example.com")} {
		resp, body = b.do(t, http.MethodPost, "/u/"+bad, "", "List-Unsubscribe=One-Click", form)
		expectError(t, resp, body, http.StatusNotFound, "not_found", "")
		resp, body = b.do(t, http.MethodGet, "/u/"+bad, "", nil, nil)
		expectError(t, resp, body, http.StatusNotFound, "not_found", "")
	}
}
