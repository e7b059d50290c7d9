package store_test

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/store"
)

func emailParams(appID uuid.UUID, q *store.Queue, rcpt string) *store.EmailInsertParams {
	text := "hello"
	return &store.EmailInsertParams{
		AppID: appID, Queue: q, MessageIDDomain: "mq.example.com",
		From: store.Address{Email: "sender@example.com"}, To: []store.Address{{Email: rcpt}},
		Subject: "subject", Text: &text, Priority: 5,
	}
}

func (e *env) insertEmail(t *testing.T, p *store.EmailInsertParams) *store.Email {
	t.Helper()
	em, err := e.st.EmailInsert(t.Context(), p)
	if err != nil {
		t.Fatalf("EmailInsert: %v", err)
	}
	return em
}

func (e *env) eventTypes(t *testing.T, appID, emailID uuid.UUID) []string {
	t.Helper()
	evs, _, err := e.st.EventList(t.Context(), &store.EventListParams{AppID: appID, EmailID: emailID, Limit: 100})
	if err != nil {
		t.Fatalf("EventList: %v", err)
	}
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Type)
	}
	return out
}

func TestEmailInsertStoresEmailEventAndJob(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	app := e.app(t, "a")
	q := e.queue(t, app.ID, "default")

	p := emailParams(app.ID, q, "rcpt@example.com")
	html, replyTo, batch := "<p>hi</p>", "Support <support@example.com>", uuid.New()
	p.From.Name = "Sender"
	p.Cc = []store.Address{{Email: "cc@example.com", Name: "Cc"}}
	p.HTML, p.ReplyTo, p.BatchID = &html, &replyTo, &batch
	p.Headers = map[string]string{"X-Tag": "t"}
	p.Metadata = json.RawMessage(`{"order":42}`)
	p.Priority = 9
	expires := time.Now().Add(time.Hour).UTC().Truncate(time.Microsecond)
	p.ExpiresAt = &expires
	em := e.insertEmail(t, p)

	if em.ID.Version() != 7 || !em.CreatedAt.Equal(store.IDTime(em.ID)) {
		t.Errorf("email id %s created_at %s: want a v7 id holding created_at", em.ID, em.CreatedAt)
	}
	if em.MessageID != em.ID.String()+"@mq.example.com" {
		t.Errorf("message id %q", em.MessageID)
	}
	if em.JobID == nil {
		t.Fatal("no job id")
	}

	got, err := e.st.EmailGet(ctx, app.ID, em.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != store.StatusQueued || got.QueueName != "default" || got.MaxRetries != q.MaxRetries ||
		got.Priority != 9 || got.JobID == nil || *got.JobID != *em.JobID {
		t.Errorf("stored email %+v does not match the insert", got)
	}
	if got.FromName == nil || *got.FromName != "Sender" || got.HTML == nil || *got.HTML != html ||
		got.ReplyTo == nil || *got.ReplyTo != replyTo || got.BatchID == nil || *got.BatchID != batch {
		t.Errorf("stored email lost optional fields: %+v", got)
	}
	if !slices.Equal(got.To, p.To) || !slices.Equal(got.Cc, p.Cc) || len(got.Bcc) != 0 {
		t.Errorf("recipients to %v cc %v bcc %v", got.To, got.Cc, got.Bcc)
	}
	if got.Headers["X-Tag"] != "t" {
		t.Errorf("headers = %v", got.Headers)
	}
	var meta map[string]any
	if err := json.Unmarshal(got.Metadata, &meta); err != nil || meta["order"] != float64(42) {
		t.Errorf("metadata = %s (%v)", got.Metadata, err)
	}
	if got.ExpiresAt == nil || !got.ExpiresAt.Equal(expires) {
		t.Errorf("expires_at = %v, want %s", got.ExpiresAt, expires)
	}
	// The waiting job shows through.
	if got.NextAttemptAt == nil || got.Attempt == nil || *got.Attempt != 0 {
		t.Errorf("job scheduled_at %v attempt %v, want the waiting job", got.NextAttemptAt, got.Attempt)
	}
	if types := e.eventTypes(t, app.ID, em.ID); !slices.Equal(types, []string{"queued"}) {
		t.Errorf("events = %v, want [queued]", types)
	}

	var kind, queue string
	var prio, maxAttempts int
	var args []byte
	if err := e.pool.QueryRow(ctx, `SELECT kind, queue, priority, max_attempts, args FROM river_job WHERE id = $1`, *em.JobID).
		Scan(&kind, &queue, &prio, &maxAttempts, &args); err != nil {
		t.Fatal(err)
	}
	var sa struct {
		EmailID    uuid.UUID `json:"email_id"`
		RetryDelay []int32   `json:"retry_delay"`
	}
	if err := json.Unmarshal(args, &sa); err != nil {
		t.Fatal(err)
	}
	if kind != "send_email" || queue != "critical" || prio != 2 || maxAttempts != int(q.MaxRetries)+1 ||
		sa.EmailID != em.ID || !slices.Equal(sa.RetryDelay, q.RetryDelay) {
		t.Errorf("job kind %s queue %s priority %d max_attempts %d args %s", kind, queue, prio, maxAttempts, args)
	}
}

func TestEmailInsertWithoutEnqueuerFails(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	app := e.app(t, "a")
	q := e.queue(t, app.ID, "default")
	bare := store.New(e.pool, nil)
	if _, err := bare.EmailInsert(t.Context(), emailParams(app.ID, q, "rcpt@example.com")); err == nil {
		t.Fatal("EmailInsert without an enqueuer succeeded")
	}
	var n int
	if err := e.pool.QueryRow(t.Context(), `SELECT count(*) FROM emails`).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d emails stored (%v), want 0", n, err)
	}
}

// A failed insert (the priority check) leaves neither email, event nor job.
func TestEmailInsertIsAtomic(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	app := e.app(t, "a")
	q := e.queue(t, app.ID, "default")
	p := emailParams(app.ID, q, "rcpt@example.com")
	p.Priority = 0
	if _, err := e.st.EmailInsert(t.Context(), p); err == nil {
		t.Fatal("EmailInsert with priority 0 succeeded")
	}
	var emails, events, jobs int
	if err := e.pool.QueryRow(t.Context(),
		`SELECT (SELECT count(*) FROM emails), (SELECT count(*) FROM email_events), (SELECT count(*) FROM river_job)`).
		Scan(&emails, &events, &jobs); err != nil {
		t.Fatal(err)
	}
	if emails+events+jobs != 0 {
		t.Errorf("after a failed insert: %d emails, %d events, %d jobs; want none", emails, events, jobs)
	}
}

func TestEmailGet(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	appA, appB := e.app(t, "a"), e.app(t, "b")
	q := e.queue(t, appA.ID, "default")
	em := e.insertEmail(t, emailParams(appA.ID, q, "rcpt@example.com"))

	if got, err := e.st.EmailGet(ctx, appA.ID, em.ID); err != nil || got.ID != em.ID {
		t.Fatalf("EmailGet own email: %v, %v", got, err)
	}
	for name, tc := range map[string]struct{ app, id uuid.UUID }{
		"another app's id":  {appB.ID, em.ID},
		"uuid v4":           {appA.ID, uuid.New()},
		"unknown uuid v7":   {appA.ID, uuid.Must(uuid.NewV7())},
		"same ms, other id": {appA.ID, v7At(em.CreatedAt)},
	} {
		got, err := e.st.EmailGet(ctx, tc.app, tc.id)
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: EmailGet = %v, %v; want ErrNotFound", name, got, err)
		}
	}

	// A row in next month's partition, its created_at the time in its id,
	// is found from the id alone.
	now := time.Now().UTC()
	next := time.Date(now.Year(), now.Month()+1, 15, 12, 0, 0, 0, time.UTC)
	id := v7At(next)
	if _, err := e.pool.Exec(ctx, `
		INSERT INTO emails (id, created_at, app_id, queue_id, message_id, from_address, to_addresses,
		                    subject, priority, max_retries)
		SELECT $1, $2, app_id, queue_id, 'next@example.com', from_address, to_addresses,
		       subject, priority, max_retries
		FROM emails WHERE id = $3`, id, store.IDTime(id), em.ID); err != nil {
		t.Fatalf("inserting an email in next month's partition: %v", err)
	}
	got, err := e.st.EmailGet(ctx, appA.ID, id)
	if err != nil {
		t.Fatalf("EmailGet of next month's email: %v", err)
	}
	if !got.CreatedAt.Equal(store.IDTime(id)) || got.MessageID != "next@example.com" {
		t.Errorf("EmailGet returned %s created %s", got.MessageID, got.CreatedAt)
	}
	var partition string
	if err := e.pool.QueryRow(ctx, `SELECT tableoid::regclass::text FROM emails WHERE id = $1`, id).Scan(&partition); err != nil {
		t.Fatal(err)
	}
	var thisPartition string
	if err := e.pool.QueryRow(ctx, `SELECT tableoid::regclass::text FROM emails WHERE id = $1`, em.ID).Scan(&thisPartition); err != nil {
		t.Fatal(err)
	}
	if partition == thisPartition {
		t.Errorf("both emails are in partition %s; the test meant to use two", partition)
	}
}

func TestEmailTransitionGuard(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	app := e.app(t, "a")
	q := e.queue(t, app.ID, "default")
	em := e.insertEmail(t, emailParams(app.ID, q, "rcpt@example.com"))

	toProcessing := &store.EmailTransitionParams{
		ID: em.ID, From: []string{store.StatusQueued}, Status: store.StatusProcessing,
		Event: "processing", Data: map[string]any{"attempt": 1},
	}
	moved, err := e.st.EmailTransition(ctx, toProcessing)
	if err != nil || !moved {
		t.Fatalf("first queued→processing: moved %v, %v", moved, err)
	}
	moved, err = e.st.EmailTransition(ctx, toProcessing)
	if err != nil || moved {
		t.Errorf("second queued→processing: moved %v, %v; want false", moved, err)
	}
	if types := e.eventTypes(t, app.ID, em.ID); !slices.Equal(types, []string{"queued", "processing"}) {
		t.Errorf("events = %v, want [queued processing] (no second processing)", types)
	}

	msg := "smtp rcpt: 451"
	moved, err = e.st.EmailTransition(ctx, &store.EmailTransitionParams{
		ID: em.ID, From: []string{store.StatusProcessing}, Status: store.StatusQueued, Event: "deferred",
		LastError: &msg, RetryCount: new(int16(1)),
	})
	if err != nil || !moved {
		t.Fatalf("processing→queued: %v, %v", moved, err)
	}
	got, err := e.st.EmailGet(ctx, app.ID, em.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != store.StatusQueued || got.RetryCount != 1 || got.LastError == nil || *got.LastError != msg {
		t.Errorf("after deferral: status %s retry_count %d last_error %v", got.Status, got.RetryCount, got.LastError)
	}

	// Optional fields left nil are unchanged; ClearError clears.
	sentAt := time.Now().UTC().Truncate(time.Microsecond)
	if _, err := e.st.EmailTransition(ctx, &store.EmailTransitionParams{
		ID: em.ID, From: []string{store.StatusQueued}, Status: store.StatusProcessing, Event: "processing",
	}); err != nil {
		t.Fatal(err)
	}
	if moved, err := e.st.EmailTransition(ctx, &store.EmailTransitionParams{
		ID: em.ID, From: []string{store.StatusProcessing}, Status: store.StatusSent, Event: "sent",
		SentAt: &sentAt, ClearError: true, At: sentAt,
	}); err != nil || !moved {
		t.Fatalf("processing→sent: %v, %v", moved, err)
	}
	got, err = e.st.EmailGet(ctx, app.ID, em.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != store.StatusSent || got.RetryCount != 1 || got.LastError != nil ||
		got.SentAt == nil || !got.SentAt.Equal(sentAt) || !got.UpdatedAt.Equal(sentAt) {
		t.Errorf("after sent: status %s retry_count %d last_error %v sent_at %v updated_at %s",
			got.Status, got.RetryCount, got.LastError, got.SentAt, got.UpdatedAt)
	}

	// A cancelled email is never marked sent.
	other := e.insertEmail(t, emailParams(app.ID, q, "rcpt@example.com"))
	if moved, err := e.st.EmailTransition(ctx, &store.EmailTransitionParams{
		ID: other.ID, From: []string{store.StatusQueued}, Status: store.StatusCancelled, Event: "cancelled",
	}); err != nil || !moved {
		t.Fatalf("queued→cancelled: %v, %v", moved, err)
	}
	moved, err = e.st.EmailTransition(ctx, &store.EmailTransitionParams{
		ID: other.ID, From: []string{store.StatusProcessing}, Status: store.StatusSent, Event: "sent", SentAt: &sentAt,
	})
	if err != nil || moved {
		t.Errorf("processing→sent on a cancelled email: moved %v, %v; want false", moved, err)
	}
	got, err = e.st.EmailGet(ctx, app.ID, other.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != store.StatusCancelled || got.SentAt != nil {
		t.Errorf("cancelled email now %s sent_at %v", got.Status, got.SentAt)
	}
	if types := e.eventTypes(t, app.ID, other.ID); !slices.Equal(types, []string{"queued", "cancelled"}) {
		t.Errorf("events = %v, want [queued cancelled]", types)
	}

	// An unknown id moves nothing and is not an error.
	if moved, err := e.st.EmailTransition(ctx, &store.EmailTransitionParams{
		ID: uuid.Must(uuid.NewV7()), From: []string{store.StatusQueued}, Status: store.StatusProcessing, Event: "processing",
	}); err != nil || moved {
		t.Errorf("transition of an unknown email: %v, %v", moved, err)
	}
}

func TestEmailListPagination(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	app, other := e.app(t, "a"), e.app(t, "b")
	q := e.queue(t, app.ID, "default")
	oq := e.queue(t, other.ID, "default")
	want := map[uuid.UUID]bool{}
	for range 25 {
		want[e.insertEmail(t, emailParams(app.ID, q, "rcpt@example.com")).ID] = true
	}
	e.insertEmail(t, emailParams(other.ID, oq, "rcpt@example.com"))

	seen := map[uuid.UUID]bool{}
	var sizes []int
	var after *store.Cursor
	var prev *store.Email
	for page := 0; ; page++ {
		if page > 5 {
			t.Fatal("pagination does not end")
		}
		list, more, err := e.st.EmailList(ctx, &store.EmailListParams{AppID: app.ID, After: after, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(list))
		for _, em := range list {
			if seen[em.ID] {
				t.Errorf("email %s listed twice", em.ID)
			}
			if !want[em.ID] {
				t.Errorf("email %s is not one of the app's", em.ID)
			}
			seen[em.ID] = true
			if em.HTML != nil || em.Text != nil {
				t.Errorf("list returned bodies for %s", em.ID)
			}
			if prev != nil && (em.CreatedAt.After(prev.CreatedAt) ||
				(em.CreatedAt.Equal(prev.CreatedAt) && em.ID.String() >= prev.ID.String())) {
				t.Errorf("email %s listed after %s: not newest first", em.ID, prev.ID)
			}
			prev = em
		}
		if !more {
			break
		}
		last := list[len(list)-1]
		after = &store.Cursor{CreatedAt: last.CreatedAt, ID: last.ID}
	}
	if !slices.Equal(sizes, []int{10, 10, 5}) {
		t.Errorf("page sizes %v, want [10 10 5]", sizes)
	}
	if len(seen) != 25 {
		t.Errorf("listed %d distinct emails, want 25", len(seen))
	}

	list, more, err := e.st.EmailList(ctx, &store.EmailListParams{AppID: app.ID, Limit: 25})
	if err != nil || len(list) != 25 || more {
		t.Errorf("Limit 25 of 25: %d emails, more %v, %v; want 25, false", len(list), more, err)
	}
}

func TestEmailListFilters(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	app := e.app(t, "a")
	qA, qB := e.queue(t, app.ID, "alpha"), e.queue(t, app.ID, "beta")
	batch := uuid.New()

	a1 := e.insertEmail(t, emailParams(app.ID, qA, "rcpt@example.com"))
	pb := emailParams(app.ID, qA, "rcpt@example.com")
	pb.BatchID = &batch
	a2 := e.insertEmail(t, pb)
	time.Sleep(5 * time.Millisecond) // a later millisecond for Since
	b1 := e.insertEmail(t, emailParams(app.ID, qB, "rcpt@example.com"))
	pb2 := emailParams(app.ID, qB, "rcpt@example.com")
	pb2.BatchID = &batch
	b2 := e.insertEmail(t, pb2)
	if _, err := e.st.EmailTransition(ctx, &store.EmailTransitionParams{
		ID: a1.ID, From: []string{store.StatusQueued}, Status: store.StatusCancelled, Event: "cancelled",
	}); err != nil {
		t.Fatal(err)
	}

	ids := func(p *store.EmailListParams) []uuid.UUID {
		t.Helper()
		p.AppID, p.Limit = app.ID, 100
		list, _, err := e.st.EmailList(ctx, p)
		if err != nil {
			t.Fatalf("EmailList(%+v): %v", p, err)
		}
		var out []uuid.UUID
		for _, em := range list {
			out = append(out, em.ID)
		}
		return out
	}
	cancelled, queued, beta, none := store.StatusCancelled, store.StatusQueued, "beta", "nope"
	since := b1.CreatedAt
	for name, tc := range map[string]struct {
		p    store.EmailListParams
		want []uuid.UUID
	}{
		"all":              {store.EmailListParams{}, []uuid.UUID{b2.ID, b1.ID, a2.ID, a1.ID}},
		"status cancelled": {store.EmailListParams{Status: &cancelled}, []uuid.UUID{a1.ID}},
		"status queued":    {store.EmailListParams{Status: &queued}, []uuid.UUID{b2.ID, b1.ID, a2.ID}},
		"queue beta":       {store.EmailListParams{Queue: &beta}, []uuid.UUID{b2.ID, b1.ID}},
		"unknown queue":    {store.EmailListParams{Queue: &none}, nil},
		"batch":            {store.EmailListParams{BatchID: &batch}, []uuid.UUID{b2.ID, a2.ID}},
		"since":            {store.EmailListParams{Since: &since}, []uuid.UUID{b2.ID, b1.ID}},
		"queue and status": {store.EmailListParams{Queue: &beta, Status: &cancelled}, nil},
		"batch and queue":  {store.EmailListParams{BatchID: &batch, Queue: &beta}, []uuid.UUID{b2.ID}},
	} {
		if got := ids(&tc.p); !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", name, got, tc.want)
		}
	}
}

func TestEventListPagination(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	app, other := e.app(t, "a"), e.app(t, "b")
	q := e.queue(t, app.ID, "default")
	em := e.insertEmail(t, emailParams(app.ID, q, "rcpt@example.com"))
	for i := range 4 {
		if err := e.st.EventInsert(ctx, em, "opened", map[string]int{"n": i}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	var all []*store.Event
	var after *store.Cursor
	for {
		page, more, err := e.st.EventList(ctx, &store.EventListParams{AppID: app.ID, EmailID: em.ID, After: after, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page...)
		if !more {
			break
		}
		last := page[len(page)-1]
		after = &store.Cursor{CreatedAt: last.CreatedAt, ID: last.ID}
	}
	if len(all) != 5 || all[0].Type != "queued" {
		t.Fatalf("got %d events starting %v, want queued then 4 opened", len(all), all[0].Type)
	}
	for i, ev := range all[1:] {
		var d map[string]int
		if err := json.Unmarshal(ev.Data, &d); err != nil || d["n"] != i {
			t.Errorf("event %d data %s, want n=%d (oldest first)", i+1, ev.Data, i)
		}
	}
	list, _, err := e.st.EventList(ctx, &store.EventListParams{AppID: other.ID, EmailID: em.ID, Limit: 10})
	if err != nil || len(list) != 0 {
		t.Errorf("another app sees %d events (%v), want 0", len(list), err)
	}
}
