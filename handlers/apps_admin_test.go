package handlers_test

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/oas"
)

// appJSON is the App schema as a client sees it.
type appJSON struct {
	ID           uuid.UUID `json:"id"`
	Name         string    `json:"name"`
	Description  *string   `json:"description"`
	IsActive     bool      `json:"is_active"`
	SandboxMode  bool      `json:"sandbox_mode"`
	WebhookURL   *string   `json:"webhook_url"`
	DailyLimit   *int      `json:"daily_limit"`
	MonthlyLimit *int      `json:"monthly_limit"`
	Settings     struct {
		RateLimit     *int `json:"rate_limit"`
		MaxPriority   *int `json:"max_priority"`
		RetentionDays *int `json:"retention_days"`
	} `json:"settings"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

type appListJSON struct {
	Data    []appJSON `json:"data"`
	Cursor  *string   `json:"cursor"`
	HasMore bool      `json:"has_more"`
}

// patchApp sends PATCH /v1/apps/{id} with the admin secret and expects 200.
func (b *bundle) patchApp(t *testing.T, id uuid.UUID, body any) appJSON {
	t.Helper()
	resp, out := b.do(t, http.MethodPatch, "/v1/apps/"+id.String(), adminSecret, body, nil)
	expectStatus(t, resp, out, http.StatusOK)
	return decode[appJSON](t, out)
}

func TestListApps(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var want []uuid.UUID
	for _, name := range []string{"A", "B", "C", "D", "E"} {
		id, _ := b.createApp(t, name, false)
		want = append(want, id)
	}
	slices.Reverse(want) // newest first

	var got []uuid.UUID
	cursor := ""
	for page := 0; ; page++ {
		if page > 5 {
			t.Fatal("pagination does not end")
		}
		q := url.Values{"limit": {"2"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		resp, body := b.do(t, http.MethodGet, "/v1/apps?"+q.Encode(), adminSecret, nil, nil)
		expectStatus(t, resp, body, http.StatusOK)
		l := decode[appListJSON](t, body)
		for _, a := range l.Data {
			got = append(got, a.ID)
		}
		if wantMore := page < 2; l.HasMore != wantMore || (l.Cursor != nil) != wantMore {
			t.Errorf("page %d: has_more=%v cursor=%v, want has_more=%v", page, l.HasMore, l.Cursor, wantMore)
		}
		if !l.HasMore || l.Cursor == nil {
			break
		}
		cursor = *l.Cursor
	}
	if !slices.Equal(got, want) {
		t.Errorf("paged ids\n%v\nwant newest first\n%v", got, want)
	}

	l := decode[appListJSON](t, must(b.do(t, http.MethodGet, "/v1/apps", adminSecret, nil, nil)))
	if len(l.Data) != 5 || l.HasMore || l.Cursor != nil {
		t.Errorf("default page: %d apps, has_more %v", len(l.Data), l.HasMore)
	}
	for _, q := range []string{"limit=0", "limit=101", "cursor=garbage"} {
		resp, body := b.do(t, http.MethodGet, "/v1/apps?"+q, adminSecret, nil, nil)
		expectError(t, resp, body, http.StatusBadRequest, "", "")
	}
}

func TestAppAdminAuth(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id, key := b.createApp(t, "app", false)
	path := "/v1/apps/" + id.String()
	for _, token := range []string{"", key, "wrong-secret"} {
		for _, r := range []struct {
			method, path string
			body         any
		}{
			{http.MethodGet, "/v1/apps", nil},
			{http.MethodGet, path, nil},
			{http.MethodPatch, path, map[string]any{"name": "x"}},
			{http.MethodDelete, path, nil},
		} {
			resp, body := b.do(t, r.method, r.path, token, r.body, nil)
			expectError(t, resp, body, http.StatusUnauthorized, "unauthorized", "")
		}
	}
	a := decode[appJSON](t, must(b.do(t, http.MethodGet, path, adminSecret, nil, nil)))
	if a.Name != "app" || !a.IsActive {
		t.Errorf("app changed by refused requests: %+v", a)
	}

	// An unknown app is a 404 everywhere.
	unknown := "/v1/apps/" + uuid.Must(uuid.NewV7()).String()
	for _, m := range []string{http.MethodGet, http.MethodPatch, http.MethodDelete} {
		var body any
		if m == http.MethodPatch {
			body = map[string]any{"name": "x"}
		}
		resp, out := b.do(t, m, unknown, adminSecret, body, nil)
		expectError(t, resp, out, http.StatusNotFound, "not_found", "")
	}
	resp, out := b.do(t, http.MethodGet, "/v1/apps/not-a-uuid", adminSecret, nil, nil)
	expectError(t, resp, out, http.StatusBadRequest, "", "appId")
}

func TestUpdateApp(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id, _ := b.createApp(t, "app", false)
	orig := decode[appJSON](t, must(b.do(t, http.MethodGet, "/v1/apps/"+id.String(), adminSecret, nil, nil)))

	a := b.patchApp(t, id, map[string]any{
		"name": "  Renamed ", "description": "desc", "sandbox_mode": true,
		"webhook_url": "https://hooks.example.com/mq", "daily_limit": 100, "monthly_limit": 2000,
		"settings": map[string]any{"rate_limit": 60, "max_priority": 8},
		// Not in the request schema: must not be applied.
		"id": uuid.Must(uuid.NewV7()), "created_at": "2001-01-01T00:00:00Z",
	})
	if a.ID != id || a.Name != "Renamed" || a.Description == nil || *a.Description != "desc" ||
		!a.SandboxMode || !a.IsActive || a.WebhookURL == nil || *a.WebhookURL != "https://hooks.example.com/mq" ||
		a.DailyLimit == nil || *a.DailyLimit != 100 || a.MonthlyLimit == nil || *a.MonthlyLimit != 2000 ||
		a.Settings.RateLimit == nil || *a.Settings.RateLimit != 60 || a.Settings.MaxPriority == nil ||
		*a.Settings.MaxPriority != 8 || a.Settings.RetentionDays != nil {
		t.Errorf("after full update: %+v", a)
	}
	if !a.CreatedAt.Equal(orig.CreatedAt) || a.UpdatedAt.Before(orig.UpdatedAt) {
		t.Errorf("created_at %v→%v, updated_at %v→%v", orig.CreatedAt, a.CreatedAt, orig.UpdatedAt, a.UpdatedAt)
	}
	if got := decode[appJSON](t, must(b.do(t, http.MethodGet, "/v1/apps/"+id.String(), adminSecret, nil, nil))); got.Name != "Renamed" || got.DailyLimit == nil {
		t.Errorf("GET after update: %+v", got)
	}

	// Only the fields present change.
	a = b.patchApp(t, id, map[string]any{"description": "d2"})
	if a.Name != "Renamed" || *a.Description != "d2" || !a.SandboxMode || a.DailyLimit == nil ||
		*a.DailyLimit != 100 || a.WebhookURL == nil || a.Settings.RateLimit == nil {
		t.Errorf("after partial update: %+v", a)
	}
	a = b.patchApp(t, id, map[string]any{})
	if a.Name != "Renamed" || *a.Description != "d2" || a.MonthlyLimit == nil {
		t.Errorf("after empty update: %+v", a)
	}

	// null clears the webhook and lifts the limits; settings replaces as a whole.
	a = b.patchApp(t, id, map[string]any{
		"webhook_url": nil, "daily_limit": nil, "monthly_limit": nil,
		"settings": map[string]any{"retention_days": 30},
	})
	if a.WebhookURL != nil || a.DailyLimit != nil || a.MonthlyLimit != nil ||
		a.Settings.RateLimit != nil || a.Settings.RetentionDays == nil || *a.Settings.RetentionDays != 30 {
		t.Errorf("after clearing: %+v", a)
	}
	if n := b.count(t, "SELECT count(*) FROM apps WHERE id = $1 AND webhook_url IS NULL AND daily_limit IS NULL AND monthly_limit IS NULL", id); n != 1 {
		t.Errorf("database row not cleared")
	}

	before := b.count(t, "SELECT count(*) FROM audit_logs WHERE action = 'app.update'")
	for _, tc := range []struct {
		name        string
		body        any
		status      int
		code, field string
	}{
		{"blank name", map[string]any{"name": "  "}, 422, "validation_failed", "name"},
		{"empty name", map[string]any{"name": ""}, 400, "", "name"},
		{"null name", map[string]any{"name": nil}, 400, "", ""},
		{"control char", map[string]any{"name": "a\nb"}, 422, "validation_failed", "name"},
		{"long name", map[string]any{"name": strings.Repeat("n", 201)}, 400, "", "name"},
		{"daily_limit 0", map[string]any{"daily_limit": 0}, 400, "", "daily_limit"},
		{"monthly_limit -1", map[string]any{"monthly_limit": -1}, 400, "", "monthly_limit"},
		{"daily_limit too big", map[string]any{"daily_limit": int64(1) << 40}, 422, "validation_failed", "daily_limit"},
		{"ftp webhook", map[string]any{"webhook_url": "ftp://example.com/"}, 422, "validation_failed", "webhook_url"},
		{"relative webhook", map[string]any{"webhook_url": "/hook"}, 422, "validation_failed", "webhook_url"},
		{"long webhook", map[string]any{"webhook_url": "https://example.com/" + strings.Repeat("a", 2050)}, 422, "validation_failed", "webhook_url"},
		{"bad settings", map[string]any{"settings": map[string]any{"max_priority": 11}}, 400, "", ""},
		{"is_active string", map[string]any{"is_active": "yes"}, 400, "invalid_request", ""},
		{"not an object", `[]`, 400, "invalid_request", ""},
		{"missing body", nil, 400, "invalid_request", ""},
	} {
		resp, body := b.do(t, http.MethodPatch, "/v1/apps/"+id.String(), adminSecret, tc.body, nil)
		t.Run(tc.name, func(t *testing.T) {
			expectError(t, resp, body, tc.status, tc.code, tc.field)
		})
	}
	if n := b.count(t, "SELECT count(*) FROM audit_logs WHERE action = 'app.update'"); n != before {
		t.Errorf("refused updates were audited: %d entries, want %d", n, before)
	}
	if got := decode[appJSON](t, must(b.do(t, http.MethodGet, "/v1/apps/"+id.String(), adminSecret, nil, nil))); got.Name != "Renamed" {
		t.Errorf("refused update changed the app: %+v", got)
	}
}

func TestDeactivateApp(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id, key := b.createApp(t, "app", false)
	_, otherKey := b.createApp(t, "other", false)
	b.send(t, key, emailReq(nil)) // warms the key cache

	resp, body := b.do(t, http.MethodDelete, "/v1/apps/"+id.String(), adminSecret, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	deactivatedAt := time.Now()
	if a := decode[appJSON](t, body); a.ID != id || a.IsActive {
		t.Errorf("deactivated app: %+v", a)
	}

	// The key is refused once the one-second key cache forgets it.
	waitStatus(t, b, key, http.StatusForbidden, deactivatedAt, 1200*time.Millisecond)
	resp, body = b.do(t, http.MethodPost, "/v1/emails", key, emailReq(nil), nil)
	expectError(t, resp, body, http.StatusForbidden, "app_inactive", noField)
	if !strings.Contains(string(body), "deactivated") {
		t.Errorf("message does not say the app is deactivated: %s", body)
	}
	// Other tenants are unaffected; the data is kept.
	b.send(t, otherKey, emailReq(nil))
	if n := b.count(t, "SELECT count(*) FROM emails WHERE app_id = $1", id); n != 1 {
		t.Errorf("emails of the deactivated app = %d, want 1 (kept)", n)
	}

	// Idempotent: again 200, nothing more recorded.
	resp, body = b.do(t, http.MethodDelete, "/v1/apps/"+id.String(), adminSecret, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	if a := decode[appJSON](t, body); a.IsActive {
		t.Errorf("second deactivation: %+v", a)
	}
	if n := b.count(t, "SELECT count(*) FROM audit_logs WHERE action = 'app.deactivate' AND resource_id = $1", id); n != 1 {
		t.Errorf("app.deactivate entries = %d, want 1", n)
	}

	// Reactivation restores access.
	if a := b.patchApp(t, id, map[string]any{"is_active": true}); !a.IsActive {
		t.Errorf("reactivated app: %+v", a)
	}
	waitStatus(t, b, key, http.StatusOK, time.Now(), 1200*time.Millisecond)
	b.send(t, key, emailReq(nil))
}

// waitStatus lists emails with key until the API answers status, and fails
// if that takes longer than within after since.
func waitStatus(t *testing.T, b *bundle, key string, status int, since time.Time, within time.Duration) {
	t.Helper()
	for {
		resp, body := b.do(t, http.MethodGet, "/v1/emails", key, nil, nil)
		if resp.StatusCode == status {
			if took := time.Since(since); took > within {
				t.Errorf("status %d after %v, want within %v", status, took, within)
			}
			return
		}
		if time.Since(since) > 3*within {
			t.Fatalf("still %d after %v, want %d: %s", resp.StatusCode, time.Since(since), status, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestAppAdminGeneratedClient(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.oasClient(t, "")
	created, err := c.CreateApp(t.Context(), &oas.AppCreate{Name: "typed"}, oas.CreateAppParams{})
	if err != nil {
		t.Fatal(err)
	}
	id := created.App.ID
	up, err := c.UpdateApp(t.Context(), &oas.AppUpdate{
		DailyLimit:   oas.NewOptNilInt(5),
		MonthlyLimit: oas.OptNilInt{Set: true, Null: true},
	}, oas.UpdateAppParams{AppId: id})
	if err != nil {
		t.Fatal(err)
	}
	if up.DailyLimit.Or(0) != 5 || up.MonthlyLimit.Set {
		t.Errorf("updated: %+v", up)
	}
	got, err := c.GetApp(t.Context(), oas.GetAppParams{AppId: id})
	if err != nil || got.DailyLimit.Or(0) != 5 {
		t.Fatalf("GetApp: %+v, %v", got, err)
	}
	list, err := c.ListApps(t.Context(), oas.ListAppsParams{Limit: oas.NewOptInt(10)})
	if err != nil || len(list.Data) != 1 || list.Data[0].ID != id {
		t.Fatalf("ListApps: %+v, %v", list, err)
	}
	off, err := c.DeactivateApp(t.Context(), oas.DeactivateAppParams{AppId: id})
	if err != nil || off.IsActive {
		t.Fatalf("DeactivateApp: %+v, %v", off, err)
	}
	_, err = c.GetApp(t.Context(), oas.GetAppParams{AppId: uuid.Must(uuid.NewV7())})
	if status, e := oasStatus(t, err); status != http.StatusNotFound || e.Code != "not_found" {
		t.Errorf("unknown app: %d %+v", status, e)
	}
}

// TestCreateAppLimits checks values the database cannot hold are refused
// as input errors, never as server errors.
func TestCreateAppLimits(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, tc := range []struct {
		name  string
		body  map[string]any
		field string
	}{
		{"daily_limit beyond 32 bits", map[string]any{"name": "x", "daily_limit": int64(1) << 31}, "daily_limit"},
		{"monthly_limit beyond 32 bits", map[string]any{"name": "x", "monthly_limit": int64(1) << 40}, "monthly_limit"},
		{"long webhook", map[string]any{"name": "x", "webhook_url": "https://example.com/" + strings.Repeat("a", 2030)}, "webhook_url"},
	} {
		resp, body := b.do(t, http.MethodPost, "/v1/apps", adminSecret, tc.body, nil)
		t.Run(tc.name, func(t *testing.T) {
			expectError(t, resp, body, http.StatusUnprocessableEntity, "validation_failed", tc.field)
		})
	}
	if n := b.count(t, "SELECT count(*) FROM apps"); n != 0 {
		t.Errorf("apps = %d after refused requests", n)
	}
	id, _ := b.createAppWith(t, map[string]any{"name": "max", "daily_limit": 1<<31 - 1})
	a := decode[appJSON](t, must(b.do(t, http.MethodGet, "/v1/apps/"+id.String(), adminSecret, nil, nil)))
	if a.DailyLimit == nil || *a.DailyLimit != 1<<31-1 {
		t.Errorf("daily_limit = %v", a.DailyLimit)
	}
}
