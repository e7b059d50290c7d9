package handlers_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
)

type emailView struct {
	ID            uuid.UUID  `json:"id"`
	Status        string     `json:"status"`
	RetryCount    int        `json:"retry_count"`
	LastError     *string    `json:"last_error"`
	ExpiresAt     *time.Time `json:"expires_at"`
	NextAttemptAt *time.Time `json:"next_attempt_at"`
	WaitingReason string     `json:"waiting_reason"`
}

type eventView struct {
	Type string         `json:"type"`
	Data map[string]any `json:"data"`
}

func (b *bundle) jobOf(t *testing.T, emailID uuid.UUID) (int64, string) {
	t.Helper()
	var id int64
	var state string
	err := b.pool.QueryRow(t.Context(),
		`SELECT j.id, j.state::text FROM emails e JOIN river_job j ON j.id = e.job_id WHERE e.id = $1`, emailID).Scan(&id, &state)
	if err != nil {
		t.Fatalf("reading job of email %s: %v", emailID, err)
	}
	return id, state
}

func (b *bundle) eventsOf(t *testing.T, key string, emailID uuid.UUID) []eventView {
	t.Helper()
	resp, body := b.do(t, http.MethodGet, "/v1/emails/"+emailID.String()+"/events", key, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	return decode[struct {
		Data []eventView `json:"data"`
	}](t, body).Data
}

func types(evs []eventView) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Type
	}
	return out
}

func TestCancelEmail(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "cancel", false)
	_, otherKey := b.createApp(t, "other", false)

	queued := b.send(t, key, emailReq(nil))
	later := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	scheduled := b.send(t, key, emailReq(func(m map[string]any) { m["scheduled_at"] = later }))

	// Another app's key cannot see it, let alone cancel it.
	resp, body := b.do(t, http.MethodDelete, "/v1/emails/"+queued.ID.String(), otherKey, nil, nil)
	expectError(t, resp, body, http.StatusNotFound, "not_found", noField)

	for _, e := range []accepted{queued, scheduled} {
		resp, body := b.do(t, http.MethodDelete, "/v1/emails/"+e.ID.String(), key, nil, nil)
		expectStatus(t, resp, body, http.StatusOK)
		got := decode[emailView](t, body)
		if got.Status != "cancelled" || got.WaitingReason != "" || got.NextAttemptAt != nil {
			t.Errorf("cancelled email = %+v, want status cancelled and no waiting reason", got)
		}
		if evs := types(b.eventsOf(t, key, e.ID)); !slices.Equal(evs, []string{"queued", "cancelled"}) {
			t.Errorf("events = %v, want [queued cancelled]", evs)
		}
		// The send job is cancelled with it, not left to run.
		if _, state := b.jobOf(t, e.ID); state != "cancelled" {
			t.Errorf("job state = %s, want cancelled", state)
		}
		// Cancelling twice is a state conflict.
		resp, body = b.do(t, http.MethodDelete, "/v1/emails/"+e.ID.String(), key, nil, nil)
		expectError(t, resp, body, http.StatusConflict, "invalid_state", noField)
	}

	// Once a worker has it, or it is out, it cannot be cancelled.
	for _, status := range []string{"processing", "sent", "failed"} {
		e := b.send(t, key, emailReq(nil))
		b.exec(t, `UPDATE emails SET status = $2 WHERE id = $1`, e.ID, status)
		resp, body := b.do(t, http.MethodDelete, "/v1/emails/"+e.ID.String(), key, nil, nil)
		expectError(t, resp, body, http.StatusConflict, "invalid_state", noField)
		if n := b.count(t, `SELECT count(*) FROM emails WHERE id = $1 AND status = $2`, e.ID, status); n != 1 {
			t.Errorf("a refused cancel changed the %s email", status)
		}
		if _, state := b.jobOf(t, e.ID); state == "cancelled" {
			t.Errorf("a refused cancel cancelled the job of the %s email", status)
		}
	}

	resp, body = b.do(t, http.MethodDelete, "/v1/emails/"+uuid.Must(uuid.NewV7()).String(), key, nil, nil)
	expectError(t, resp, body, http.StatusNotFound, "not_found", noField)
}

func TestRetryEmail(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "retry", false)
	_, otherKey := b.createApp(t, "other", false)

	failed := b.send(t, key, emailReq(nil))
	oldJob, _ := b.jobOf(t, failed.ID)
	b.exec(t, `UPDATE emails SET status = 'failed', last_error = '550 5.1.1 no such user', retry_count = 4 WHERE id = $1`, failed.ID)
	b.exec(t, `UPDATE river_job SET state = 'cancelled', finalized_at = now() WHERE id = $1`, oldJob)

	resp, body := b.do(t, http.MethodPost, "/v1/emails/"+failed.ID.String()+"/retry", otherKey, nil, nil)
	expectError(t, resp, body, http.StatusNotFound, "not_found", noField)

	resp, body = b.do(t, http.MethodPost, "/v1/emails/"+failed.ID.String()+"/retry", key, nil,
		map[string]string{"Idempotency-Key": "retry-1"})
	expectStatus(t, resp, body, http.StatusAccepted)
	got := decode[emailView](t, body)
	if got.Status != "queued" || got.RetryCount != 0 || got.LastError != nil {
		t.Errorf("retried email = %+v, want queued, retry_count 0, no last_error", got)
	}
	newJob, state := b.jobOf(t, failed.ID)
	if newJob == oldJob || state != "available" {
		t.Errorf("job after retry = %d (%s), want a new available job (old %d)", newJob, state, oldJob)
	}
	evs := b.eventsOf(t, key, failed.ID)
	if ts := types(evs); !slices.Equal(ts, []string{"queued", "retried"}) {
		t.Fatalf("events = %v, want [queued retried]", ts)
	}
	if d := evs[1].Data; d["previous_status"] != "failed" || d["last_error"] != "550 5.1.1 no such user" {
		t.Errorf("retried event data = %v, want the previous status and error", d)
	}

	// The same key replays the first answer; without it, a queued email is
	// a state conflict.
	resp, body2 := b.do(t, http.MethodPost, "/v1/emails/"+failed.ID.String()+"/retry", key, nil,
		map[string]string{"Idempotency-Key": "retry-1"})
	expectStatus(t, resp, body2, http.StatusAccepted)
	if replay := decode[emailView](t, body2); replay.ID != got.ID || replay.Status != "queued" {
		t.Errorf("replay = %+v, want the first answer", replay)
	}
	if n := b.count(t, `SELECT count(*) FROM river_job WHERE args->>'email_id' = $1`, failed.ID.String()); n != 2 {
		t.Errorf("%d jobs for the email, want 2 (original and one retry)", n)
	}
	resp, body = b.do(t, http.MethodPost, "/v1/emails/"+failed.ID.String()+"/retry", key, nil, nil)
	expectError(t, resp, body, http.StatusConflict, "invalid_state", noField)

	// An expired email is queued again without its past expiry, which would
	// expire it at once.
	expired := b.send(t, key, emailReq(func(m map[string]any) { m["expires_at"] = time.Now().Add(time.Hour) }))
	b.exec(t, `UPDATE emails SET status = 'expired', expires_at = now() - interval '1 minute' WHERE id = $1`, expired.ID)
	resp, body = b.do(t, http.MethodPost, "/v1/emails/"+expired.ID.String()+"/retry", key, nil, nil)
	expectStatus(t, resp, body, http.StatusAccepted)
	if got := decode[emailView](t, body); got.Status != "queued" || got.ExpiresAt != nil {
		t.Errorf("retried expired email = %+v, want queued without expires_at", got)
	}

	for _, status := range []string{"queued", "processing", "sent", "delivered", "cancelled", "bounced"} {
		e := b.send(t, key, emailReq(nil))
		b.exec(t, `UPDATE emails SET status = $2 WHERE id = $1`, e.ID, status)
		resp, body := b.do(t, http.MethodPost, "/v1/emails/"+e.ID.String()+"/retry", key, nil, nil)
		expectError(t, resp, body, http.StatusConflict, "invalid_state", noField)
	}
}

// GET /v1/emails?status=failed is the dead-letter list.
func TestListDeadLetters(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "dead letters", false)
	var dead []uuid.UUID
	for i := range 5 {
		e := b.send(t, key, emailReq(nil))
		if i%2 == 0 {
			b.exec(t, `UPDATE emails SET status = 'failed', last_error = 'boom' WHERE id = $1`, e.ID)
			dead = append(dead, e.ID)
		}
	}
	resp, body := b.do(t, http.MethodGet, "/v1/emails?status=failed", key, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	var list struct {
		Data []emailView `json:"data"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	var got []uuid.UUID
	for _, e := range list.Data {
		if e.Status != "failed" || e.LastError == nil || *e.LastError != "boom" {
			t.Errorf("listed %+v, want failed with its last_error", e)
		}
		got = append(got, e.ID)
	}
	slices.Reverse(got) // newest first
	if !slices.Equal(got, dead) {
		t.Errorf("dead letters = %v, want %v", got, dead)
	}
}
