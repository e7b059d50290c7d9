package handlers_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
)

type scheduledJobView struct {
	ID             uuid.UUID      `json:"id"`
	Name           string         `json:"name"`
	Queue          string         `json:"queue"`
	CronExpression string         `json:"cron_expression"`
	Timezone       string         `json:"timezone"`
	EmailTemplate  map[string]any `json:"email_template"`
	IsActive       bool           `json:"is_active"`
	LastRunAt      *time.Time     `json:"last_run_at"`
	NextRunAt      *time.Time     `json:"next_run_at"`
}

func scheduledJobReq(change func(m map[string]any)) map[string]any {
	m := map[string]any{
		"name":            "daily report",
		"cron_expression": "0 9 * * *",
		"timezone":        "Europe/Berlin",
		"email_template":  emailReq(nil),
	}
	if change != nil {
		change(m)
	}
	return m
}

func (b *bundle) createScheduledJob(t *testing.T, key string, req map[string]any) scheduledJobView {
	t.Helper()
	resp, body := b.do(t, http.MethodPost, "/v1/scheduled-jobs", key, req, nil)
	expectStatus(t, resp, body, http.StatusCreated)
	return decode[scheduledJobView](t, body)
}

func TestScheduledJobCRUD(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appID, key := b.createApp(t, "scheduler", false)
	_, otherKey := b.createApp(t, "other", false)
	resp, body := b.do(t, http.MethodPost, "/v1/queues", key, map[string]any{"name": "reports"}, nil)
	expectStatus(t, resp, body, http.StatusCreated)

	before := time.Now()
	j := b.createScheduledJob(t, key, scheduledJobReq(nil))
	berlin, _ := time.LoadLocation("Europe/Berlin")
	if j.Name != "daily report" || j.Queue != "default" || j.Timezone != "Europe/Berlin" || !j.IsActive || j.LastRunAt != nil {
		t.Errorf("created job = %+v", j)
	}
	if j.NextRunAt == nil {
		t.Fatal("no next_run_at")
	}
	if l := j.NextRunAt.In(berlin); l.Hour() != 9 || l.Minute() != 0 || !j.NextRunAt.After(before) ||
		j.NextRunAt.After(before.Add(24*time.Hour)) || j.NextRunAt.Location() != time.UTC {
		t.Errorf("next_run_at = %s (%s in Berlin), want the next 09:00 Berlin time, in UTC", j.NextRunAt, l)
	}
	if j.EmailTemplate["subject"] != "Hello" || j.EmailTemplate["queue"] != "default" {
		t.Errorf("email_template = %v", j.EmailTemplate)
	}

	// The queue comes from the request, then from the template.
	j2 := b.createScheduledJob(t, key, scheduledJobReq(func(m map[string]any) {
		m["email_template"] = emailReq(func(e map[string]any) { e["queue"] = "reports" })
		delete(m, "timezone")
		m["is_active"] = false
	}))
	if j2.Queue != "reports" || j2.Timezone != "UTC" || j2.IsActive || j2.NextRunAt != nil {
		t.Errorf("second job = %+v, want queue reports, UTC, inactive without next_run_at", j2)
	}

	// Get, list (newest first, paged), and tenant isolation.
	resp, body = b.do(t, http.MethodGet, "/v1/scheduled-jobs/"+j.ID.String(), key, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	if got := decode[scheduledJobView](t, body); got.ID != j.ID || *got.NextRunAt != *j.NextRunAt {
		t.Errorf("get = %+v, want %+v", got, j)
	}
	resp, body = b.do(t, http.MethodGet, "/v1/scheduled-jobs/"+j.ID.String(), otherKey, nil, nil)
	expectError(t, resp, body, http.StatusNotFound, "not_found", noField)
	resp, body = b.do(t, http.MethodGet, "/v1/scheduled-jobs?limit=1", key, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	page1 := decode[struct {
		Data    []scheduledJobView `json:"data"`
		Cursor  string             `json:"cursor"`
		HasMore bool               `json:"has_more"`
	}](t, body)
	if len(page1.Data) != 1 || page1.Data[0].ID != j2.ID || !page1.HasMore {
		t.Fatalf("page 1 = %+v, want the newest job and more", page1)
	}
	resp, body = b.do(t, http.MethodGet, "/v1/scheduled-jobs?limit=1&cursor="+page1.Cursor, key, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	page2 := decode[struct {
		Data    []scheduledJobView `json:"data"`
		HasMore bool               `json:"has_more"`
	}](t, body)
	if len(page2.Data) != 1 || page2.Data[0].ID != j.ID || page2.HasMore {
		t.Errorf("page 2 = %+v, want the first job and no more", page2)
	}
	resp, body = b.do(t, http.MethodGet, "/v1/scheduled-jobs", otherKey, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	if l := decode[struct {
		Data []scheduledJobView `json:"data"`
	}](t, body); len(l.Data) != 0 {
		t.Errorf("another app lists %d jobs", len(l.Data))
	}

	// Update: a new schedule moves next_run_at; switching off clears it.
	resp, body = b.do(t, http.MethodPatch, "/v1/scheduled-jobs/"+j.ID.String(), key,
		map[string]any{"cron_expression": "30 7 * * MON", "timezone": "America/New_York", "queue": "reports"}, nil)
	expectStatus(t, resp, body, http.StatusOK)
	up := decode[scheduledJobView](t, body)
	ny, _ := time.LoadLocation("America/New_York")
	if l := up.NextRunAt.In(ny); l.Weekday() != time.Monday || l.Hour() != 7 || l.Minute() != 30 {
		t.Errorf("next_run_at after update = %s (%s in New York), want a Monday 07:30", up.NextRunAt, l)
	}
	if up.Queue != "reports" || up.EmailTemplate["queue"] != "reports" || up.Name != "daily report" {
		t.Errorf("updated job = %+v, want queue reports in the job and its template", up)
	}
	resp, body = b.do(t, http.MethodPatch, "/v1/scheduled-jobs/"+j.ID.String(), key, map[string]any{"is_active": false}, nil)
	expectStatus(t, resp, body, http.StatusOK)
	if up := decode[scheduledJobView](t, body); up.IsActive || up.NextRunAt != nil {
		t.Errorf("switched off = %+v, want inactive without next_run_at", up)
	}
	resp, body = b.do(t, http.MethodPatch, "/v1/scheduled-jobs/"+j.ID.String(), otherKey, map[string]any{"name": "x"}, nil)
	expectError(t, resp, body, http.StatusNotFound, "not_found", noField)

	// Delete; emails already queued stay.
	resp, body = b.do(t, http.MethodPost, "/v1/scheduled-jobs/"+j.ID.String()+"/run", key, nil, nil)
	expectStatus(t, resp, body, http.StatusAccepted)
	ran := decode[accepted](t, body)
	resp, body = b.do(t, http.MethodDelete, "/v1/scheduled-jobs/"+j.ID.String(), otherKey, nil, nil)
	expectError(t, resp, body, http.StatusNotFound, "not_found", noField)
	resp, body = b.do(t, http.MethodDelete, "/v1/scheduled-jobs/"+j.ID.String(), key, nil, nil)
	expectStatus(t, resp, body, http.StatusNoContent)
	resp, body = b.do(t, http.MethodGet, "/v1/scheduled-jobs/"+j.ID.String(), key, nil, nil)
	expectError(t, resp, body, http.StatusNotFound, "not_found", noField)
	if n := b.count(t, `SELECT count(*) FROM emails WHERE id = $1 AND status = 'queued'`, ran.ID); n != 1 {
		t.Error("deleting the job touched the email it queued")
	}

	// Every change is audited.
	for _, action := range []string{"scheduled_job.create", "scheduled_job.update", "scheduled_job.run", "scheduled_job.delete"} {
		if n := b.count(t, `SELECT count(*) FROM audit_logs WHERE app_id = $1 AND action = $2`, appID, action); n == 0 {
			t.Errorf("no %s audit entry", action)
		}
	}
}

func TestScheduledJobValidation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "scheduler", false)
	for _, tc := range []struct {
		name   string
		change func(m map[string]any)
		field  string
	}{
		{"blank name", func(m map[string]any) { m["name"] = "  " }, "name"},
		{"4-field cron", func(m map[string]any) { m["cron_expression"] = "0 9 * *" }, "cron_expression"},
		{"6-field cron", func(m map[string]any) { m["cron_expression"] = "0 0 9 * * *" }, "cron_expression"},
		{"descriptor", func(m map[string]any) { m["cron_expression"] = "@hourly" }, "cron_expression"},
		{"bad minute", func(m map[string]any) { m["cron_expression"] = "75 9 * * *" }, "cron_expression"},
		{"never fires", func(m map[string]any) { m["cron_expression"] = "0 0 30 2 *" }, "cron_expression"},
		{"Local zone", func(m map[string]any) { m["timezone"] = "Local" }, "timezone"},
		{"unknown zone", func(m map[string]any) { m["timezone"] = "Europe/Atlantis" }, "timezone"},
		{"unknown queue", func(m map[string]any) { m["queue"] = "nope" }, "queue"},
		{"bad recipient", func(m map[string]any) {
			m["email_template"] = emailReq(func(e map[string]any) { e["to"] = []any{map[string]any{"email": "not-an-address"}} })
		}, "email_template.to[0].email"},
		{"no body", func(m map[string]any) {
			m["email_template"] = emailReq(func(e map[string]any) { delete(e, "text") })
		}, "email_template.html"},
		{"reserved header", func(m map[string]any) {
			m["email_template"] = emailReq(func(e map[string]any) { e["headers"] = map[string]any{"Bcc": "x@example.com"} })
		}, "email_template.headers.Bcc"},
		{"absolute schedule", func(m map[string]any) {
			m["email_template"] = emailReq(func(e map[string]any) { e["scheduled_at"] = time.Now().Add(time.Hour) })
		}, "email_template.scheduled_at"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := b.do(t, http.MethodPost, "/v1/scheduled-jobs", key, scheduledJobReq(tc.change), nil)
			expectError(t, resp, body, http.StatusUnprocessableEntity, "", tc.field)
		})
	}
	if n := b.count(t, `SELECT count(*) FROM scheduled_jobs`); n != 0 {
		t.Errorf("%d jobs stored by refused requests", n)
	}

	j := b.createScheduledJob(t, key, scheduledJobReq(nil))
	for _, tc := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"timezone": "Mars/Olympus"}, "timezone"},
		{map[string]any{"cron_expression": "every day"}, "cron_expression"},
		{map[string]any{"queue": "nope"}, "queue"},
		{map[string]any{"name": "  "}, "name"},
		{map[string]any{"email_template": emailReq(func(e map[string]any) { e["subject"] = " " })}, "email_template.subject"},
	} {
		resp, body := b.do(t, http.MethodPatch, "/v1/scheduled-jobs/"+j.ID.String(), key, tc.body, nil)
		expectError(t, resp, body, http.StatusUnprocessableEntity, "", tc.field)
	}
	resp, body := b.do(t, http.MethodGet, "/v1/scheduled-jobs/"+j.ID.String(), key, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	if got := decode[scheduledJobView](t, body); got.Timezone != "Europe/Berlin" || got.CronExpression != "0 9 * * *" {
		t.Errorf("refused updates changed the job: %+v", got)
	}
}

func TestRunScheduledJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appID, key := b.createApp(t, "scheduler", false)
	j := b.createScheduledJob(t, key, scheduledJobReq(func(m map[string]any) {
		m["is_active"] = false // runs on demand even when switched off
		m["email_template"] = emailReq(func(e map[string]any) {
			e["subject"] = "Weekly digest"
			e["priority"] = 8
			e["reply_to"] = map[string]any{"email": "help@example.com", "name": "Help, Desk"}
			e["metadata"] = map[string]any{"kind": "digest"}
		})
	}))

	resp, body := b.do(t, http.MethodPost, "/v1/scheduled-jobs/"+j.ID.String()+"/run", key, nil,
		map[string]string{"Idempotency-Key": "run-1"})
	expectStatus(t, resp, body, http.StatusAccepted)
	ran := decode[accepted](t, body)
	if ran.Status != "queued" || ran.Queue != "default" {
		t.Errorf("run = %+v, want a queued email in default", ran)
	}
	resp, body = b.do(t, http.MethodGet, "/v1/emails/"+ran.ID.String(), key, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	e := decode[struct {
		Subject  string `json:"subject"`
		Priority int    `json:"priority"`
		ReplyTo  struct {
			Email, Name string
		} `json:"reply_to"`
		Metadata map[string]any `json:"metadata"`
	}](t, body)
	if e.Subject != "Weekly digest" || e.Priority != 8 || e.ReplyTo.Email != "help@example.com" ||
		e.ReplyTo.Name != "Help, Desk" || e.Metadata["kind"] != "digest" {
		t.Errorf("queued email = %+v, want the template's fields", e)
	}

	// Replayed with the same key: the same email, no second one.
	resp, body = b.do(t, http.MethodPost, "/v1/scheduled-jobs/"+j.ID.String()+"/run", key, nil,
		map[string]string{"Idempotency-Key": "run-1"})
	expectStatus(t, resp, body, http.StatusAccepted)
	if again := decode[accepted](t, body); again.ID != ran.ID {
		t.Errorf("replay queued %s, want %s", again.ID, ran.ID)
	}
	if n := b.count(t, `SELECT count(*) FROM emails WHERE app_id = $1`, appID); n != 1 {
		t.Errorf("%d emails, want 1", n)
	}
	resp, body = b.do(t, http.MethodGet, "/v1/scheduled-jobs/"+j.ID.String(), key, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	if got := decode[scheduledJobView](t, body); got.NextRunAt != nil || got.LastRunAt != nil {
		t.Errorf("run moved the schedule: %+v", got)
	}

	// A draining queue refuses it, like POST /v1/emails.
	b.exec(t, `UPDATE queues SET is_draining = true WHERE app_id = $1`, appID)
	resp, body = b.do(t, http.MethodPost, "/v1/scheduled-jobs/"+j.ID.String()+"/run", key, nil, nil)
	expectError(t, resp, body, http.StatusConflict, "queue_draining", noField)
	resp, body = b.do(t, http.MethodPost, "/v1/scheduled-jobs/"+uuid.Must(uuid.NewV7()).String()+"/run", key, nil, nil)
	expectError(t, resp, body, http.StatusNotFound, "not_found", noField)
}
