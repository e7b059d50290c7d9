package handlers_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mailqueue/mailqueue/oas"
)

type auditLogJSON struct {
	ID           uuid.UUID                  `json:"id"`
	ActorType    string                     `json:"actor_type"`
	ActorID      *uuid.UUID                 `json:"actor_id"`
	Action       string                     `json:"action"`
	ResourceType string                     `json:"resource_type"`
	ResourceID   *uuid.UUID                 `json:"resource_id"`
	Changes      map[string]json.RawMessage `json:"changes"`
	IPAddress    *string                    `json:"ip_address"`
	UserAgent    *string                    `json:"user_agent"`
	RequestID    *string                    `json:"request_id"`
	CreatedAt    time.Time                  `json:"created_at"`
}

type auditLogListJSON struct {
	Data    []auditLogJSON `json:"data"`
	Cursor  *string        `json:"cursor"`
	HasMore bool           `json:"has_more"`
}

// auditLogs lists the audit log with the admin secret and query q.
func (b *bundle) auditLogs(t *testing.T, q url.Values) auditLogListJSON {
	t.Helper()
	resp, body := b.do(t, http.MethodGet, "/v1/audit-logs?"+q.Encode(), adminSecret, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	return decode[auditLogListJSON](t, body)
}

func TestAuditLog(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const ua = "audit-test/1.0"
	hdr := map[string]string{"User-Agent": ua}

	resp, body := b.do(t, http.MethodPost, "/v1/apps", adminSecret,
		map[string]any{"name": "audited", "daily_limit": 10}, hdr)
	expectStatus(t, resp, body, http.StatusCreated)
	created := decode[appCreated](t, body)
	appID, key := created.App.ID, created.APIKey.Key
	createRID := resp.Header.Get("X-Request-Id")

	resp, body = b.do(t, http.MethodPost, "/v1/queues", key, map[string]any{"name": "news"}, hdr)
	expectStatus(t, resp, body, http.StatusCreated)
	queueID := decode[struct {
		ID uuid.UUID `json:"id"`
	}](t, body).ID
	queueRID := resp.Header.Get("X-Request-Id")

	resp, body = b.do(t, http.MethodPatch, "/v1/apps/"+appID.String(), adminSecret,
		map[string]any{"name": "renamed", "daily_limit": nil}, hdr)
	expectStatus(t, resp, body, http.StatusOK)
	updateRID := resp.Header.Get("X-Request-Id")

	all := b.auditLogs(t, nil)
	byAction := map[string]auditLogJSON{}
	for i, e := range all.Data {
		byAction[e.Action] = e
		if i > 0 && (e.CreatedAt.After(all.Data[i-1].CreatedAt)) {
			t.Errorf("entries not newest first: %v after %v", e.CreatedAt, all.Data[i-1].CreatedAt)
		}
		if e.IPAddress == nil || *e.IPAddress != "127.0.0.1" {
			t.Errorf("%s: ip_address = %v, want 127.0.0.1", e.Action, e.IPAddress)
		}
		if e.UserAgent == nil || *e.UserAgent != ua {
			t.Errorf("%s: user_agent = %v, want %q", e.Action, e.UserAgent, ua)
		}
	}
	if strings.Contains(string(must(b.do(t, http.MethodGet, "/v1/audit-logs", adminSecret, nil, nil))), key) {
		t.Error("the audit log holds the plaintext API key")
	}
	assertNotInDatabase(t, b, key)

	c, ok := byAction["app.create"]
	switch {
	case !ok:
		t.Fatalf("no app.create entry in %+v", all.Data)
	case c.ActorType != "admin" || c.ActorID != nil || c.ResourceType != "app" ||
		c.ResourceID == nil || *c.ResourceID != appID || c.RequestID == nil || *c.RequestID != createRID:
		t.Errorf("app.create entry = %+v (request id %s)", c, createRID)
	}
	var createdApp appJSON
	if err := json.Unmarshal(c.Changes["after"], &createdApp); err != nil || string(c.Changes["before"]) != "null" ||
		createdApp.ID != appID || createdApp.Name != "audited" || createdApp.DailyLimit == nil {
		t.Errorf("app.create changes = %s / %s (%v)", c.Changes["before"], c.Changes["after"], err)
	}

	u, ok := byAction["app.update"]
	switch {
	case !ok:
		t.Fatalf("no app.update entry in %+v", all.Data)
	case u.ActorType != "admin" || u.ActorID != nil || u.ResourceID == nil || *u.ResourceID != appID ||
		u.RequestID == nil || *u.RequestID != updateRID:
		t.Errorf("app.update entry = %+v (request id %s)", u, updateRID)
	}
	var before, after appJSON
	if err := json.Unmarshal(u.Changes["before"], &before); err != nil {
		t.Fatalf("app.update before: %v", err)
	}
	if err := json.Unmarshal(u.Changes["after"], &after); err != nil {
		t.Fatalf("app.update after: %v", err)
	}
	if before.Name != "audited" || before.DailyLimit == nil || *before.DailyLimit != 10 ||
		after.Name != "renamed" || after.DailyLimit != nil {
		t.Errorf("app.update before %+v after %+v", before, after)
	}

	// Queue operations through an API key are the app's. CreateQueue may not
	// audit yet; when it does, its entry must be right.
	if q, ok := byAction["queue.create"]; ok {
		if q.ActorType != "app" || q.ActorID == nil || *q.ActorID != appID || q.ResourceID == nil ||
			*q.ResourceID != queueID || q.RequestID == nil || *q.RequestID != queueRID {
			t.Errorf("queue.create entry = %+v (request id %s)", q, queueRID)
		}
	} else {
		t.Log("CreateQueue records no queue.create entry yet")
	}

	// Filters.
	l := b.auditLogs(t, url.Values{"action": {"app.update"}})
	if len(l.Data) != 1 || l.Data[0].ID != u.ID {
		t.Errorf("action filter: %+v", l.Data)
	}
	l = b.auditLogs(t, url.Values{"resource_id": {appID.String()}})
	if len(l.Data) != 2 || l.Data[0].Action != "app.update" || l.Data[1].Action != "app.create" {
		t.Errorf("resource_id filter: %+v", l.Data)
	}
	l = b.auditLogs(t, url.Values{"actor_id": {appID.String()}})
	for _, e := range l.Data {
		if e.ActorID == nil || *e.ActorID != appID {
			t.Errorf("actor_id filter returned %+v", e)
		}
	}
	if _, ok := byAction["queue.create"]; ok && len(l.Data) == 0 {
		t.Error("actor_id filter lost the queue.create entry")
	}
	l = b.auditLogs(t, url.Values{"since": {time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}})
	if len(l.Data) != 0 || l.HasMore {
		t.Errorf("since in the future: %+v", l.Data)
	}
	l = b.auditLogs(t, url.Values{"since": {time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)}})
	if len(l.Data) != len(all.Data) {
		t.Errorf("since an hour ago: %d entries, want %d", len(l.Data), len(all.Data))
	}
	l = b.auditLogs(t, url.Values{"action": {"no.such"}})
	if len(l.Data) != 0 || l.Data == nil {
		t.Errorf("unknown action: data = %#v, want []", l.Data)
	}
	for _, q := range []string{"actor_id=nope", "resource_id=1", "since=yesterday", "limit=0", "limit=101", "cursor=forged", "action=" + strings.Repeat("a", 101)} {
		resp, body := b.do(t, http.MethodGet, "/v1/audit-logs?"+q, adminSecret, nil, nil)
		expectError(t, resp, body, http.StatusBadRequest, "", "")
	}
}

func TestAuditLogPagination(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id, _ := b.createApp(t, "app", false)
	for i := range 4 {
		b.patchApp(t, id, map[string]any{"description": strings.Repeat("d", i+1)})
	}
	want := b.auditLogs(t, nil).Data // 1 create + 4 updates (+ whatever else is audited)
	if len(want) < 5 {
		t.Fatalf("%d entries, want at least 5", len(want))
	}
	var got []uuid.UUID
	cursor := ""
	for page := 0; ; page++ {
		if page > len(want) {
			t.Fatal("pagination does not end")
		}
		q := url.Values{"limit": {"2"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		l := b.auditLogs(t, q)
		for _, e := range l.Data {
			got = append(got, e.ID)
		}
		if !l.HasMore || l.Cursor == nil {
			break
		}
		cursor = *l.Cursor
	}
	var wantIDs []uuid.UUID
	for _, e := range want {
		wantIDs = append(wantIDs, e.ID)
	}
	if !slices.Equal(got, wantIDs) {
		t.Errorf("paged ids\n%v\nwant\n%v", got, wantIDs)
	}
}

func TestAuditLogAccess(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "app", false) // its first key holds every scope, admin included
	for _, token := range []string{"", key, "wrong"} {
		resp, body := b.do(t, http.MethodGet, "/v1/audit-logs", token, nil, nil)
		expectError(t, resp, body, http.StatusUnauthorized, "unauthorized", "")
	}
	c := b.oasClient(t, key)
	list, err := c.ListAuditLogs(t.Context(), oas.ListAuditLogsParams{Action: oas.NewOptString("app.create")})
	if err != nil || len(list.Data) != 1 || list.Data[0].ActorType != oas.AuditLogActorTypeAdmin {
		t.Fatalf("generated client: %+v, %v", list, err)
	}
}

func TestAuditLogAppendOnly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.createApp(t, "app", false)
	if n := b.count(t, "SELECT count(*) FROM audit_logs"); n == 0 {
		t.Fatal("no audit entries to tamper with")
	}
	for _, q := range []string{
		"UPDATE audit_logs SET action = 'forged'",
		"DELETE FROM audit_logs",
	} {
		_, err := b.pool.Exec(t.Context(), q)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Errorf("%s: err = %v, want SQLSTATE 42501", q, err)
		}
	}
	if n := b.count(t, "SELECT count(*) FROM audit_logs WHERE action = 'app.create'"); n != 1 {
		t.Errorf("app.create entries = %d after tampering, want 1", n)
	}
}
