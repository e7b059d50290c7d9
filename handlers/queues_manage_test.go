package handlers_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// queueOut is the whole Queue shape, with pointers where a field may be absent.
type queueOut struct {
	ID           uuid.UUID  `json:"id"`
	Name         string     `json:"name"`
	Priority     int        `json:"priority"`
	RateLimit    *int       `json:"rate_limit"`
	MaxRetries   int        `json:"max_retries"`
	RetryDelay   []int      `json:"retry_delay"`
	SMTPConfigID *uuid.UUID `json:"smtp_config_id"`
	IsPaused     bool       `json:"is_paused"`
	IsDraining   bool       `json:"is_draining"`
	Settings     struct {
		ListUnsubscribe       *bool   `json:"list_unsubscribe"`
		StrictPersonalization *bool   `json:"strict_personalization"`
		UncertainPolicy       *string `json:"uncertain_policy"`
	} `json:"settings"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

type queueStats struct {
	QueueID    uuid.UUID `json:"queue_id"`
	Pending    int       `json:"pending"`
	Scheduled  int       `json:"scheduled"`
	Processing int       `json:"processing"`
	Sent       int       `json:"sent"`
	Failed     int       `json:"failed"`
	Cancelled  int       `json:"cancelled"`
	Oldest     *float64  `json:"oldest_pending_age_seconds"`
}

// createQueue creates a queue through the API and returns it.
func (b *bundle) createQueue(t *testing.T, key string, body map[string]any) queueOut {
	t.Helper()
	resp, out := b.do(t, http.MethodPost, "/v1/queues", key, body, nil)
	expectStatus(t, resp, out, http.StatusCreated)
	return decode[queueOut](t, out)
}

// defaultQueue returns the id of the app's default queue.
func (b *bundle) defaultQueue(t *testing.T, appID uuid.UUID) uuid.UUID {
	t.Helper()
	var id uuid.UUID
	if err := b.pool.QueryRow(t.Context(),
		"SELECT id FROM queues WHERE app_id = $1 AND name = 'default' AND deleted_at IS NULL", appID).Scan(&id); err != nil {
		t.Fatalf("default queue: %v", err)
	}
	return id
}

// insertSMTPConfig stores an SMTP config for appID directly, as SMTP
// management will.
func (b *bundle) insertSMTPConfig(t *testing.T, appID uuid.UUID) uuid.UUID {
	t.Helper()
	id := uuid.Must(uuid.NewV7())
	b.exec(t, "INSERT INTO smtp_configs (id, app_id, name, host, port) VALUES ($1, $2, $3, 'smtp.example.com', 587)",
		id, appID, "relay-"+id.String()[:8])
	return id
}

// setStatus moves an email to status behind the API's back, as a worker would.
func (b *bundle) setStatus(t *testing.T, id uuid.UUID, status string) {
	t.Helper()
	b.exec(t, "UPDATE emails SET status = $2 WHERE id = $1", id, status)
}

func TestQueueList(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appID, key := b.createApp(t, "app", false)
	_, other := b.createApp(t, "other", false)
	b.createQueue(t, other, map[string]any{"name": "theirs"})

	want := []uuid.UUID{b.defaultQueue(t, appID)}
	for i := range 5 {
		want = append(want, b.createQueue(t, key, map[string]any{"name": fmt.Sprintf("q%d", i)}).ID)
	}
	gone := b.createQueue(t, key, map[string]any{"name": "gone"})
	resp, body := b.do(t, http.MethodDelete, "/v1/queues/"+gone.ID.String(), key, nil, nil)
	expectStatus(t, resp, body, http.StatusNoContent)
	slices.Reverse(want) // newest first

	var got []uuid.UUID
	cursor := ""
	for page := 0; ; page++ {
		if page > 5 {
			t.Fatal("pagination does not end")
		}
		q := url.Values{"limit": {"4"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		resp, body := b.do(t, http.MethodGet, "/v1/queues?"+q.Encode(), key, nil, nil)
		expectStatus(t, resp, body, http.StatusOK)
		l := decode[struct {
			Data    []queueOut `json:"data"`
			HasMore bool       `json:"has_more"`
			Cursor  *string    `json:"cursor"`
		}](t, body)
		for _, q := range l.Data {
			got = append(got, q.ID)
			if len(q.RetryDelay) == 0 || q.Priority == 0 {
				t.Errorf("list item is not a whole queue: %+v", q)
			}
		}
		if wantMore := page == 0; l.HasMore != wantMore || (l.Cursor != nil) != wantMore {
			t.Errorf("page %d: has_more=%v cursor=%v, want has_more=%v", page, l.HasMore, l.Cursor, wantMore)
		}
		if !l.HasMore || l.Cursor == nil {
			break
		}
		cursor = *l.Cursor
	}
	if !slices.Equal(got, want) {
		t.Errorf("paged ids\n%v\nwant newest first, deleted and other apps' left out\n%v", got, want)
	}

	resp, body = b.do(t, http.MethodGet, "/v1/queues?cursor=forged", key, nil, nil)
	expectError(t, resp, body, http.StatusBadRequest, "invalid_cursor", "cursor")
	resp, body = b.do(t, http.MethodGet, "/v1/queues?limit=101", key, nil, nil)
	expectError(t, resp, body, http.StatusBadRequest, "", "limit")
}

func TestQueueUpdate(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appID, key := b.createApp(t, "app", false)
	otherID, _ := b.createApp(t, "other", false)
	q := b.createQueue(t, key, map[string]any{"name": "news", "rate_limit": 50})
	path := "/v1/queues/" + q.ID.String()
	mine, theirs := b.insertSMTPConfig(t, appID), b.insertSMTPConfig(t, otherID)

	patch := func(t *testing.T, body any) queueOut {
		t.Helper()
		resp, out := b.do(t, http.MethodPatch, path, key, body, nil)
		expectStatus(t, resp, out, http.StatusOK)
		return decode[queueOut](t, out)
	}

	t.Run("each field", func(t *testing.T) {
		got := patch(t, map[string]any{"priority": 9})
		if got.Priority != 9 || got.Name != "news" || got.RateLimit == nil || *got.RateLimit != 50 || got.MaxRetries != 5 {
			t.Errorf("after priority: %+v", got)
		}
		if got.UpdatedAt.Before(q.UpdatedAt) {
			t.Errorf("updated_at %v before %v", got.UpdatedAt, q.UpdatedAt)
		}
		if n := b.count(t, "SELECT count(*) FROM queues WHERE id = $1 AND updated_at > created_at", q.ID); n != 1 {
			t.Error("update did not move updated_at")
		}
		if got = patch(t, map[string]any{"max_retries": 0}); got.MaxRetries != 0 || got.Priority != 9 {
			t.Errorf("after max_retries: %+v", got)
		}
		if got = patch(t, map[string]any{"retry_delay": []int{5, 86400}}); !slices.Equal(got.RetryDelay, []int{5, 86400}) {
			t.Errorf("after retry_delay: %+v", got)
		}
		if got = patch(t, map[string]any{"rate_limit": 7}); got.RateLimit == nil || *got.RateLimit != 7 {
			t.Errorf("after rate_limit 7: %+v", got)
		}
		if got = patch(t, map[string]any{"rate_limit": nil}); got.RateLimit != nil {
			t.Errorf("rate_limit null should make the queue unlimited: %+v", got)
		}
		if got = patch(t, map[string]any{"smtp_config_id": mine}); got.SMTPConfigID == nil || *got.SMTPConfigID != mine {
			t.Errorf("after smtp_config_id: %+v", got)
		}
		if got = patch(t, map[string]any{"priority": 8}); got.SMTPConfigID == nil {
			t.Errorf("an absent smtp_config_id must not clear it: %+v", got)
		}
		if got = patch(t, map[string]any{"smtp_config_id": nil}); got.SMTPConfigID != nil {
			t.Errorf("smtp_config_id null should clear it: %+v", got)
		}
		got = patch(t, map[string]any{"settings": map[string]any{"strict_personalization": true, "uncertain_policy": "retry"}})
		got = patch(t, map[string]any{"settings": map[string]any{"list_unsubscribe": true}})
		if s := got.Settings; s.ListUnsubscribe == nil || !*s.ListUnsubscribe || s.StrictPersonalization == nil ||
			!*s.StrictPersonalization || s.UncertainPolicy == nil || *s.UncertainPolicy != "retry" {
			t.Errorf("settings should merge field by field: %+v", s)
		}
		if got = patch(t, map[string]any{"name": "newsletter"}); got.Name != "newsletter" || got.ID != q.ID {
			t.Errorf("after rename: %+v", got)
		}
		if got = patch(t, map[string]any{}); got.Name != "newsletter" || got.Priority != 8 {
			t.Errorf("an empty patch changed the queue: %+v", got)
		}

		// New email follows the new settings under the new name.
		a := b.send(t, key, emailReq(func(m map[string]any) { m["queue"] = "newsletter" }))
		if n := b.count(t, "SELECT count(*) FROM emails WHERE id = $1 AND queue_id = $2 AND priority = 8 AND max_retries = 0", a.ID, q.ID); n != 1 {
			t.Error("email sent after the update does not follow it")
		}
		resp, body := b.do(t, http.MethodPost, "/v1/emails", key, emailReq(func(m map[string]any) { m["queue"] = "news" }), nil)
		expectError(t, resp, body, http.StatusUnprocessableEntity, "", "queue")
	})

	t.Run("validation", func(t *testing.T) {
		before := b.count(t, "SELECT count(*) FROM audit_logs WHERE resource_id = $1", q.ID)
		for _, tc := range []struct {
			name   string
			body   any
			status int
			code   string
			field  string
		}{
			{"priority 0", map[string]any{"priority": 0}, 400, "validation_failed", "priority"},
			{"priority 11", map[string]any{"priority": 11}, 400, "validation_failed", "priority"},
			{"max_retries -1", map[string]any{"max_retries": -1}, 400, "validation_failed", "max_retries"},
			{"max_retries 26", map[string]any{"max_retries": 26}, 400, "validation_failed", "max_retries"},
			{"rate_limit 0", map[string]any{"rate_limit": 0}, 400, "validation_failed", "rate_limit"},
			{"retry_delay empty", map[string]any{"retry_delay": []int{}}, 400, "validation_failed", "retry_delay"},
			{"retry_delay 0", map[string]any{"retry_delay": []int{0}}, 400, "", ""},
			{"retry_delay too long", map[string]any{"retry_delay": []int{86401}}, 400, "", ""},
			{"retry_delay 26 items", map[string]any{"retry_delay": slices.Repeat([]int{1}, 26)}, 400, "validation_failed", "retry_delay"},
			{"bad name", map[string]any{"name": "Bad Name"}, 400, "validation_failed", "name"},
			{"wrong type", map[string]any{"priority": "high"}, 400, "invalid_request", "priority"},
			{"unknown smtp config", map[string]any{"smtp_config_id": uuid.Must(uuid.NewV7())}, 422, "validation_failed", "smtp_config_id"},
			{"another app's smtp config", map[string]any{"smtp_config_id": theirs}, 422, "validation_failed", "smtp_config_id"},
			{"bad uncertain_policy", map[string]any{"settings": map[string]any{"uncertain_policy": "maybe"}}, 400, "", ""},
		} {
			resp, body := b.do(t, http.MethodPatch, path, key, tc.body, nil)
			t.Run(tc.name, func(t *testing.T) { expectError(t, resp, body, tc.status, tc.code, tc.field) })
		}
		if n := b.count(t, "SELECT count(*) FROM audit_logs WHERE resource_id = $1", q.ID); n != before {
			t.Errorf("refused updates were audited: %d entries, want %d", n, before)
		}
		if n := b.count(t, "SELECT count(*) FROM queues WHERE id = $1 AND smtp_config_id IS NOT NULL", q.ID); n != 0 {
			t.Error("another app's SMTP config was attached")
		}
	})

	t.Run("rename conflict", func(t *testing.T) {
		b.createQueue(t, key, map[string]any{"name": "taken"})
		resp, body := b.do(t, http.MethodPatch, path, key, map[string]any{"name": "taken", "priority": 1}, nil)
		expectError(t, resp, body, http.StatusConflict, "already_exists", "")
		resp, body = b.do(t, http.MethodPatch, path, key, map[string]any{"name": "default"}, nil)
		expectError(t, resp, body, http.StatusConflict, "already_exists", "")
		if n := b.count(t, "SELECT count(*) FROM queues WHERE id = $1 AND name = 'newsletter' AND priority = 8", q.ID); n != 1 {
			t.Error("a refused rename changed the queue")
		}
	})

	t.Run("default queue", func(t *testing.T) {
		def := "/v1/queues/" + b.defaultQueue(t, appID).String()
		resp, body := b.do(t, http.MethodPatch, def, key, map[string]any{"priority": 7, "name": "default"}, nil)
		expectStatus(t, resp, body, http.StatusOK)
		if got := decode[queueOut](t, body); got.Priority != 7 || got.Name != "default" {
			t.Errorf("default queue after edit: %+v", got)
		}
		resp, body = b.do(t, http.MethodPatch, def, key, map[string]any{"name": "main"}, nil)
		expectError(t, resp, body, http.StatusConflict, "invalid_state", "")
		resp, body = b.do(t, http.MethodDelete, def, key, nil, nil)
		expectError(t, resp, body, http.StatusConflict, "invalid_state", "")
		resp, body = b.do(t, http.MethodDelete, def+"?force=true", key, nil, nil)
		expectError(t, resp, body, http.StatusConflict, "invalid_state", "")
		if n := b.count(t, "SELECT count(*) FROM queues WHERE app_id = $1 AND name = 'default' AND deleted_at IS NULL", appID); n != 1 {
			t.Error("the default queue was renamed or deleted")
		}
		b.send(t, key, emailReq(nil))
	})
}

func TestQueueDelete(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appID, key := b.createApp(t, "app", false)

	t.Run("empty", func(t *testing.T) {
		q := b.createQueue(t, key, map[string]any{"name": "empty"})
		path := "/v1/queues/" + q.ID.String()
		resp, body := b.do(t, http.MethodDelete, path, key, nil, nil)
		expectStatus(t, resp, body, http.StatusNoContent)
		if len(body) != 0 {
			t.Errorf("204 with a body: %s", body)
		}
		for _, r := range []struct{ method, path string }{
			{http.MethodGet, path}, {http.MethodPatch, path}, {http.MethodDelete, path},
			{http.MethodGet, path + "/stats"}, {http.MethodPost, path + "/pause"},
			{http.MethodPost, path + "/resume"}, {http.MethodPost, path + "/drain"},
		} {
			var req any
			if r.method == http.MethodPatch {
				req = map[string]any{"priority": 2}
			}
			resp, body := b.do(t, r.method, r.path, key, req, nil)
			expectError(t, resp, body, http.StatusNotFound, "not_found", "")
		}
		resp, body = b.do(t, http.MethodPost, "/v1/emails", key, emailReq(func(m map[string]any) { m["queue"] = "empty" }), nil)
		expectError(t, resp, body, http.StatusUnprocessableEntity, "validation_failed", "queue")
		if n := b.count(t, "SELECT count(*) FROM queues WHERE id = $1 AND deleted_at IS NOT NULL", q.ID); n != 1 {
			t.Error("the queue row should be kept, soft-deleted")
		}

		// The name is free again, for a new queue with a new id.
		again := b.createQueue(t, key, map[string]any{"name": "empty"})
		if again.ID == q.ID {
			t.Error("a deleted queue came back")
		}
		a := b.send(t, key, emailReq(func(m map[string]any) { m["queue"] = "empty" }))
		if n := b.count(t, "SELECT count(*) FROM emails WHERE id = $1 AND queue_id = $2", a.ID, again.ID); n != 1 {
			t.Error("email to the reused name did not land in the new queue")
		}
	})

	t.Run("pending", func(t *testing.T) {
		q := b.createQueue(t, key, map[string]any{"name": "busy"})
		path := "/v1/queues/" + q.ID.String()
		inQueue := func(m map[string]any) { m["queue"] = "busy" }
		queued := []uuid.UUID{b.send(t, key, emailReq(inQueue)).ID, b.send(t, key, emailReq(func(m map[string]any) {
			m["queue"] = "busy"
			m["scheduled_at"] = time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		})).ID}
		processing := b.send(t, key, emailReq(inQueue)).ID
		b.setStatus(t, processing, "processing")
		sent := b.send(t, key, emailReq(inQueue)).ID
		b.setStatus(t, sent, "sent")
		elsewhere := b.send(t, key, emailReq(nil)).ID

		for _, p := range []string{path, path + "?force=false"} {
			resp, body := b.do(t, http.MethodDelete, p, key, nil, nil)
			expectError(t, resp, body, http.StatusConflict, "queue_not_empty", "")
			if e := decode[apiError](t, body); !strings.Contains(e.Error.Message, "3 pending") {
				t.Errorf("message should say how many emails are pending: %q", e.Error.Message)
			}
		}
		if n := b.count(t, "SELECT count(*) FROM queues WHERE id = $1 AND deleted_at IS NULL", q.ID); n != 1 {
			t.Fatal("a refused delete deleted the queue")
		}

		resp, body := b.do(t, http.MethodDelete, path+"?force=true", key, nil, nil)
		expectStatus(t, resp, body, http.StatusNoContent)
		for _, id := range queued {
			if n := b.count(t, "SELECT count(*) FROM emails WHERE id = $1 AND status = 'cancelled'", id); n != 1 {
				t.Errorf("queued email %s was not cancelled", id)
			}
			if n := b.count(t, `SELECT count(*) FROM email_events WHERE email_id = $1 AND app_id = $2
				AND event_type = 'cancelled' AND event_data->>'reason' = 'queue deleted'`, id, appID); n != 1 {
				t.Errorf("cancelled email %s has %d cancelled events, want 1", id, n)
			}
			// The event shows in the email's history through the API.
			resp, body := b.do(t, http.MethodGet, "/v1/emails/"+id.String()+"/events", key, nil, nil)
			expectStatus(t, resp, body, http.StatusOK)
			if !strings.Contains(string(body), `"cancelled"`) {
				t.Errorf("events of %s: %s", id, body)
			}
		}
		// Email already being sent is left to finish; history is not rewritten.
		for id, status := range map[uuid.UUID]string{processing: "processing", sent: "sent", elsewhere: "queued"} {
			if n := b.count(t, "SELECT count(*) FROM emails WHERE id = $1 AND status = $2", id, status); n != 1 {
				t.Errorf("email %s is no longer %s", id, status)
			}
			if n := b.count(t, "SELECT count(*) FROM email_events WHERE email_id = $1 AND event_type = 'cancelled'", id); n != 0 {
				t.Errorf("email %s got a cancelled event", id)
			}
		}
		resp, body = b.do(t, http.MethodGet, path, key, nil, nil)
		expectError(t, resp, body, http.StatusNotFound, "not_found", "")
		resp, body = b.do(t, http.MethodGet, "/v1/emails/"+queued[0].String(), key, nil, nil)
		expectStatus(t, resp, body, http.StatusOK)
		if e := decode[emailJSON](t, body); e.Status != "cancelled" || e.Queue != "busy" {
			t.Errorf("an email of a deleted queue still reads with its queue's name: %s", body)
		}
	})

	t.Run("scheduled jobs", func(t *testing.T) {
		q := b.createQueue(t, key, map[string]any{"name": "cron"})
		b.exec(t, `INSERT INTO scheduled_jobs (id, app_id, queue_id, name, cron_expression, email_template)
			VALUES ($1, $2, $3, 'weekly', '0 9 * * 1', '{}')`, uuid.Must(uuid.NewV7()), appID, q.ID)
		for _, p := range []string{"", "?force=true"} {
			resp, body := b.do(t, http.MethodDelete, "/v1/queues/"+q.ID.String()+p, key, nil, nil)
			expectError(t, resp, body, http.StatusConflict, "queue_not_empty", "")
		}
	})
}

func TestQueueStats(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "app", false)
	q := b.createQueue(t, key, map[string]any{"name": "stats"})
	path := "/v1/queues/" + q.ID.String() + "/stats"

	stats := func(t *testing.T) queueStats {
		t.Helper()
		resp, body := b.do(t, http.MethodGet, path, key, nil, nil)
		expectStatus(t, resp, body, http.StatusOK)
		return decode[queueStats](t, body)
	}
	if got := stats(t); got != (queueStats{QueueID: q.ID}) {
		t.Errorf("empty queue stats = %+v", got)
	}

	inQueue := func(m map[string]any) { m["queue"] = "stats" }
	send := func() uuid.UUID { return b.send(t, key, emailReq(inQueue)).ID }
	due, overdue := send(), send()
	// An email that has waited an hour past its schedule.
	b.exec(t, "UPDATE emails SET scheduled_at = now() - interval '1 hour' WHERE id = $1", overdue)
	_ = due
	b.send(t, key, emailReq(func(m map[string]any) {
		m["queue"] = "stats"
		m["scheduled_at"] = time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	}))
	// Queued again after a failed attempt, waiting for its retry.
	retrying := send()
	b.exec(t, `UPDATE river_job SET state = 'retryable', scheduled_at = now() + interval '10 minutes'
		WHERE id = (SELECT job_id FROM emails WHERE id = $1)`, retrying)
	for status, n := range map[string]int{"processing": 1, "sent": 2, "delivered": 1, "failed": 2, "cancelled": 1, "bounced": 1} {
		for range n {
			b.setStatus(t, send(), status)
		}
	}
	b.send(t, key, emailReq(nil)) // another queue

	got := stats(t)
	want := queueStats{QueueID: q.ID, Pending: 2, Scheduled: 2, Processing: 1, Sent: 3, Failed: 2, Cancelled: 1}
	oldest := got.Oldest
	got.Oldest = nil
	if got != want {
		t.Errorf("stats = %+v\nwant    %+v", got, want)
	}
	if oldest == nil || *oldest < 3590 || *oldest > 3700 {
		t.Errorf("oldest_pending_age_seconds = %v, want about 3600", oldest)
	}

	// Stats are the queue's only: another app sees 404, and a paused queue
	// still counts.
	_, other := b.createApp(t, "other", false)
	resp, body := b.do(t, http.MethodGet, path, other, nil, nil)
	expectError(t, resp, body, http.StatusNotFound, "not_found", "")
	resp, body = b.do(t, http.MethodGet, "/v1/queues/"+uuid.Must(uuid.NewV7()).String()+"/stats", key, nil, nil)
	expectError(t, resp, body, http.StatusNotFound, "not_found", "")
}

func TestQueuePauseDrainResume(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "app", false)
	q := b.createQueue(t, key, map[string]any{"name": "flow"})
	path := "/v1/queues/" + q.ID.String()
	inQueue := func(m map[string]any) { m["queue"] = "flow" }

	post := func(t *testing.T, action string, headers map[string]string) queueOut {
		t.Helper()
		resp, body := b.do(t, http.MethodPost, path+"/"+action, key, nil, headers)
		expectStatus(t, resp, body, http.StatusOK)
		return decode[queueOut](t, body)
	}
	flags := func(t *testing.T, paused, draining bool) {
		t.Helper()
		if n := b.count(t, "SELECT count(*) FROM queues WHERE id = $1 AND is_paused = $2 AND is_draining = $3", q.ID, paused, draining); n != 1 {
			t.Errorf("stored flags are not paused=%v draining=%v", paused, draining)
		}
	}

	// Paused: email is still accepted and waits; the worker snoozes its job.
	got := post(t, "pause", nil)
	if !got.IsPaused || got.IsDraining {
		t.Errorf("after pause: %+v", got)
	}
	flags(t, true, false)
	var stamp time.Time
	if err := b.pool.QueryRow(t.Context(), "SELECT updated_at FROM queues WHERE id = $1", q.ID).Scan(&stamp); err != nil {
		t.Fatal(err)
	}
	again := post(t, "pause", nil)
	if n := b.count(t, "SELECT count(*) FROM queues WHERE id = $1 AND updated_at = $2", q.ID, stamp); n != 1 {
		t.Error("a second pause moved updated_at")
	}
	if !again.IsPaused || !again.UpdatedAt.Equal(got.UpdatedAt) {
		t.Errorf("a second pause changed the queue: %+v, then %+v", got, again)
	}
	a := b.send(t, key, emailReq(inQueue))
	if a.Status != "queued" {
		t.Errorf("email to a paused queue: %+v", a)
	}
	if js := b.jobsOf(t, a.ID); len(js) != 1 {
		t.Errorf("email to a paused queue has jobs %+v", js)
	}

	// Draining: new email refused, the paused flag is kept.
	got = post(t, "drain", nil)
	if !got.IsPaused || !got.IsDraining {
		t.Errorf("after drain: %+v", got)
	}
	post(t, "drain", nil)
	flags(t, true, true)
	resp, body := b.do(t, http.MethodPost, "/v1/emails", key, emailReq(inQueue), nil)
	expectError(t, resp, body, http.StatusConflict, "queue_draining", "")

	// Resume clears both.
	got = post(t, "resume", nil)
	if got.IsPaused || got.IsDraining {
		t.Errorf("after resume: %+v", got)
	}
	post(t, "resume", nil)
	flags(t, false, false)
	b.send(t, key, emailReq(inQueue))

	// Drain alone, then resume.
	if got = post(t, "drain", nil); got.IsPaused || !got.IsDraining {
		t.Errorf("drain of a running queue: %+v", got)
	}
	if got = post(t, "resume", nil); got.IsPaused || got.IsDraining {
		t.Errorf("resume of a draining queue: %+v", got)
	}

	// Idempotency-Key: a replay returns the first response even though the
	// queue has changed since; the same key on another operation is refused.
	k := map[string]string{"Idempotency-Key": "pause-" + q.ID.String()}
	first := post(t, "pause", k)
	post(t, "resume", nil)
	if replay := post(t, "pause", k); !replay.IsPaused || !replay.UpdatedAt.Equal(first.UpdatedAt) {
		t.Errorf("replay = %+v, want the first response %+v", replay, first)
	}
	flags(t, false, false)
	resp, body = b.do(t, http.MethodPost, path+"/resume", key, nil, k)
	expectError(t, resp, body, http.StatusUnprocessableEntity, "idempotency_mismatch", "Idempotency-Key")
	other := b.createQueue(t, key, map[string]any{"name": "other"})
	resp, body = b.do(t, http.MethodPost, "/v1/queues/"+other.ID.String()+"/pause", key, nil, k)
	expectError(t, resp, body, http.StatusUnprocessableEntity, "idempotency_mismatch", "Idempotency-Key")
	if n := b.count(t, "SELECT count(*) FROM audit_logs WHERE resource_id = $1 AND action = 'queue.pause'", q.ID); n != 3 {
		t.Errorf("queue.pause audit entries = %d, want 3 (the replay is not a new change)", n)
	}
}

func TestQueueTenancy(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "app", false)
	_, intruder := b.createApp(t, "intruder", false)
	q := b.createQueue(t, key, map[string]any{"name": "private", "priority": 3})
	b.send(t, key, emailReq(func(m map[string]any) { m["queue"] = "private" }))
	path := "/v1/queues/" + q.ID.String()

	for _, r := range []struct {
		method, path string
		body         any
	}{
		{http.MethodGet, path, nil},
		{http.MethodPatch, path, map[string]any{"priority": 10, "name": "mine"}},
		{http.MethodDelete, path, nil},
		{http.MethodDelete, path + "?force=true", nil},
		{http.MethodGet, path + "/stats", nil},
		{http.MethodPost, path + "/pause", nil},
		{http.MethodPost, path + "/resume", nil},
		{http.MethodPost, path + "/drain", nil},
	} {
		resp, body := b.do(t, r.method, r.path, intruder, r.body, nil)
		t.Run(r.method+" "+strings.TrimPrefix(r.path, path), func(t *testing.T) {
			expectError(t, resp, body, http.StatusNotFound, "not_found", "")
			if strings.Contains(string(body), "private") {
				t.Errorf("404 leaks the queue: %s", body)
			}
		})
	}
	resp, body := b.do(t, http.MethodGet, "/v1/queues", intruder, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	if strings.Contains(string(body), q.ID.String()) {
		t.Errorf("another app's list shows the queue: %s", body)
	}
	if n := b.count(t, `SELECT count(*) FROM queues WHERE id = $1 AND name = 'private' AND priority = 3
		AND NOT is_paused AND NOT is_draining AND deleted_at IS NULL`, q.ID); n != 1 {
		t.Error("another app changed the queue")
	}
	if n := b.count(t, "SELECT count(*) FROM emails WHERE queue_id = $1 AND status = 'queued'", q.ID); n != 1 {
		t.Error("another app's forced delete cancelled the queue's email")
	}
	if n := b.count(t, "SELECT count(*) FROM audit_logs WHERE resource_id = $1 AND action <> 'queue.create'", q.ID); n != 0 {
		t.Errorf("refused requests were audited: %d", n)
	}
}

func TestQueueScope(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appID, key := b.createApp(t, "app", false)
	q := b.createQueue(t, key, map[string]any{"name": "scoped"})
	limited := b.insertKey(t, appID, []string{"email:send", "email:read"}, nil, nil)
	path := "/v1/queues/" + q.ID.String()
	for _, r := range []struct {
		method, path string
		body         any
	}{
		{http.MethodGet, "/v1/queues", nil},
		{http.MethodPost, "/v1/queues", map[string]any{"name": "new"}},
		{http.MethodGet, path, nil},
		{http.MethodPatch, path, map[string]any{"priority": 10}},
		{http.MethodDelete, path, nil},
		{http.MethodGet, path + "/stats", nil},
		{http.MethodPost, path + "/pause", nil},
		{http.MethodPost, path + "/resume", nil},
		{http.MethodPost, path + "/drain", nil},
	} {
		resp, body := b.do(t, r.method, r.path, limited, r.body, nil)
		t.Run(r.method+" "+r.path, func(t *testing.T) {
			expectError(t, resp, body, http.StatusForbidden, "insufficient_scope", "")
		})
	}
	if n := b.count(t, "SELECT count(*) FROM queues WHERE app_id = $1 AND deleted_at IS NULL", appID); n != 2 {
		t.Errorf("queues = %d, want default and scoped", n)
	}
}

func TestQueueAudit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appID, key := b.createApp(t, "app", false)
	q := b.createQueue(t, key, map[string]any{"name": "audited", "priority": 4})
	path := "/v1/queues/" + q.ID.String()
	for _, r := range []struct {
		method, path string
		body         any
		status       int
	}{
		{http.MethodPatch, path, map[string]any{"priority": 6}, http.StatusOK},
		{http.MethodPost, path + "/pause", nil, http.StatusOK},
		{http.MethodPost, path + "/drain", nil, http.StatusOK},
		{http.MethodPost, path + "/resume", nil, http.StatusOK},
		{http.MethodDelete, path, nil, http.StatusNoContent},
	} {
		resp, body := b.do(t, r.method, r.path, key, r.body, map[string]string{"User-Agent": "queue-audit-test"})
		expectStatus(t, resp, body, r.status)
	}

	type change struct {
		Before *queueOut `json:"before"`
		After  *queueOut `json:"after"`
	}
	rows, err := b.pool.Query(t.Context(), `
		SELECT action, resource_type, actor_type::text, actor_id, app_id, changes
		FROM audit_logs WHERE resource_id = $1 ORDER BY created_at, id`, q.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var actions []string
	got := map[string]change{}
	for rows.Next() {
		var (
			action, resType, actorType string
			actorID, app               *uuid.UUID
			raw                        []byte
		)
		if err := rows.Scan(&action, &resType, &actorType, &actorID, &app, &raw); err != nil {
			t.Fatal(err)
		}
		if resType != "queue" || actorType != "app" || actorID == nil || *actorID != appID || app == nil || *app != appID {
			t.Errorf("%s: resource %s, actor %s %v, app %v", action, resType, actorType, actorID, app)
		}
		var c change
		if err := json.Unmarshal(raw, &c); err != nil {
			t.Fatalf("%s changes %s: %v", action, raw, err)
		}
		actions = append(actions, action)
		got[action] = c
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{"queue.create", "queue.update", "queue.pause", "queue.drain", "queue.resume", "queue.delete"}
	if !slices.Equal(actions, want) {
		t.Fatalf("audit actions = %v, want %v", actions, want)
	}
	checks := map[string]func(c change) bool{
		"queue.create": func(c change) bool { return c.Before == nil && c.After != nil && c.After.Name == "audited" },
		"queue.update": func(c change) bool {
			return c.Before != nil && c.After != nil && c.Before.Priority == 4 && c.After.Priority == 6
		},
		"queue.pause": func(c change) bool {
			return c.Before != nil && c.After != nil && !c.Before.IsPaused && c.After.IsPaused
		},
		"queue.drain": func(c change) bool {
			return c.Before != nil && c.After != nil && !c.Before.IsDraining && c.After.IsDraining && c.After.IsPaused
		},
		"queue.resume": func(c change) bool {
			return c.Before != nil && c.After != nil && c.Before.IsPaused && c.Before.IsDraining &&
				!c.After.IsPaused && !c.After.IsDraining
		},
		"queue.delete": func(c change) bool { return c.Before != nil && c.Before.ID == q.ID && c.After == nil },
	}
	for action, ok := range checks {
		if c := got[action]; !ok(c) {
			t.Errorf("%s: before %+v, after %+v", action, c.Before, c.After)
		}
	}
	if n := b.count(t, "SELECT count(*) FROM audit_logs WHERE resource_id = $1 AND user_agent = 'queue-audit-test' AND request_id IS NOT NULL", q.ID); n != 5 {
		t.Errorf("audit entries with the request's user agent and id = %d, want 5", n)
	}
}
