package handlers_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/oas"
)

type addressJSON struct {
	Email string `json:"email"`
	Name  string `json:"name"`
}

type emailJSON struct {
	ID        uuid.UUID         `json:"id"`
	Status    string            `json:"status"`
	Queue     string            `json:"queue"`
	QueueID   uuid.UUID         `json:"queue_id"`
	MessageID string            `json:"message_id"`
	From      addressJSON       `json:"from"`
	To        []addressJSON     `json:"to"`
	Cc        []addressJSON     `json:"cc"`
	ReplyTo   *addressJSON      `json:"reply_to"`
	Subject   string            `json:"subject"`
	HTML      *string           `json:"html"`
	Text      *string           `json:"text"`
	Headers   map[string]string `json:"headers"`
	Metadata  json.RawMessage   `json:"metadata"`
	Priority  int               `json:"priority"`
	CreatedAt time.Time         `json:"created_at"`
}

type emailList struct {
	Data    []emailJSON `json:"data"`
	HasMore bool        `json:"has_more"`
	Cursor  *string     `json:"cursor"`
}

type queueJSON struct {
	ID       uuid.UUID `json:"id"`
	Name     string    `json:"name"`
	Priority int       `json:"priority"`
}

type jobRow struct {
	Kind        string
	Queue       string
	State       string
	EmailID     string
	ScheduledAt time.Time
	MaxAttempts int
}

func (b *bundle) jobsOf(t *testing.T, emailID uuid.UUID) []jobRow {
	t.Helper()
	rows, err := b.pool.Query(t.Context(), `
		SELECT kind, queue, state::text, args->>'email_id', scheduled_at, max_attempts
		FROM river_job WHERE args->>'email_id' = $1`, emailID.String())
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []jobRow
	for rows.Next() {
		var j jobRow
		if err := rows.Scan(&j.Kind, &j.Queue, &j.State, &j.EmailID, &j.ScheduledAt, &j.MaxAttempts); err != nil {
			t.Fatal(err)
		}
		out = append(out, j)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCreateEmail(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appID, key := b.createApp(t, "app", false)

	req := emailReq(func(m map[string]any) {
		m["html"] = "<p>Hi <b>there</b></p>"
		m["cc"] = []any{map[string]any{"email": "cc@example.org", "name": "C C"}}
		m["reply_to"] = map[string]any{"email": "reply@example.com", "name": "Støre, Inc."}
		m["headers"] = map[string]any{"X-Campaign": "spring", "List-Id": "<news.example.com>"}
		m["metadata"] = map[string]any{"order": 42, "tags": []any{"a", "b"}, "nested": map[string]any{"k": nil}}
	})
	resp, body := b.do(t, http.MethodPost, "/v1/emails", key, req, nil)
	expectStatus(t, resp, body, http.StatusAccepted)
	a := decode[accepted](t, body)
	if a.ID.Version() != 7 {
		t.Errorf("id %s is UUIDv%d, want v7", a.ID, a.ID.Version())
	}
	if a.Status != "queued" || a.Queue != "default" || a.MessageID != a.ID.String()+"@example.com" {
		t.Errorf("accepted = %+v", a)
	}

	if n := b.count(t, "SELECT count(*) FROM emails WHERE id = $1 AND app_id = $2 AND status = 'queued' AND priority = 5", a.ID, appID); n != 1 {
		t.Errorf("email rows = %d", n)
	}
	if n := b.count(t, "SELECT count(*) FROM email_events WHERE email_id = $1 AND event_type = 'queued'", a.ID); n != 1 {
		t.Errorf("queued events = %d", n)
	}
	js := b.jobsOf(t, a.ID)
	if len(js) != 1 {
		t.Fatalf("river jobs = %d, want 1", len(js))
	}
	if j := js[0]; j.Kind != "send_email" || j.Queue != "normal" || j.State != "available" || j.MaxAttempts != 6 {
		t.Errorf("job = %+v", j)
	}
	if n := b.count(t, "SELECT count(*) FROM emails e JOIN river_job j ON j.id = e.job_id WHERE e.id = $1", a.ID); n != 1 {
		t.Errorf("emails.job_id does not point at the job")
	}

	resp, body = b.do(t, http.MethodGet, "/v1/emails/"+a.ID.String(), key, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	e := decode[emailJSON](t, body)
	if e.ID != a.ID || e.Status != "queued" || e.Queue != "default" || e.Subject != "Hello" || e.Priority != 5 {
		t.Errorf("email = %+v", e)
	}
	if e.HTML == nil || *e.HTML != "<p>Hi <b>there</b></p>" || e.Text == nil || *e.Text != "Hi there" {
		t.Errorf("bodies = %v %v", e.HTML, e.Text)
	}
	if e.From != (addressJSON{"sender@example.com", "Sender"}) {
		t.Errorf("from = %+v", e.From)
	}
	if e.ReplyTo == nil || *e.ReplyTo != (addressJSON{"reply@example.com", "Støre, Inc."}) {
		t.Errorf("reply_to = %+v", e.ReplyTo)
	}
	if len(e.To) != 1 || e.To[0].Email != "rcpt@example.com" || len(e.Cc) != 1 || e.Cc[0] != (addressJSON{"cc@example.org", "C C"}) {
		t.Errorf("to = %+v, cc = %+v", e.To, e.Cc)
	}
	if e.Headers["X-Campaign"] != "spring" || e.Headers["List-Id"] != "<news.example.com>" || len(e.Headers) != 2 {
		t.Errorf("headers = %v", e.Headers)
	}
	var md map[string]any
	if err := json.Unmarshal(e.Metadata, &md); err != nil || md["order"] != float64(42) || len(md["tags"].([]any)) != 2 {
		t.Errorf("metadata = %s", e.Metadata)
	}
}

func TestCreateEmailLanes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "app", false)
	resp, body := b.do(t, http.MethodPost, "/v1/queues", key, map[string]any{"name": "bulk-news", "priority": 2, "max_retries": 0}, nil)
	expectStatus(t, resp, body, http.StatusCreated)

	for _, tc := range []struct {
		name      string
		change    func(m map[string]any)
		lane      string
		attempts  int
		queueName string
	}{
		{"default queue", nil, "normal", 6, "default"},
		{"priority 10", func(m map[string]any) { m["priority"] = 10 }, "critical", 6, "default"},
		{"priority 9", func(m map[string]any) { m["priority"] = 9 }, "critical", 6, "default"},
		{"priority 7", func(m map[string]any) { m["priority"] = 7 }, "high", 6, "default"},
		{"priority 1", func(m map[string]any) { m["priority"] = 1 }, "bulk", 6, "default"},
		{"priority 2 queue", func(m map[string]any) { m["queue"] = "bulk-news" }, "bulk", 1, "bulk-news"},
		{"queue overridden", func(m map[string]any) { m["queue"] = "bulk-news"; m["priority"] = 8 }, "high", 1, "bulk-news"},
	} {
		a := b.send(t, key, emailReq(tc.change))
		t.Run(tc.name, func(t *testing.T) {
			if a.Queue != tc.queueName {
				t.Errorf("queue = %q, want %q", a.Queue, tc.queueName)
			}
			js := b.jobsOf(t, a.ID)
			if len(js) != 1 || js[0].Queue != tc.lane || js[0].MaxAttempts != tc.attempts {
				t.Errorf("jobs = %+v, want one in %s with %d attempts", js, tc.lane, tc.attempts)
			}
		})
	}
}

func TestCreateEmailScheduled(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "app", false)
	at := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	a := b.send(t, key, emailReq(func(m map[string]any) {
		m["scheduled_at"] = at.Format(time.RFC3339)
		m["expires_at"] = at.Add(time.Hour).Format(time.RFC3339)
	}))
	if a.ScheduledAt == nil || !a.ScheduledAt.Equal(at) {
		t.Errorf("scheduled_at = %v, want %v", a.ScheduledAt, at)
	}
	js := b.jobsOf(t, a.ID)
	if len(js) != 1 || js[0].State != "scheduled" || !js[0].ScheduledAt.Equal(at) {
		t.Errorf("jobs = %+v, want one scheduled at %v", js, at)
	}
	resp, body := b.do(t, http.MethodGet, "/v1/emails/"+a.ID.String(), key, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	var e struct {
		ScheduledAt   time.Time `json:"scheduled_at"`
		ExpiresAt     time.Time `json:"expires_at"`
		NextAttemptAt time.Time `json:"next_attempt_at"`
		WaitingReason string    `json:"waiting_reason"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatal(err)
	}
	if !e.ScheduledAt.Equal(at) || !e.ExpiresAt.Equal(at.Add(time.Hour)) || !e.NextAttemptAt.Equal(at) ||
		!strings.HasPrefix(e.WaitingReason, "scheduled for") {
		t.Errorf("email = %s", body)
	}
}

func TestGetEmailNotFound(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "app", false)
	b.send(t, key, emailReq(nil))
	for _, id := range []string{uuid.Must(uuid.NewV7()).String(), uuid.NewString(), uuid.Nil.String()} {
		resp, body := b.do(t, http.MethodGet, "/v1/emails/"+id, key, nil, nil)
		expectError(t, resp, body, http.StatusNotFound, "not_found", "")
		resp, body = b.do(t, http.MethodGet, "/v1/emails/"+id+"/events", key, nil, nil)
		expectError(t, resp, body, http.StatusNotFound, "not_found", "")
		resp, body = b.do(t, http.MethodGet, "/v1/queues/"+id, key, nil, nil)
		expectError(t, resp, body, http.StatusNotFound, "not_found", "")
	}
	resp, body := b.do(t, http.MethodGet, "/v1/emails/not-a-uuid", key, nil, nil)
	expectError(t, resp, body, http.StatusBadRequest, "invalid_request", "emailId")
}

func TestCreateEmailGeneratedClient(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "app", false)
	c := b.oasClient(t, key)
	a, err := c.CreateEmail(t.Context(), &oas.EmailRequest{
		From:    oas.Address{Email: "a@example.com"},
		To:      []oas.Address{{Email: "b@example.com", Name: oas.NewOptString("B")}},
		Subject: "typed", Text: oas.NewOptString("body"),
	}, oas.CreateEmailParams{})
	if err != nil {
		t.Fatal(err)
	}
	e, err := c.GetEmail(t.Context(), oas.GetEmailParams{EmailId: a.ID})
	if err != nil {
		t.Fatal(err)
	}
	if e.Subject != "typed" || e.Text.Or("") != "body" || e.To[0].Name.Or("") != "B" || e.From.Name.Set {
		t.Errorf("email = %+v", e)
	}
	ev, err := c.ListEmailEvents(t.Context(), oas.ListEmailEventsParams{EmailId: a.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Data) != 1 || ev.Data[0].Type != oas.EmailEventTypeQueued || ev.Data[0].EmailID != a.ID || ev.HasMore {
		t.Errorf("events = %+v", ev)
	}
	_, err = c.GetEmail(t.Context(), oas.GetEmailParams{EmailId: uuid.New()})
	if status, detail := oasStatus(t, err); status != http.StatusNotFound || detail.Code != "not_found" {
		t.Errorf("unknown email: %d %+v", status, detail)
	}
}

func TestEmailEvents(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "app", false)
	a := b.send(t, key, emailReq(nil))
	resp, body := b.do(t, http.MethodGet, "/v1/emails/"+a.ID.String()+"/events", key, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	var ev struct {
		Data []struct {
			Type    string    `json:"type"`
			EmailID uuid.UUID `json:"email_id"`
		} `json:"data"`
		HasMore bool `json:"has_more"`
	}
	if err := json.Unmarshal(body, &ev); err != nil {
		t.Fatal(err)
	}
	if len(ev.Data) == 0 || ev.Data[0].Type != "queued" || ev.Data[0].EmailID != a.ID || ev.HasMore {
		t.Errorf("events = %s", body)
	}
	resp, body = b.do(t, http.MethodGet, "/v1/emails/"+a.ID.String()+"/events?cursor=abc.def", key, nil, nil)
	expectError(t, resp, body, http.StatusBadRequest, "invalid_cursor", "cursor")
}

// POST /v1/emails reads queues through a cache, but every change to a queue
// shows at once, even one made behind the API's back: the accept checks the
// queue's version in its transaction and redoes the request if it moved.
func TestCreateEmailSeesQueueChanges(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "app", false)
	q := b.createQueue(t, key, map[string]any{"name": "cached", "priority": 5})
	inQueue := func(m map[string]any) { m["queue"] = "cached" }
	priorityOf := func(id uuid.UUID) int {
		return b.count(t, "SELECT priority FROM emails WHERE id = $1", id)
	}

	if a := b.send(t, key, emailReq(inQueue)); priorityOf(a.ID) != 5 {
		t.Errorf("first email priority %d, want 5", priorityOf(a.ID))
	}
	b.exec(t, "UPDATE queues SET priority = 9, max_retries = 1 WHERE id = $1", q.ID)
	a := b.send(t, key, emailReq(inQueue))
	if priorityOf(a.ID) != 9 {
		t.Errorf("after the update: priority %d, want 9", priorityOf(a.ID))
	}
	if js := b.jobsOf(t, a.ID); len(js) != 1 || js[0].Queue != "critical" || js[0].MaxAttempts != 2 {
		t.Errorf("after the update: jobs %+v, want one in critical with 2 attempts", js)
	}

	b.exec(t, "UPDATE queues SET is_draining = true WHERE id = $1", q.ID)
	resp, body := b.do(t, http.MethodPost, "/v1/emails", key, emailReq(inQueue), nil)
	expectError(t, resp, body, http.StatusConflict, "queue_draining", noField)
	b.exec(t, "UPDATE queues SET is_draining = false WHERE id = $1", q.ID)
	b.send(t, key, emailReq(inQueue))

	b.exec(t, "UPDATE queues SET deleted_at = now() WHERE id = $1", q.ID)
	resp, body = b.do(t, http.MethodPost, "/v1/emails", key, emailReq(inQueue), nil)
	expectError(t, resp, body, http.StatusUnprocessableEntity, "validation_failed", "queue")
	if n := b.count(t, "SELECT count(*) FROM emails WHERE queue_id = $1", q.ID); n != 3 {
		t.Errorf("%d emails in the queue, want 3", n)
	}
}
