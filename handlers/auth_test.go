package handlers_test

import (
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestAuthRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, _ = b.createApp(t, "app", false)

	for _, tc := range []struct {
		name    string
		headers map[string]string
	}{
		{"no Authorization", nil},
		{"empty bearer", map[string]string{"Authorization": "Bearer "}},
		{"basic instead of bearer", map[string]string{"Authorization": "Basic dXNlcjpwYXNz"}},
		{"unknown live key", map[string]string{"Authorization": "Bearer mq_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}},
		{"unknown test key", map[string]string{"Authorization": "Bearer mq_test_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}},
		{"not a Mail Queue key", map[string]string{"Authorization": "Bearer sk_live_abcdef"}},
		{"admin secret instead of key", map[string]string{"Authorization": "Bearer " + adminSecret}},
	} {
		resp, body := b.do(t, http.MethodPost, "/v1/emails", "", emailReq(nil), tc.headers)
		t.Run(tc.name, func(t *testing.T) {
			expectError(t, resp, body, http.StatusUnauthorized, "unauthorized", noField)
		})
	}
	if n := b.count(t, "SELECT count(*) FROM emails"); n != 0 {
		t.Errorf("emails = %d after refused requests", n)
	}
}

func TestAuthRevokedKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "app", false)
	b.send(t, key, emailReq(nil)) // the key is now cached

	b.exec(t, "UPDATE api_keys SET is_active = false")
	deadline := time.Now().Add(2 * time.Second)
	for {
		resp, body := b.do(t, http.MethodGet, "/v1/emails", key, nil, nil)
		if resp.StatusCode == http.StatusUnauthorized {
			expectError(t, resp, body, http.StatusUnauthorized, "unauthorized", "")
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revoked key still answers %d after 2s", resp.StatusCode)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestAuthExpiredKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appID, _ := b.createApp(t, "app", false)
	past := time.Now().Add(-time.Minute)
	key := b.insertKey(t, appID, []string{"admin"}, nil, &past)
	resp, body := b.do(t, http.MethodPost, "/v1/emails", key, emailReq(nil), nil)
	expectError(t, resp, body, http.StatusUnauthorized, "unauthorized", "")

	future := time.Now().Add(time.Hour)
	key = b.insertKey(t, appID, []string{"admin"}, nil, &future)
	b.send(t, key, emailReq(nil))

	// A rotated key stops at the end of its grace period.
	_, rotated := b.createApp(t, "other", false)
	b.exec(t, "UPDATE api_keys SET grace_expires_at = now() - interval '1 second'")
	resp, body = b.do(t, http.MethodGet, "/v1/emails", rotated, nil, nil)
	expectError(t, resp, body, http.StatusUnauthorized, "unauthorized", "")
}

func TestAuthInactiveApp(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appID, key := b.createApp(t, "app", false)
	b.exec(t, "UPDATE apps SET is_active = false WHERE id = $1", appID)
	resp, body := b.do(t, http.MethodPost, "/v1/emails", key, emailReq(nil), nil)
	expectError(t, resp, body, http.StatusForbidden, "app_inactive", "")
	if n := b.count(t, "SELECT count(*) FROM emails"); n != 0 {
		t.Errorf("emails = %d", n)
	}
}

func TestAuthScopes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appID, master := b.createApp(t, "app", false)
	e := b.send(t, master, emailReq(nil))

	readOnly := b.insertKey(t, appID, []string{"email:read"}, nil, nil)
	resp, body := b.do(t, http.MethodPost, "/v1/emails", readOnly, emailReq(nil), nil)
	expectError(t, resp, body, http.StatusForbidden, "insufficient_scope", "")
	resp, body = b.do(t, http.MethodPost, "/v1/queues", readOnly, map[string]any{"name": "q"}, nil)
	expectError(t, resp, body, http.StatusForbidden, "insufficient_scope", "")
	resp, body = b.do(t, http.MethodGet, "/v1/emails/"+e.ID.String(), readOnly, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	resp, body = b.do(t, http.MethodGet, "/v1/emails", readOnly, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)

	sendOnly := b.insertKey(t, appID, []string{"email:send"}, nil, nil)
	b.send(t, sendOnly, emailReq(nil))
	resp, body = b.do(t, http.MethodGet, "/v1/emails/"+e.ID.String(), sendOnly, nil, nil)
	expectError(t, resp, body, http.StatusForbidden, "insufficient_scope", "")

	none := b.insertKey(t, appID, []string{}, nil, nil)
	resp, body = b.do(t, http.MethodGet, "/v1/emails", none, nil, nil)
	expectError(t, resp, body, http.StatusForbidden, "insufficient_scope", "")

	admin := b.insertKey(t, appID, []string{"admin"}, nil, nil)
	b.send(t, admin, emailReq(nil))
	resp, body = b.do(t, http.MethodGet, "/v1/emails/"+e.ID.String(), admin, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	resp, body = b.do(t, http.MethodPost, "/v1/queues", admin, map[string]any{"name": "by-admin"}, nil)
	expectStatus(t, resp, body, http.StatusCreated)
	resp, body = b.do(t, http.MethodGet, "/v1/analytics/overview", admin, nil, nil)
	expectError(t, resp, body, http.StatusNotImplemented, "not_implemented", "")

	// An app's admin-scoped key is still no admin secret.
	resp, body = b.do(t, http.MethodPost, "/v1/apps", admin, map[string]any{"name": "x"}, nil)
	expectError(t, resp, body, http.StatusUnauthorized, "unauthorized", "")

	if n := b.count(t, "SELECT count(*) FROM emails"); n != 3 {
		t.Errorf("emails = %d, want 3", n)
	}
}

func TestAuthIPAllowlist(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appID, _ := b.createApp(t, "app", false)

	elsewhere := b.insertKey(t, appID, []string{"admin"}, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, nil)
	resp, body := b.do(t, http.MethodPost, "/v1/emails", elsewhere, emailReq(nil), nil)
	expectError(t, resp, body, http.StatusForbidden, "ip_not_allowed", "")
	// A spoofed forwarding header does not get around it.
	resp, body = b.do(t, http.MethodPost, "/v1/emails", elsewhere, emailReq(nil),
		map[string]string{"X-Forwarded-For": "10.1.2.3", "X-Real-Ip": "10.1.2.3"})
	expectError(t, resp, body, http.StatusForbidden, "ip_not_allowed", "")

	local := b.insertKey(t, appID, []string{"admin"}, []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32"),
	}, nil)
	b.send(t, local, emailReq(nil))
	if n := b.count(t, "SELECT count(*) FROM emails"); n != 1 {
		t.Errorf("emails = %d, want 1", n)
	}
}

func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, keyA := b.createApp(t, "A", false)
	_, keyB := b.createApp(t, "B", false)

	resp, body := b.do(t, http.MethodPost, "/v1/queues", keyA, map[string]any{"name": "only-a"}, nil)
	expectStatus(t, resp, body, http.StatusCreated)
	qA := decode[queueJSON](t, body)
	eA := b.send(t, keyA, emailReq(func(m map[string]any) { m["queue"] = "only-a" }))
	eB := b.send(t, keyB, emailReq(nil))

	for _, path := range []string{
		"/v1/emails/" + eA.ID.String(),
		"/v1/emails/" + eA.ID.String() + "/events",
		"/v1/queues/" + qA.ID.String(),
	} {
		resp, body := b.do(t, http.MethodGet, path, keyB, nil, nil)
		expectError(t, resp, body, http.StatusNotFound, "not_found", "")
		resp, body = b.do(t, http.MethodGet, path, keyA, nil, nil)
		expectStatus(t, resp, body, http.StatusOK)
	}

	for _, query := range []string{"", "?queue=only-a", "?status=queued"} {
		resp, body := b.do(t, http.MethodGet, "/v1/emails"+query, keyB, nil, nil)
		expectStatus(t, resp, body, http.StatusOK)
		list := decode[emailList](t, body)
		for _, e := range list.Data {
			if e.ID != eB.ID {
				t.Errorf("B's list%s shows email %s", query, e.ID)
			}
		}
	}

	resp, body = b.do(t, http.MethodPost, "/v1/emails", keyB, emailReq(func(m map[string]any) { m["queue"] = "only-a" }), nil)
	expectError(t, resp, body, http.StatusUnprocessableEntity, "validation_failed", "queue")
	if n := b.count(t, "SELECT count(*) FROM emails WHERE queue_id = $1", qA.ID); n != 1 {
		t.Errorf("emails in A's queue = %d, want 1", n)
	}
}

// TestAuthDatabaseDownIsNot401 checks that a key lookup that cannot reach
// PostgreSQL answers 500 internal_error, not 401: a valid key must never be
// told it is wrong because of our outage.
func TestAuthDatabaseDownIsNot401(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.pool.Close()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, b.srv.URL+"/v1/emails", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer mq_live_"+strings.Repeat("a", 40))
	resp, err := b.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(string(body), `"internal_error"`) {
		t.Errorf("key lookup with the database down: %d %s, want 500 internal_error", resp.StatusCode, body)
	}
}
