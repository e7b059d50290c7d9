package jobs_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	netmail "net/mail"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/mailqueue/mailqueue/bench/smtpsink"
	"github.com/mailqueue/mailqueue/jobs"
	"github.com/mailqueue/mailqueue/mail"
	"github.com/mailqueue/mailqueue/ratelimit"
	"github.com/mailqueue/mailqueue/store"
	"github.com/mailqueue/mailqueue/testenv"
)

// waitFor bounds every wait on the pipeline; outcomes normally arrive in
// well under a second.
const waitFor = 15 * time.Second

// lateEnqueuer lets the store exist before the River client whose worker
// needs it, as cmd/mailqueue does.
type lateEnqueuer struct {
	*jobs.Enqueuer
}

func (l *lateEnqueuer) EnqueueSendTx(ctx context.Context, tx pgx.Tx, e *store.Email) (int64, error) {
	return l.Enqueuer.EnqueueSendTx(ctx, tx, e)
}

type harnessOptions struct {
	maxRetries int16
	retryDelay []int32
	// server overrides the default SMTP server (the sink).
	server *mail.Server
	// settings are the queue's settings.
	settings store.QueueSettings
	// jobTimeout is the send worker's job timeout (0 = its default).
	jobTimeout time.Duration
	// unsubscribe makes List-Unsubscribe headers (nil = none).
	unsubscribe *mail.Unsubscribe
	// breaker is the send worker's circuit breaker (none when nil).
	breaker *ratelimit.Breaker
	// limits are the send limits (nil = none).
	limits *ratelimit.Limiter
}

// harness is a real send pipeline: a fresh database, a River client working
// the lanes with the SendWorker, and an smtpsink as the default server.
type harness struct {
	pool   *pgxpool.Pool
	st     *store.Store
	client *river.Client[pgx.Tx]
	sink   *smtpsink.Sink
	app    *store.App
	queue  *store.Queue
}

func newHarness(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	logger := testenv.Logger(t) // first, so its cleanup runs last
	ctx := t.Context()
	pool := testenv.DB(t)

	sink := testenv.SMTPSink(t, smtpsink.Options{Record: true, Logger: logger})

	pools := mail.NewPools(logger)
	t.Cleanup(func() { _ = pools.CloseAll() })

	enq := &lateEnqueuer{}
	st := store.New(pool, enq)
	srv := mail.Server{Host: sink.Host(), Port: sink.Port(), PoolSize: 2, Timeout: 5 * time.Second}
	if o.server != nil {
		srv = *o.server
	}
	// Batched reads and writes, as the service runs them; stopped after
	// the River client (cleanups run last first).
	transitions := jobs.NewTransitionWriter(st, logger, 64)
	reader := jobs.NewEmailReader(st, logger, 64)
	transitions.Start()
	reader.Start()
	t.Cleanup(func() { transitions.Stop(); reader.Stop() })
	workers := river.NewWorkers()
	river.AddWorker(workers, &jobs.SendWorker{
		Store: st, Sender: jobs.PoolSender{Pools: pools}, DefaultServer: srv, Logger: logger,
		Transitions: transitions, Reader: reader,
		JobTimeout: o.jobTimeout, Unsubscribe: o.unsubscribe, Breaker: o.breaker, Limits: o.limits,
	})
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Queues:            jobs.QueueConfig(8),
		Workers:           workers,
		FetchCooldown:     20 * time.Millisecond,
		FetchPollInterval: 50 * time.Millisecond,
		TestOnly:          true,
		Logger:            logger,
	})
	if err != nil {
		t.Fatalf("creating River client: %v", err)
	}
	enq.Enqueuer = jobs.NewEnqueuer(client)
	if err := client.Start(ctx); err != nil {
		t.Fatalf("starting River client: %v", err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := client.Stop(sctx); err != nil {
			t.Errorf("stopping River client: %v", err)
		}
	})

	app, err := st.AppInsert(ctx, &store.AppInsertParams{Name: "jobs test"})
	if err != nil {
		t.Fatalf("AppInsert: %v", err)
	}
	delay := o.retryDelay
	if delay == nil {
		delay = []int32{1}
	}
	queue, err := st.QueueInsert(ctx, &store.QueueInsertParams{
		AppID: app.ID, Name: "default", Priority: 5, MaxRetries: o.maxRetries, RetryDelay: delay,
		Settings: o.settings,
	})
	if err != nil {
		t.Fatalf("QueueInsert: %v", err)
	}
	return &harness{pool: pool, st: st, client: client, sink: sink, app: app, queue: queue}
}

// params returns the insert parameters of a simple text email to rcpt.
func (h *harness) params(rcpt string) *store.EmailInsertParams {
	text := "Hello there."
	return &store.EmailInsertParams{
		AppID: h.app.ID, Queue: h.queue, MessageIDDomain: "mq.example.com",
		From:    store.Address{Email: "sender@example.com", Name: "Sender"},
		To:      []store.Address{{Email: rcpt}},
		Subject: "Test message", Text: &text, Priority: 5,
	}
}

func (h *harness) insert(t *testing.T, p *store.EmailInsertParams) *store.Email {
	t.Helper()
	e, err := h.st.EmailInsert(t.Context(), p)
	if err != nil {
		t.Fatalf("EmailInsert: %v", err)
	}
	if e.JobID == nil {
		t.Fatal("EmailInsert returned no job id")
	}
	return e
}

// waitEmail polls the email until cond holds.
func (h *harness) waitEmail(t *testing.T, id uuid.UUID, what string, cond func(*store.Email) bool) *store.Email {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		e, err := h.st.EmailGet(t.Context(), h.app.ID, id)
		if err != nil {
			t.Fatalf("EmailGet: %v", err)
		}
		if cond(e) {
			return e
		}
		if time.Now().After(deadline) {
			t.Fatalf("email %s never became %s: status %s, retry_count %d, last_error %v, events %v",
				id, what, e.Status, e.RetryCount, deref(e.LastError), eventTypes(h.events(t, id)))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *harness) waitStatus(t *testing.T, id uuid.UUID, status string) *store.Email {
	t.Helper()
	return h.waitEmail(t, id, status, func(e *store.Email) bool { return e.Status == status })
}

// waitJob polls the River job until it reaches one of states.
func (h *harness) waitJob(t *testing.T, id int64, states ...rivertype.JobState) *rivertype.JobRow {
	t.Helper()
	return h.waitJobCond(t, id, "one of "+fmt.Sprint(states), func(j *rivertype.JobRow) bool {
		return slices.Contains(states, j.State)
	})
}

// waitJobCond polls the River job until cond holds.
func (h *harness) waitJobCond(t *testing.T, id int64, what string, cond func(*rivertype.JobRow) bool) *rivertype.JobRow {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		j, err := h.client.JobGet(t.Context(), id)
		if err != nil {
			t.Fatalf("JobGet(%d): %v", id, err)
		}
		if cond(j) {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %d never got to %s: state %s, attempt %d, scheduled at %s, errors %v",
				id, what, j.State, j.Attempt, j.ScheduledAt, j.Errors)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *harness) events(t *testing.T, id uuid.UUID) []*store.Event {
	t.Helper()
	evs, _, err := h.st.EventList(t.Context(), &store.EventListParams{AppID: h.app.ID, EmailID: id, Limit: 100})
	if err != nil {
		t.Fatalf("EventList: %v", err)
	}
	return evs
}

func eventTypes(evs []*store.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Type
	}
	return out
}

func eventData(t *testing.T, e *store.Event) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(e.Data, &m); err != nil {
		t.Fatalf("event %s data %s: %v", e.Type, e.Data, err)
	}
	return m
}

func lastEvent(t *testing.T, evs []*store.Event, typ string) *store.Event {
	t.Helper()
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Type == typ {
			return evs[i]
		}
	}
	t.Fatalf("no %s event in %v", typ, eventTypes(evs))
	return nil
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestSendDeliversAndRecordsHistory(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{maxRetries: 2})

	p := h.params("rcpt@example.com")
	p.To = []store.Address{{Email: "rcpt@example.com", Name: "Rita Recipient"}}
	p.Subject = "Welcome aboard"
	html, text := "<p>Hello <b>Rita</b></p>", "Hello Rita"
	p.HTML, p.Text = &html, &text
	p.Headers = map[string]string{"X-Campaign": "spring-2031"}
	p.Priority = 10
	e := h.insert(t, p)

	got := h.waitStatus(t, e.ID, store.StatusSent)
	if got.SentAt == nil {
		t.Error("sent_at is not set")
	}
	if got.RetryCount != 0 {
		t.Errorf("retry_count = %d, want 0", got.RetryCount)
	}
	if got.LastError != nil {
		t.Errorf("last_error = %q, want none", *got.LastError)
	}
	evs := h.events(t, e.ID)
	if types := eventTypes(evs); !slices.Equal(types, []string{"queued", "sent"}) {
		t.Errorf("events = %v, want [queued sent]", types)
	}
	if d := eventData(t, lastEvent(t, evs, "sent")); d["attempt"] != float64(1) || d["smtp_host"] != h.sink.Host() {
		t.Errorf("sent event data = %v, want attempt 1 and smtp_host %s", d, h.sink.Host())
	}

	job := h.waitJob(t, *e.JobID, rivertype.JobStateCompleted)
	if job.Queue != jobs.LaneCritical || job.Priority != 1 {
		t.Errorf("priority 10 job in queue %q priority %d, want %s priority 1", job.Queue, job.Priority, jobs.LaneCritical)
	}
	if job.MaxAttempts != 3 {
		t.Errorf("job max_attempts = %d, want max_retries+1 = 3", job.MaxAttempts)
	}

	msgs := h.sink.Messages()
	if len(msgs) != 1 {
		t.Fatalf("sink received %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.From != "sender@example.com" || !slices.Equal(m.To, []string{"rcpt@example.com"}) {
		t.Errorf("envelope from %q to %v, want sender@example.com to [rcpt@example.com]", m.From, m.To)
	}
	parsed, err := netmail.ReadMessage(strings.NewReader(string(m.Data)))
	if err != nil {
		t.Fatalf("parsing received message: %v\n%s", err, m.Data)
	}
	hdr := parsed.Header
	if got, want := hdr.Get("Message-Id"), "<"+e.MessageID+">"; got != want {
		t.Errorf("Message-ID = %q, want %q", got, want)
	}
	if !strings.HasSuffix(e.MessageID, "@mq.example.com") || !strings.HasPrefix(e.MessageID, e.ID.String()) {
		t.Errorf("stored message id %q is not <email id>@mq.example.com", e.MessageID)
	}
	if from, err := hdr.AddressList("From"); err != nil || len(from) != 1 || from[0].Address != "sender@example.com" || from[0].Name != "Sender" {
		t.Errorf("From = %q (%v), want Sender <sender@example.com>", hdr.Get("From"), err)
	}
	if to, err := hdr.AddressList("To"); err != nil || len(to) != 1 || to[0].Address != "rcpt@example.com" || to[0].Name != "Rita Recipient" {
		t.Errorf("To = %q (%v), want Rita Recipient <rcpt@example.com>", hdr.Get("To"), err)
	}
	if got := hdr.Get("Subject"); got != "Welcome aboard" {
		t.Errorf("Subject = %q", got)
	}
	if got := hdr.Get("X-Campaign"); got != "spring-2031" {
		t.Errorf("X-Campaign = %q, want spring-2031", got)
	}
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "multipart/alternative") {
		t.Errorf("Content-Type = %q, want multipart/alternative", ct)
	}
	if st := h.sink.Stats(); st.Messages != 1 || st.Rejected != 0 {
		t.Errorf("sink stats %+v, want exactly one accepted message", st)
	}
}

// A server that refuses connections is a temporary failure: the email is
// deferred and retried on the queue's schedule until its retries run out.
func TestSendRetriesTemporaryFailureUntilExhausted(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	h := newHarness(t, harnessOptions{
		maxRetries: 1, retryDelay: []int32{2},
		server: &mail.Server{Host: "127.0.0.1", Port: closedPort, PoolSize: 2, Timeout: 2 * time.Second},
	})
	e := h.insert(t, h.params("rcpt@example.com"))

	deferred := h.waitEmail(t, e.ID, "deferred", func(e *store.Email) bool {
		return e.Status == store.StatusQueued && e.RetryCount == 1
	})
	if deferred.LastError == nil || !strings.Contains(*deferred.LastError, "connect") {
		t.Errorf("last_error after attempt 1 = %v, want the connect failure", deref(deferred.LastError))
	}
	if types := eventTypes(h.events(t, e.ID)); !slices.Equal(types, []string{"queued", "deferred"}) {
		t.Errorf("events after attempt 1 = %v, want [queued deferred]", types)
	}
	// The retry waits for the queue's retry_delay[0] (2 s), not River's
	// default backoff (about 1 s after a first attempt).
	job := h.waitJobCond(t, *e.JobID, "waiting for attempt 2", func(j *rivertype.JobRow) bool {
		return j.Attempt > 1 || j.State == rivertype.JobStateAvailable || j.State == rivertype.JobStateRetryable
	})
	if job.Attempt == 1 {
		if wait := job.ScheduledAt.Sub(deferred.UpdatedAt); wait < 1800*time.Millisecond || wait > 3*time.Second {
			t.Errorf("next attempt %s after the failure, want about 2s (retry_delay {2})", wait)
		}
	}

	failed := h.waitStatus(t, e.ID, store.StatusFailed)
	if failed.LastError == nil {
		t.Error("last_error not set on the failed email")
	}
	if failed.RetryCount != 2 {
		t.Errorf("retry_count = %d, want 2 (two attempts)", failed.RetryCount)
	}
	evs := h.events(t, e.ID)
	if types := eventTypes(evs); !slices.Equal(types, []string{"queued", "deferred", "failed"}) {
		t.Errorf("events = %v, want [queued deferred failed]", types)
	}
	d := eventData(t, lastEvent(t, evs, "failed"))
	if d["permanent"] != false || d["attempt"] != float64(2) || d["stage"] != mail.StageConnect {
		t.Errorf("failed event data = %v, want permanent=false attempt=2 stage=connect", d)
	}
	job = h.waitJob(t, *e.JobID, rivertype.JobStateDiscarded)
	if job.Attempt != 2 {
		t.Errorf("job attempts = %d, want 2", job.Attempt)
	}
}

// A 5xx reply fails the email at once: no retry, job cancelled.
func TestSendPermanentFailureIsNotRetried(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{maxRetries: 3, retryDelay: []int32{1}})

	for _, tc := range []struct {
		rcpt, stage, enhanced string
		code                  float64
	}{
		{"permfail@example.com", mail.StageRcpt, "5.1.1", 550},
		{"datafail@example.com", mail.StageData, "5.6.0", 554},
	} {
		e := h.insert(t, h.params(tc.rcpt))
		failed := h.waitStatus(t, e.ID, store.StatusFailed)
		if failed.RetryCount != 1 || failed.LastError == nil {
			t.Errorf("%s: retry_count %d, last_error %v; want 1 and set", tc.rcpt, failed.RetryCount, deref(failed.LastError))
		}
		evs := h.events(t, e.ID)
		if types := eventTypes(evs); !slices.Equal(types, []string{"queued", "failed"}) {
			t.Errorf("%s: events = %v, want [queued failed]", tc.rcpt, types)
		}
		d := eventData(t, lastEvent(t, evs, "failed"))
		if d["permanent"] != true || d["smtp_code"] != tc.code || d["stage"] != tc.stage || d["enhanced_code"] != tc.enhanced {
			t.Errorf("%s: failed event data = %v, want permanent=true smtp_code=%v stage=%s enhanced_code=%s",
				tc.rcpt, d, tc.code, tc.stage, tc.enhanced)
		}
		job := h.waitJob(t, *e.JobID, rivertype.JobStateCancelled)
		if job.Attempt != 1 {
			t.Errorf("%s: job attempts = %d, want 1", tc.rcpt, job.Attempt)
		}
	}
	if st := h.sink.Stats(); st.Messages != 0 || st.Rejected != 2 {
		t.Errorf("sink stats %+v, want 0 accepted and 2 rejected", st)
	}
}

// A 4xx reply from the server defers the email like a refused connection.
func TestSendTemporaryReplyDefers(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{maxRetries: 3, retryDelay: []int32{60}})
	e := h.insert(t, h.params("tempfail@example.com"))

	got := h.waitEmail(t, e.ID, "deferred", func(e *store.Email) bool { return e.RetryCount == 1 })
	if got.Status != store.StatusQueued {
		t.Errorf("status = %s, want queued", got.Status)
	}
	evs := h.events(t, e.ID)
	d := eventData(t, lastEvent(t, evs, "deferred"))
	if d["smtp_code"] != float64(451) || d["stage"] != mail.StageRcpt || d["permanent"] != nil {
		t.Errorf("deferred event data = %v, want smtp_code 451 at rcpt", d)
	}
	job := h.waitJob(t, *e.JobID, rivertype.JobStateRetryable, rivertype.JobStateAvailable)
	if wait := job.ScheduledAt.Sub(got.UpdatedAt); wait < 59*time.Second || wait > 61*time.Second {
		t.Errorf("retry scheduled %s after the failure, want 60s", wait)
	}
}

// A connection lost after the whole body was written may or may not have
// delivered the message; that is recorded as "uncertain".
func TestSendUncertainDelivery(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{maxRetries: 3, retryDelay: []int32{30}})
	e := h.insert(t, h.params("drop@example.com"))

	got := h.waitEmail(t, e.ID, "uncertain", func(e *store.Email) bool { return e.RetryCount == 1 })
	if got.Status != store.StatusQueued {
		t.Errorf("status = %s, want queued (retries remain)", got.Status)
	}
	if got.LastError == nil || !strings.Contains(*got.LastError, "uncertain") {
		t.Errorf("last_error = %v, want the uncertain delivery error", deref(got.LastError))
	}
	evs := h.events(t, e.ID)
	if types := eventTypes(evs); !slices.Equal(types, []string{"queued", "uncertain"}) {
		t.Errorf("events = %v, want [queued uncertain]", types)
	}
	if d := eventData(t, lastEvent(t, evs, "uncertain")); d["stage"] != mail.StageDataSent {
		t.Errorf("uncertain event data = %v, want stage %s", d, mail.StageDataSent)
	}
	if st := h.sink.Stats(); st.Dropped < 1 || st.Messages != 0 {
		t.Errorf("sink stats %+v, want a dropped message and none accepted", st)
	}
	h.waitJob(t, *e.JobID, rivertype.JobStateRetryable, rivertype.JobStateAvailable)
}

// An uncertain delivery is retried once, flagged, and a second uncertain
// outcome ends it as "uncertain": never a string of blind resends.
func TestSendUncertainRetriedOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{maxRetries: 5, retryDelay: []int32{1}})
	e := h.insert(t, h.params("drop@example.com"))

	got := h.waitEmail(t, e.ID, "uncertain", func(e *store.Email) bool { return e.Status == store.StatusUncertain })
	if got.RetryCount != 2 {
		t.Errorf("retry_count = %d, want 2 (two attempts)", got.RetryCount)
	}
	evs := h.events(t, e.ID)
	want := []string{"queued", "uncertain", "uncertain"}
	if types := eventTypes(evs); !slices.Equal(types, want) {
		t.Fatalf("events = %v, want %v", types, want)
	}
	var flags []any
	for _, ev := range evs {
		if ev.Type == "uncertain" {
			flags = append(flags, eventData(t, ev)["will_retry"])
		}
	}
	if !slices.Equal(flags, []any{true, false}) {
		t.Errorf("will_retry flags = %v, want [true false]", flags)
	}
	if st := h.sink.Stats(); st.Dropped != 2 {
		t.Errorf("sink dropped %d sends, want exactly 2", st.Dropped)
	}
	h.waitJob(t, *e.JobID, rivertype.JobStateCancelled)
}

// A send whose job times out while waiting for the server's answer to DATA
// is recorded as uncertain, with the policy applied, although the job's
// own context is gone: never left "processing" and resent blind.
func TestSendJobTimeoutAfterDataIsUncertain(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{maxRetries: 3, retryDelay: []int32{1}, jobTimeout: 500 * time.Millisecond,
		settings: store.QueueSettings{UncertainPolicy: "fail"}})
	e := h.insert(t, h.params("slow@example.com"))

	h.waitEmail(t, e.ID, "uncertain", func(e *store.Email) bool { return e.Status == store.StatusUncertain })
	h.waitJob(t, *e.JobID, rivertype.JobStateCancelled)
	time.Sleep(3 * time.Second) // a blind resend would reach the slow sink by now
	if st := h.sink.Stats(); st.Messages > 1 {
		t.Errorf("the sink got %d copies, want at most 1", st.Messages)
	}
	if types := eventTypes(h.events(t, e.ID)); !slices.Equal(types, []string{"queued", "uncertain"}) {
		t.Errorf("events = %v, want [queued uncertain]", types)
	}
}

// With uncertain_policy "fail" the first uncertain outcome is final.
func TestSendUncertainPolicyFail(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{maxRetries: 5, retryDelay: []int32{1},
		settings: store.QueueSettings{UncertainPolicy: "fail"}})
	e := h.insert(t, h.params("drop@example.com"))

	h.waitEmail(t, e.ID, "uncertain", func(e *store.Email) bool { return e.Status == store.StatusUncertain })
	h.waitJob(t, *e.JobID, rivertype.JobStateCancelled)
	if st := h.sink.Stats(); st.Dropped != 1 {
		t.Errorf("sink dropped %d sends, want exactly 1", st.Dropped)
	}
}

// A deactivated app's email is not sent; it waits for reactivation.
func TestSendInactiveAppWaits(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{maxRetries: 3})
	e := h.insertLater(t, h.params("someone@example.com"))
	if _, err := h.pool.Exec(t.Context(), `UPDATE apps SET is_active = false WHERE id = $1`, h.app.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.JobRetry(t.Context(), *e.JobID); err != nil {
		t.Fatal(err)
	}
	h.waitJob(t, *e.JobID, rivertype.JobStateScheduled)
	got, err := h.st.EmailGet(t.Context(), h.app.ID, e.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != store.StatusQueued || h.sink.Stats().Connections != 0 {
		t.Errorf("status %s, sink %+v: want queued and untouched", got.Status, h.sink.Stats())
	}
}

// insertLater inserts an email whose job waits an hour, so the test can
// change the email before making the job run at once with JobRetry.
func (h *harness) insertLater(t *testing.T, p *store.EmailInsertParams) *store.Email {
	t.Helper()
	later := time.Now().Add(time.Hour)
	p.ScheduledAt = &later
	e := h.insert(t, p)
	if j := h.waitJob(t, *e.JobID, rivertype.JobStateScheduled); !j.ScheduledAt.After(time.Now().Add(50 * time.Minute)) {
		t.Fatalf("job scheduled at %s, want an hour ahead", j.ScheduledAt)
	}
	return e
}

func (h *harness) runNow(t *testing.T, jobID int64) {
	t.Helper()
	if _, err := h.client.JobRetry(t.Context(), jobID); err != nil {
		t.Fatalf("JobRetry(%d): %v", jobID, err)
	}
}

func (h *harness) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	tag, err := h.pool.Exec(t.Context(), sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	if tag.RowsAffected() != 1 {
		t.Fatalf("%s: %d rows affected, want 1", sql, tag.RowsAffected())
	}
}

func TestSendSkipsCancelledEmail(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{maxRetries: 2})
	e := h.insertLater(t, h.params("rcpt@example.com"))
	h.exec(t, `UPDATE emails SET status = 'cancelled' WHERE id = $1`, e.ID)
	h.runNow(t, *e.JobID)

	h.waitJob(t, *e.JobID, rivertype.JobStateCompleted)
	got, err := h.st.EmailGet(t.Context(), h.app.ID, e.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != store.StatusCancelled || got.SentAt != nil {
		t.Errorf("status %s, sent_at %v; want cancelled and never sent", got.Status, deref(got.SentAt))
	}
	if types := eventTypes(h.events(t, e.ID)); !slices.Equal(types, []string{"queued"}) {
		t.Errorf("events = %v, want only [queued]", types)
	}
	if st := h.sink.Stats(); st.Messages != 0 || st.Connections != 0 {
		t.Errorf("sink stats %+v, want no connection at all", st)
	}
}

func TestSendExpiresStaleEmail(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{maxRetries: 2})
	p := h.params("rcpt@example.com")
	expires := time.Now().Add(2 * time.Hour)
	p.ExpiresAt = &expires
	e := h.insertLater(t, p)
	h.exec(t, `UPDATE emails SET expires_at = now() - interval '1 minute' WHERE id = $1`, e.ID)
	h.runNow(t, *e.JobID)

	got := h.waitStatus(t, e.ID, store.StatusExpired)
	if got.SentAt != nil {
		t.Errorf("sent_at = %v, want never sent", *got.SentAt)
	}
	if types := eventTypes(h.events(t, e.ID)); !slices.Equal(types, []string{"queued", "expired"}) {
		t.Errorf("events = %v, want [queued expired]", types)
	}
	h.waitJob(t, *e.JobID, rivertype.JobStateCompleted)
	if st := h.sink.Stats(); st.Messages != 0 {
		t.Errorf("sink received %d messages, want 0", st.Messages)
	}
}

// An email deleted after it was queued (GDPR) cancels its job.
func TestSendCancelsJobOfDeletedEmail(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{maxRetries: 2})
	e := h.insertLater(t, h.params("rcpt@example.com"))
	h.exec(t, `DELETE FROM emails WHERE id = $1`, e.ID)
	h.runNow(t, *e.JobID)

	job := h.waitJob(t, *e.JobID, rivertype.JobStateCancelled)
	if len(job.Errors) == 0 || !strings.Contains(job.Errors[len(job.Errors)-1].Error, "not found") {
		t.Errorf("job errors = %v, want not found", job.Errors)
	}
	if _, err := h.st.EmailGet(t.Context(), h.app.ID, e.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("EmailGet after delete: %v, want ErrNotFound", err)
	}
	if st := h.sink.Stats(); st.Messages != 0 {
		t.Errorf("sink received %d messages, want 0", st.Messages)
	}
}

// A paused queue's jobs wait (snooze) without touching the email.
func TestSendSnoozesWhilePaused(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{maxRetries: 2})
	e := h.insertLater(t, h.params("rcpt@example.com"))
	h.exec(t, `UPDATE queues SET is_paused = true WHERE id = $1`, h.queue.ID)
	h.runNow(t, *e.JobID)

	h.waitJobCond(t, *e.JobID, "snoozed for about 15s", func(j *rivertype.JobRow) bool {
		return j.State == rivertype.JobStateScheduled && j.ScheduledAt.After(time.Now().Add(5*time.Second)) &&
			j.ScheduledAt.Before(time.Now().Add(20*time.Second))
	})
	got, err := h.st.EmailGet(t.Context(), h.app.ID, e.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != store.StatusQueued || got.RetryCount != 0 {
		t.Errorf("status %s retry_count %d, want queued and 0", got.Status, got.RetryCount)
	}
	if want := "queue " + h.queue.Name + " is paused"; got.WaitingReason == nil || *got.WaitingReason != want {
		t.Errorf("waiting_reason = %v, want %q", got.WaitingReason, want)
	}
	if types := eventTypes(h.events(t, e.ID)); !slices.Equal(types, []string{"queued"}) {
		t.Errorf("events = %v, want only [queued]", types)
	}
	if st := h.sink.Stats(); st.Messages != 0 {
		t.Errorf("sink received %d messages, want 0", st.Messages)
	}
}
