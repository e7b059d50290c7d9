package handlers_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

func TestHealth(t *testing.T) {
	t.Parallel()
	b := setup(t)

	resp, body := b.do(t, http.MethodGet, "/v1/health", "", nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	if h := decode[map[string]any](t, body); h["status"] != "ok" {
		t.Errorf("health = %s", body)
	}

	_, key := b.createApp(t, "app", false)
	b.send(t, key, emailReq(nil))
	resp, body = b.do(t, http.MethodGet, "/v1/health/detailed", "", nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	var d struct {
		Status string `json:"status"`
		Checks struct {
			Postgresql struct{ Status string } `json:"postgresql"`
			Redis      struct{ Status string } `json:"redis"`
		} `json:"checks"`
		Queues struct {
			TotalPending int `json:"total_pending"`
		} `json:"queues"`
		Version string `json:"version"`
	}
	if err := json.Unmarshal(body, &d); err != nil {
		t.Fatal(err)
	}
	if d.Status != "healthy" || d.Checks.Postgresql.Status != "healthy" || d.Checks.Redis.Status != "healthy" ||
		d.Queues.TotalPending != 1 || d.Version != "test" {
		t.Errorf("detailed = %s", body)
	}

	resp, body = b.do(t, http.MethodGet, "/v1/info", "", nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	if i := decode[map[string]any](t, body); i["name"] != "mailqueue" || i["api_version"] != "v1" {
		t.Errorf("info = %s", body)
	}
}

func TestRequestID(t *testing.T) {
	t.Parallel()
	b := setup(t)
	resp, body := b.do(t, http.MethodGet, "/v1/health", "", nil, map[string]string{"X-Request-Id": "client-req-0001"})
	expectStatus(t, resp, body, http.StatusOK)
	if got := resp.Header.Get("X-Request-Id"); got != "client-req-0001" {
		t.Errorf("X-Request-Id = %q, want the client's", got)
	}
	resp, body = b.do(t, http.MethodGet, "/v1/emails", "", nil, map[string]string{"X-Request-Id": "bad id\twith spaces"})
	expectError(t, resp, body, http.StatusUnauthorized, "unauthorized", "")
	if got := resp.Header.Get("X-Request-Id"); strings.Contains(got, " ") {
		t.Errorf("unsafe X-Request-Id echoed: %q", got)
	}
}

func TestNotImplemented(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "app", false)
	for _, tc := range []struct{ method, path string }{
		{http.MethodGet, "/v1/analytics/overview"},
		{http.MethodGet, "/v1/webhooks/logs"},
	} {
		resp, body := b.do(t, tc.method, tc.path, key, nil, nil)
		t.Run(tc.method+" "+tc.path+" with key", func(t *testing.T) {
			expectError(t, resp, body, http.StatusNotImplemented, "not_implemented", "")
		})
		resp, body = b.do(t, tc.method, tc.path, "", nil, nil)
		t.Run(tc.method+" "+tc.path+" without key", func(t *testing.T) {
			expectError(t, resp, body, http.StatusUnauthorized, "unauthorized", "")
		})
	}
	// An API key is not the admin secret, whatever its scopes.
	resp, body := b.do(t, http.MethodGet, "/v1/apps", key, nil, nil)
	expectError(t, resp, body, http.StatusUnauthorized, "unauthorized", "")
}

func TestBodyTooLarge(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "app", false)
	req := emailReq(func(m map[string]any) { m["html"] = strings.Repeat("x", 2<<20) })
	resp, body := b.do(t, http.MethodPost, "/v1/emails", key, req, nil)
	expectError(t, resp, body, http.StatusRequestEntityTooLarge, "payload_too_large", "")
	resp, body = b.do(t, http.MethodPost, "/v1/apps", adminSecret, map[string]any{"name": "x", "description": strings.Repeat("d", 2<<20)}, nil)
	expectError(t, resp, body, http.StatusRequestEntityTooLarge, "payload_too_large", "")
	if n := b.count(t, "SELECT count(*) FROM emails"); n != 0 {
		t.Errorf("emails = %d", n)
	}
	// Just under the limit is fine.
	req = emailReq(func(m map[string]any) { m["html"] = strings.Repeat("x", 1<<20-1024) })
	b.send(t, key, req)
}

func TestUnknownRoutes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, path := range []string{"/v1/nope", "/v2/emails", "/", "/v1/emails/x/y/z"} {
		resp, body := b.do(t, http.MethodGet, path, "", nil, nil)
		expectError(t, resp, body, http.StatusNotFound, "route_not_found", "")
	}
	resp, body := b.do(t, http.MethodPut, "/v1/emails", "", `{}`, nil)
	expectError(t, resp, body, http.StatusMethodNotAllowed, "method_not_allowed", "")
	if allow := resp.Header.Get("Allow"); !strings.Contains(allow, "GET") || !strings.Contains(allow, "POST") {
		t.Errorf("Allow = %q", allow)
	}
	resp, body = b.do(t, http.MethodPatch, "/v1/health", "", nil, nil)
	expectError(t, resp, body, http.StatusMethodNotAllowed, "method_not_allowed", "")
}

func TestRiverUI(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "app", false)
	b.send(t, key, emailReq(nil))

	for _, tc := range []struct {
		name    string
		headers map[string]string
	}{
		{"none", nil},
		{"wrong bearer", map[string]string{"Authorization": "Bearer wrong"}},
		{"api key", map[string]string{"Authorization": "Bearer " + key}},
		{"wrong basic", map[string]string{"Authorization": "Basic dXNlcjp3cm9uZw=="}},
	} {
		for _, path := range []string{"/riverui/", "/riverui/api/jobs?state=available"} {
			resp, body := b.do(t, http.MethodGet, path, "", nil, tc.headers)
			t.Run(tc.name+" "+path, func(t *testing.T) {
				expectError(t, resp, body, http.StatusUnauthorized, "unauthorized", "")
				if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
					t.Errorf("WWW-Authenticate = %q", resp.Header.Get("WWW-Authenticate"))
				}
			})
		}
	}

	resp, body := b.do(t, http.MethodGet, "/riverui/", adminSecret, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(body), "<html") {
		t.Errorf("River UI: %s %.200s", resp.Header.Get("Content-Type"), body)
	}

	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, b.srv.URL+"/riverui/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("anyone", adminSecret)
	r, err := b.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = r.Body.Close()
	if r.StatusCode != http.StatusOK {
		t.Errorf("basic auth: %d", r.StatusCode)
	}

	resp, body = b.do(t, http.MethodGet, "/riverui/api/jobs?state=available", adminSecret, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	var jobs struct {
		Data []struct {
			Kind  string `json:"kind"`
			Queue string `json:"queue"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &jobs); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if len(jobs.Data) != 1 || jobs.Data[0].Kind != "send_email" || jobs.Data[0].Queue != "normal" {
		t.Errorf("jobs = %s", body)
	}

	// /riverui redirects to /riverui/ without needing auth, and leaks nothing.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer noRedirect.CloseIdleConnections()
	r, err = noRedirect.Get(b.srv.URL + "/riverui")
	if err != nil {
		t.Fatal(err)
	}
	_ = r.Body.Close()
	if r.StatusCode != http.StatusMovedPermanently || r.Header.Get("Location") != "/riverui/" {
		t.Errorf("/riverui: %d %q", r.StatusCode, r.Header.Get("Location"))
	}
}
