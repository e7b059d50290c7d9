package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/mailqueue/mailqueue/jobs"
	"github.com/mailqueue/mailqueue/store"
	"github.com/mailqueue/mailqueue/testenv"
)

// oneByOne hides the batch method of a real enqueuer, so the store takes
// its one-job-at-a-time path.
type oneByOne struct{ e *jobs.Enqueuer }

func (o oneByOne) EnqueueSendTx(ctx context.Context, tx pgx.Tx, e *store.Email) (int64, error) {
	return o.e.EnqueueSendTx(ctx, tx, e)
}

func TestEmailInsertBatch(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"many", "one by one"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			pool := testenv.DB(t)
			client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: testenv.Logger(t), TestOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			var enq store.SendEnqueuer = jobs.NewEnqueuer(client)
			if name == "one by one" {
				enq = oneByOne{jobs.NewEnqueuer(client)}
			}
			e := &env{pool: pool, st: store.New(pool, enq)}
			ctx := t.Context()
			app, other := e.app(t, "a"), e.app(t, "b")
			q := e.queue(t, app.ID, "default")

			batchID, _ := store.NewID()
			later := time.Now().Add(time.Hour).UTC().Truncate(time.Microsecond)
			html := "<p>hi</p>"
			p := &store.EmailBatchInsertParams{
				AppID: app.ID, Queue: q, BatchID: batchID, MessageIDDomain: "mq.example.com",
				From: store.Address{Email: "news@example.com", Name: "News"}, Headers: map[string]string{"X-A": "b"},
				Priority: 8, ScheduledAt: &later,
			}
			n := 2500
			if name == "one by one" {
				n = 30
			}
			for i := range n {
				p.Emails = append(p.Emails, store.BatchEmail{
					To: store.Address{Email: fmt.Sprintf("u%d@example.com", i)}, Subject: fmt.Sprintf("s%d", i), HTML: &html,
					Metadata: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)),
				})
			}
			ids, err := e.st.EmailInsertBatch(ctx, p)
			if err != nil {
				t.Fatalf("EmailInsertBatch: %v", err)
			}
			if len(ids) != n {
				t.Fatalf("%d ids", len(ids))
			}
			var c int
			err = pool.QueryRow(ctx, `SELECT count(*) FROM emails e JOIN river_job j ON j.id = e.job_id
				WHERE e.batch_id = $1 AND j.args->>'email_id' = e.id::text AND j.state = 'scheduled'
				  AND j.queue = 'high' AND e.metadata->>'i' = substr(e.subject, 2)
				  AND e.to_addresses->0->>'email' = 'u' || substr(e.subject, 2) || '@example.com'
				  AND e.scheduled_at = $2 AND e.priority = 8`, batchID, later).Scan(&c)
			if err != nil || c != n {
				t.Errorf("consistent rows = %d (%v), want %d", c, err, n)
			}
			got, err := e.st.EmailGet(ctx, app.ID, ids[n-1])
			if err != nil || got.Subject != fmt.Sprintf("s%d", n-1) || *got.BatchID != batchID || got.Headers["X-A"] != "b" ||
				*got.FromName != "News" || got.Status != store.StatusQueued || got.NextAttemptAt == nil {
				t.Errorf("last email = %+v (%v)", got, err)
			}
			if evs := e.eventTypes(t, app.ID, ids[0]); len(evs) != 1 || evs[0] != "queued" {
				t.Errorf("events = %v", evs)
			}
			counts, err := e.st.EmailBatchCounts(ctx, app.ID, batchID)
			if err != nil || len(counts) != 1 || counts[store.StatusQueued] != int64(n) {
				t.Errorf("counts = %v (%v)", counts, err)
			}
			if counts, err := e.st.EmailBatchCounts(ctx, other.ID, batchID); err != nil || len(counts) != 0 {
				t.Errorf("another app's counts = %v (%v)", counts, err)
			}
			if counts, err := e.st.EmailBatchCounts(ctx, app.ID, uuid.New()); err != nil || len(counts) != 0 {
				t.Errorf("unknown batch counts = %v (%v)", counts, err)
			}
		})
	}
}

// interleaved inserts a batch's send jobs in two halves and, between them,
// commits a job of another email from another connection, so that job's id
// falls inside the range of ids the batch's session took.
type interleaved struct {
	*jobs.Enqueuer
	other *river.Client[pgx.Tx]
	t     *testing.T
}

func (e interleaved) EnqueueSendManyTx(ctx context.Context, tx pgx.Tx, emails []*store.Email) error {
	half := len(emails) / 2
	if err := e.Enqueuer.EnqueueSendManyTx(ctx, tx, emails[:half]); err != nil {
		return err
	}
	if _, err := e.other.Insert(ctx, jobs.SendArgs{EmailID: uuid.New()}, nil); err != nil {
		e.t.Errorf("inserting another session's job: %v", err)
	}
	return e.Enqueuer.EnqueueSendManyTx(ctx, tx, emails[half:])
}

func TestEmailInsertBatchJobIDsAmongOthers(t *testing.T) {
	t.Parallel()
	pool := testenv.DB(t)
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: testenv.Logger(t), TestOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{pool: pool, st: store.New(pool, interleaved{jobs.NewEnqueuer(client), client, t})}
	ctx := t.Context()
	app := e.app(t, "a")
	q := e.queue(t, app.ID, "default")
	batchID, _ := store.NewID()
	p := &store.EmailBatchInsertParams{
		AppID: app.ID, Queue: q, BatchID: batchID, MessageIDDomain: "mq.example.com",
		From: store.Address{Email: "news@example.com"}, Priority: 5,
	}
	const n = 4100
	for i := range n {
		p.Emails = append(p.Emails, store.BatchEmail{To: store.Address{Email: fmt.Sprintf("u%d@example.com", i)}, Subject: "s"})
	}
	ids, err := e.st.EmailInsertBatch(ctx, p)
	if err != nil {
		t.Fatalf("EmailInsertBatch: %v", err)
	}
	if len(ids) != n {
		t.Fatalf("%d ids", len(ids))
	}
	var own, foreign, inside int
	err = pool.QueryRow(ctx, `SELECT
		  (SELECT count(*) FROM emails e JOIN river_job j ON j.id = e.job_id
		   WHERE e.batch_id = $1 AND j.args->>'email_id' = e.id::text),
		  (SELECT count(*) FROM river_job j WHERE NOT EXISTS (SELECT FROM emails e WHERE e.id::text = j.args->>'email_id')),
		  (SELECT count(*) FROM river_job j WHERE NOT EXISTS (SELECT FROM emails e WHERE e.id::text = j.args->>'email_id')
		     AND j.id > (SELECT min(job_id) FROM emails WHERE batch_id = $1)
		     AND j.id < (SELECT max(job_id) FROM emails WHERE batch_id = $1))`, batchID).Scan(&own, &foreign, &inside)
	if err != nil || own != n || foreign != 1 || inside != 1 {
		t.Errorf("emails with their own job = %d, other jobs = %d (%d inside the batch's range) (%v); want %d, 1, 1", own, foreign, inside, err, n)
	}
}
