package handlers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/mailqueue/mailqueue/bench/smtpsink"
	"github.com/mailqueue/mailqueue/jobs"
	"github.com/mailqueue/mailqueue/mail"
	"github.com/mailqueue/mailqueue/testenv"
)

type batchAccepted struct {
	BatchID  uuid.UUID `json:"batch_id"`
	Accepted int       `json:"accepted"`
	Rejected []struct {
		Index int `json:"index"`
		Error struct {
			Code      string  `json:"code"`
			Message   string  `json:"message"`
			Field     *string `json:"field"`
			RequestID string  `json:"request_id"`
		} `json:"error"`
	} `json:"rejected"`
	Emails []struct {
		Index int       `json:"index"`
		ID    uuid.UUID `json:"id"`
	} `json:"emails"`
}

type batchProgress struct {
	BatchID    uuid.UUID `json:"batch_id"`
	Total      int       `json:"total"`
	Queued     int       `json:"queued"`
	Processing int       `json:"processing"`
	Sent       int       `json:"sent"`
	Failed     int       `json:"failed"`
	Cancelled  int       `json:"cancelled"`
	CreatedAt  time.Time `json:"created_at"`
}

// batchReq is a batch of n recipients user<i>@example.com sharing a
// personalized subject and bodies.
func batchReq(n int, change func(m map[string]any)) map[string]any {
	emails := make([]any, n)
	for i := range emails {
		emails[i] = map[string]any{
			"to":               map[string]any{"email": fmt.Sprintf("user%d@example.com", i)},
			"personalizations": map[string]any{"first_name": fmt.Sprintf("User %d", i)},
		}
	}
	m := map[string]any{
		"from":             map[string]any{"email": "news@example.com", "name": "News"},
		"subject":          "Hello {{first_name}}",
		"html":             "<p>Hi {{first_name}} from {{company}}</p>",
		"text":             "Hi {{first_name}} from {{company}}",
		"personalizations": map[string]any{"company": "ACME"},
		"emails":           emails,
	}
	if change != nil {
		change(m)
	}
	return m
}

func (b *bundle) batchProgress(t *testing.T, key string, id uuid.UUID) batchProgress {
	t.Helper()
	resp, body := b.do(t, http.MethodGet, "/v1/emails/batch/"+id.String(), key, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	return decode[batchProgress](t, body)
}

func TestCreateEmailBatchLarge(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appID, key := b.createAppWith(t, map[string]any{"name": "bulk", "daily_limit": 20000})
	const n = 10000

	resp, body := b.do(t, http.MethodPost, "/v1/emails/batch", key, batchReq(n, nil), nil)
	expectStatus(t, resp, body, http.StatusAccepted)
	a := decode[batchAccepted](t, body)
	if a.BatchID.Version() != 7 || a.Accepted != n || len(a.Rejected) != 0 || len(a.Emails) != n {
		t.Fatalf("batch_id %s accepted %d rejected %d emails %d", a.BatchID, a.Accepted, len(a.Rejected), len(a.Emails))
	}
	seen := map[uuid.UUID]bool{}
	for i, e := range a.Emails {
		if e.Index != i || e.ID.Version() != 7 || seen[e.ID] {
			t.Fatalf("emails[%d] = %+v", i, e)
		}
		seen[e.ID] = true
	}

	// Every email has its row, its queued event and its job, linked by job_id.
	if c := b.count(t, `SELECT count(*) FROM emails e JOIN river_job j ON j.id = e.job_id
		WHERE e.app_id = $1 AND e.batch_id = $2 AND e.status = 'queued' AND j.kind = 'send_email'
		  AND j.args->>'email_id' = e.id::text AND j.queue = 'normal'`, appID, a.BatchID); c != n {
		t.Errorf("emails with their own job = %d, want %d", c, n)
	}
	if c := b.count(t, `SELECT count(*) FROM email_events v JOIN emails e ON e.id = v.email_id
		WHERE e.batch_id = $1 AND v.event_type = 'queued'`, a.BatchID); c != n {
		t.Errorf("queued events = %d, want %d", c, n)
	}
	if c := b.count(t, "SELECT count::int FROM app_usage WHERE app_id = $1 AND period = 'day'", appID); c != n {
		t.Errorf("daily usage = %d, want %d", c, n)
	}
	// Rendered per recipient.
	last := a.Emails[n-1].ID
	resp, body = b.do(t, http.MethodGet, "/v1/emails/"+last.String(), key, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	e := decode[emailJSON](t, body)
	if e.Subject != fmt.Sprintf("Hello User %d", n-1) || deref(e.HTML) != fmt.Sprintf("<p>Hi User %d from ACME</p>", n-1) ||
		len(e.To) != 1 || e.To[0].Email != fmt.Sprintf("user%d@example.com", n-1) {
		t.Errorf("last email = %+v html %q", e, deref(e.HTML))
	}

	p := b.batchProgress(t, key, a.BatchID)
	if p.BatchID != a.BatchID || p.Total != n || p.Queued != n || p.Sent+p.Failed+p.Processing+p.Cancelled != 0 {
		t.Errorf("progress = %+v", p)
	}
	if d := time.Since(p.CreatedAt); d < 0 || d > time.Minute {
		t.Errorf("created_at = %v", p.CreatedAt)
	}

	// The list filters by batch, page by page.
	resp, body = b.do(t, http.MethodGet, "/v1/emails?limit=100&batch_id="+a.BatchID.String(), key, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	l := decode[emailList](t, body)
	if len(l.Data) != 100 || !l.HasMore || l.Cursor == nil {
		t.Fatalf("first page: %d emails, has_more %v", len(l.Data), l.HasMore)
	}
	for _, e := range l.Data {
		if !seen[e.ID] {
			t.Errorf("listed email %s is not in the batch", e.ID)
		}
	}
	b.send(t, key, emailReq(nil)) // not in the batch
	resp, body = b.do(t, http.MethodGet, "/v1/emails?limit=100&batch_id="+a.BatchID.String()+"&cursor="+*l.Cursor, key, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	if l2 := decode[emailList](t, body); len(l2.Data) != 100 || !seen[l2.Data[0].ID] || l2.Data[0].ID == l.Data[99].ID {
		t.Errorf("second page: %d emails", len(l2.Data))
	}

	// Large batches are rendered in runs, one per core; rejections at the
	// ends of the runs still come back in order, and every accepted email
	// is its own entry's rendering.
	const m = 3000
	bad := []int{2, m/2 - 1, m / 2, m - 1}
	resp, body = b.do(t, http.MethodPost, "/v1/emails/batch", key, batchReq(m, func(req map[string]any) {
		for _, i := range bad {
			req["emails"].([]any)[i] = map[string]any{"to": map[string]any{"email": fmt.Sprintf("bad%d@", i)}}
		}
	}), nil)
	expectStatus(t, resp, body, http.StatusAccepted)
	a = decode[batchAccepted](t, body)
	if a.Accepted != m-len(bad) || len(a.Emails) != m-len(bad) || len(a.Rejected) != len(bad) {
		t.Fatalf("accepted %d, emails %d, rejected %d", a.Accepted, len(a.Emails), len(a.Rejected))
	}
	for k, r := range a.Rejected {
		if r.Index != bad[k] || deref(r.Error.Field) != fmt.Sprintf("emails[%d].to.email", bad[k]) {
			t.Errorf("rejected[%d] = index %d field %q, want %d", k, r.Index, deref(r.Error.Field), bad[k])
		}
	}
	want := 0
	for k, e := range a.Emails {
		for slices.Contains(bad, want) {
			want++
		}
		if e.Index != want {
			t.Fatalf("emails[%d].index = %d, want %d", k, e.Index, want)
		}
		want++
	}
	if c := b.count(t, `SELECT count(*) FROM emails WHERE batch_id = $1
		AND subject = 'Hello User ' || substr(to_addresses->0->>'email', 5, strpos(to_addresses->0->>'email', '@') - 5)`,
		a.BatchID); c != m-len(bad) {
		t.Errorf("emails rendered for their own recipient = %d, want %d", c, m-len(bad))
	}
}

func TestCreateEmailBatchEntries(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appID, key := b.createApp(t, "app", false)

	req := batchReq(6, func(m map[string]any) {
		m["metadata"] = map[string]any{"campaign": "spring", "tier": "free"}
		m["headers"] = map[string]any{"X-Campaign": "spring"}
		m["priority"] = 2
		es := m["emails"].([]any)
		es[1] = map[string]any{"to": map[string]any{"email": "not an address"}}
		es[2].(map[string]any)["cc"] = []any{map[string]any{"email": "ok@example.com"}, map[string]any{"email": "bad@"}}
		es[3] = map[string]any{
			"to":               map[string]any{"email": "vip@example.com", "name": "V I P"},
			"personalizations": map[string]any{"company": "<Initech>", "first_name": "Vera"},
			"metadata":         map[string]any{"tier": "gold"},
		}
		many := make([]any, 50)
		for i := range many {
			many[i] = map[string]any{"email": fmt.Sprintf("cc%d@example.com", i)}
		}
		es[4].(map[string]any)["bcc"] = many
		es[5] = map[string]any{"to": map[string]any{"email": "nameless@example.com"}} // no first_name
	})
	resp, body := b.do(t, http.MethodPost, "/v1/emails/batch", key, req, nil)
	expectStatus(t, resp, body, http.StatusAccepted)
	a := decode[batchAccepted](t, body)
	if a.Accepted != 3 || len(a.Emails) != 3 || a.Emails[0].Index != 0 || a.Emails[1].Index != 3 || a.Emails[2].Index != 5 {
		t.Fatalf("accepted = %d, emails = %+v", a.Accepted, a.Emails)
	}
	wantRejected := map[int]string{1: "emails[1].to.email", 2: "emails[2].cc[1].email", 4: "emails[4]"}
	if len(a.Rejected) != len(wantRejected) {
		t.Fatalf("rejected = %+v", a.Rejected)
	}
	for _, r := range a.Rejected {
		if r.Error.Field == nil || *r.Error.Field != wantRejected[r.Index] || r.Error.Code != "validation_failed" ||
			r.Error.Message == "" || r.Error.RequestID != resp.Header.Get("X-Request-Id") {
			t.Errorf("rejected[%d] = %+v (field %v)", r.Index, r.Error, deref(r.Error.Field))
		}
	}
	if c := b.count(t, "SELECT count(*) FROM emails WHERE app_id = $1 AND batch_id = $2 AND priority = 2", appID, a.BatchID); c != 3 {
		t.Errorf("stored = %d, want 3", c)
	}

	resp, body = b.do(t, http.MethodGet, "/v1/emails/"+a.Emails[1].ID.String(), key, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	vip := decode[emailJSON](t, body)
	if vip.Subject != "Hello Vera" || deref(vip.HTML) != "<p>Hi Vera from &lt;Initech&gt;</p>" ||
		deref(vip.Text) != "Hi Vera from <Initech>" || vip.To[0] != (addressJSON{"vip@example.com", "V I P"}) ||
		vip.Headers["X-Campaign"] != "spring" || vip.From != (addressJSON{"news@example.com", "News"}) {
		t.Errorf("vip email = %+v, html %q, text %q", vip, deref(vip.HTML), deref(vip.Text))
	}
	var md map[string]string
	if err := json.Unmarshal(vip.Metadata, &md); err != nil || md["tier"] != "gold" || md["campaign"] != "spring" {
		t.Errorf("metadata not merged entry-over-shared: %s", vip.Metadata)
	}
	if c := b.count(t, `SELECT count(*) FROM emails WHERE id = $1 AND personalization_data = '{"company": "<Initech>", "first_name": "Vera"}'::jsonb`, a.Emails[1].ID); c != 1 {
		t.Error("merged personalizations not stored")
	}
	resp, body = b.do(t, http.MethodGet, "/v1/emails/"+a.Emails[2].ID.String(), key, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	if e := decode[emailJSON](t, body); e.Subject != "Hello " {
		t.Errorf("missing variable without default should render empty: %q", e.Subject)
	}
	if c := b.count(t, "SELECT count(*) FROM river_job WHERE queue = 'bulk'"); c != 3 {
		t.Errorf("bulk-lane jobs = %d, want 3", c)
	}

	// On a strict queue the entry without first_name is rejected, by index.
	b.strictQueue(t, appID)
	resp, body = b.do(t, http.MethodPost, "/v1/emails/batch", key, batchReq(3, func(m map[string]any) {
		m["emails"].([]any)[1] = map[string]any{"to": map[string]any{"email": "nameless@example.com"}}
	}), nil)
	expectStatus(t, resp, body, http.StatusAccepted)
	a = decode[batchAccepted](t, body)
	if a.Accepted != 2 || len(a.Rejected) != 1 || a.Rejected[0].Index != 1 ||
		deref(a.Rejected[0].Error.Field) != "emails[1].personalizations.first_name" {
		t.Errorf("strict batch = %+v", a)
	}

	// Nothing valid: 202 with everything rejected, and no batch to show.
	resp, body = b.do(t, http.MethodPost, "/v1/emails/batch", key, batchReq(1, func(m map[string]any) {
		m["emails"] = []any{map[string]any{"to": map[string]any{"email": "x"}}}
	}), nil)
	expectStatus(t, resp, body, http.StatusAccepted)
	a = decode[batchAccepted](t, body)
	if a.Accepted != 0 || len(a.Rejected) != 1 || len(a.Emails) != 0 {
		t.Errorf("all-invalid batch = %+v", a)
	}
	resp, body = b.do(t, http.MethodGet, "/v1/emails/batch/"+a.BatchID.String(), key, nil, nil)
	expectError(t, resp, body, http.StatusNotFound, "not_found", "")
}

func TestCreateEmailBatchSharedErrors(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "app", false)
	for _, tc := range []struct {
		name   string
		change func(m map[string]any)
		status int
		field  string
	}{
		{"bad from", func(m map[string]any) { m["from"] = map[string]any{"email": "nope"} }, 422, "from.email"},
		{"blank subject", func(m map[string]any) { m["subject"] = " " }, 422, "subject"},
		{"no body", func(m map[string]any) { delete(m, "html"); delete(m, "text") }, 422, "html"},
		{"reserved header", func(m map[string]any) { m["headers"] = map[string]any{"Bcc": "x@example.com"} }, 422, "headers.Bcc"},
		{"unknown queue", func(m map[string]any) { m["queue"] = "nope" }, 422, "queue"},
		{"expired", func(m map[string]any) { m["expires_at"] = time.Now().Add(-time.Hour).Format(time.RFC3339) }, 422, "expires_at"},
		{"no emails", func(m map[string]any) { m["emails"] = []any{} }, 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := b.do(t, http.MethodPost, "/v1/emails/batch", key, batchReq(2, tc.change), nil)
			expectError(t, resp, body, tc.status, "", tc.field)
		})
	}
	if c := b.count(t, "SELECT count(*) FROM emails"); c != 0 {
		t.Errorf("%d emails stored by refused batches", c)
	}
}

func TestCreateEmailBatchQuota(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appID, key := b.createAppWith(t, map[string]any{"name": "limited", "daily_limit": 5})
	resp, body := b.do(t, http.MethodPost, "/v1/emails/batch", key, batchReq(6, nil), nil)
	expectQuotaExceeded(t, resp, body, "daily limit of 5 emails reached", 24*time.Hour)
	if c := b.count(t, "SELECT count(*) FROM emails WHERE app_id = $1", appID); c != 0 {
		t.Errorf("%d emails stored over quota", c)
	}
	// Rejected entries do not count against the quota.
	resp, body = b.do(t, http.MethodPost, "/v1/emails/batch", key, batchReq(6, func(m map[string]any) {
		m["emails"].([]any)[0] = map[string]any{"to": map[string]any{"email": "bad"}}
	}), nil)
	expectStatus(t, resp, body, http.StatusAccepted)
	if a := decode[batchAccepted](t, body); a.Accepted != 5 {
		t.Errorf("accepted = %d, want 5", a.Accepted)
	}
}

func TestCreateEmailBatchIdempotency(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "app", false)
	hdr := map[string]string{"Idempotency-Key": "batch-" + uuid.NewString()}
	req := batchReq(50, func(m map[string]any) {
		m["emails"].([]any)[7] = map[string]any{"to": map[string]any{"email": "bad"}}
	})
	resp, first := b.do(t, http.MethodPost, "/v1/emails/batch", key, req, hdr)
	expectStatus(t, resp, first, http.StatusAccepted)
	resp, second := b.do(t, http.MethodPost, "/v1/emails/batch", key, req, hdr)
	expectStatus(t, resp, second, http.StatusAccepted)
	a1, a2 := decode[batchAccepted](t, first), decode[batchAccepted](t, second)
	if a1.BatchID != a2.BatchID || a2.Accepted != 49 || len(a2.Emails) != 49 || a1.Emails[48].ID != a2.Emails[48].ID ||
		len(a2.Rejected) != 1 || a2.Rejected[0].Index != 7 {
		t.Errorf("replay differs: %+v vs %+v", a1.BatchID, a2.BatchID)
	}
	if c := b.count(t, "SELECT count(*) FROM emails"); c != 49 {
		t.Errorf("emails = %d after a replay, want 49", c)
	}
	if c := b.count(t, "SELECT count(*) FROM river_job"); c != 49 {
		t.Errorf("jobs = %d after a replay, want 49", c)
	}
	req["subject"] = "Other {{first_name}}"
	resp, body := b.do(t, http.MethodPost, "/v1/emails/batch", key, req, hdr)
	expectError(t, resp, body, http.StatusUnprocessableEntity, "idempotency_mismatch", "Idempotency-Key")
}

func TestGetEmailBatchNotFound(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "app", false)
	_, otherKey := b.createApp(t, "other", false)
	resp, body := b.do(t, http.MethodPost, "/v1/emails/batch", key, batchReq(2, nil), nil)
	expectStatus(t, resp, body, http.StatusAccepted)
	a := decode[batchAccepted](t, body)

	resp, body = b.do(t, http.MethodGet, "/v1/emails/batch/"+a.BatchID.String(), otherKey, nil, nil)
	expectError(t, resp, body, http.StatusNotFound, "not_found", "")
	id, _ := uuid.NewV7()
	resp, body = b.do(t, http.MethodGet, "/v1/emails/batch/"+id.String(), key, nil, nil)
	expectError(t, resp, body, http.StatusNotFound, "not_found", "")
	resp, body = b.do(t, http.MethodGet, "/v1/emails?batch_id="+a.BatchID.String(), otherKey, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	if l := decode[emailList](t, body); len(l.Data) != 0 {
		t.Errorf("another app lists %d emails of the batch", len(l.Data))
	}
}

// TestCreateEmailBatchDelivered sends a small batch through the real send
// worker to the SMTP sink and checks each recipient got their own message.
func TestCreateEmailBatchDelivered(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "app", false)
	logger := testenv.Logger(t)
	sink := testenv.SMTPSink(t, smtpsink.Options{Record: true, Logger: logger})
	pools := mail.NewPools(logger)
	t.Cleanup(func() { _ = pools.CloseAll() })
	workers := river.NewWorkers()
	river.AddWorker(workers, &jobs.SendWorker{
		Store: b.store, Sender: jobs.PoolSender{Pools: pools}, Logger: logger,
		DefaultServer: mail.Server{Host: sink.Host(), Port: sink.Port(), PoolSize: 2, Timeout: 5 * time.Second},
	})
	rc, err := river.NewClient(riverpgxv5.New(b.pool), &river.Config{
		Queues: jobs.QueueConfig(4), Workers: workers, FetchCooldown: 20 * time.Millisecond,
		FetchPollInterval: 50 * time.Millisecond, TestOnly: true, Logger: logger,
	})
	if err != nil {
		t.Fatalf("river client: %v", err)
	}
	if err := rc.Start(t.Context()); err != nil {
		t.Fatalf("starting river: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = rc.Stop(ctx)
	})

	const n = 5
	resp, body := b.do(t, http.MethodPost, "/v1/emails/batch", key, batchReq(n, nil), nil)
	expectStatus(t, resp, body, http.StatusAccepted)
	a := decode[batchAccepted](t, body)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := sink.WaitForMessages(ctx, n); err != nil {
		t.Fatalf("waiting for %d messages: %v", n, err)
	}
	got := map[string]string{}
	for _, m := range sink.Messages() {
		got[strings.Join(m.To, ",")] = string(m.Data)
	}
	for i := range n {
		data, ok := got[fmt.Sprintf("user%d@example.com", i)]
		if !ok {
			t.Errorf("no message for user%d", i)
			continue
		}
		for _, want := range []string{fmt.Sprintf("Subject: Hello User %d", i), fmt.Sprintf("Hi User %d from ACME", i)} {
			if !strings.Contains(data, want) {
				t.Errorf("user%d's message lacks %q:\n%s", i, want, data)
			}
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		p := b.batchProgress(t, key, a.BatchID)
		if p.Sent == n && p.Total == n && p.Queued == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("progress = %+v, want %d sent", p, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
