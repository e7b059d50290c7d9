package jobs_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/mailqueue/mailqueue/jobs"
	"github.com/mailqueue/mailqueue/store"
	"github.com/mailqueue/mailqueue/testenv"
)

// scanEnv is a database with a store that inserts real send jobs through an
// insert-only River client (nothing is sent), an app with a queue, and a
// clock the test moves.
type scanEnv struct {
	pool  *pgxpool.Pool
	st    *store.Store
	app   *store.App
	queue *store.Queue

	mu  sync.Mutex
	now time.Time
}

func newScanEnv(t *testing.T, start time.Time) *scanEnv {
	t.Helper()
	logger := testenv.Logger(t)
	pool := testenv.DB(t)
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: logger, TestOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(pool, jobs.NewEnqueuer(rc))
	app, err := st.AppInsert(t.Context(), &store.AppInsertParams{Name: "scheduler"})
	if err != nil {
		t.Fatal(err)
	}
	q, err := st.QueueInsert(t.Context(), &store.QueueInsertParams{AppID: app.ID, Name: "default", Priority: 5, MaxRetries: 3})
	if err != nil {
		t.Fatal(err)
	}
	return &scanEnv{pool: pool, st: st, app: app, queue: q, now: start}
}

func (e *scanEnv) set(t time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.now = t
}

func (e *scanEnv) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *scanEnv) worker(t *testing.T) *jobs.ScheduleWorker {
	return &jobs.ScheduleWorker{Store: e.st, Logger: testenv.Logger(t), Now: e.clock}
}

// addJob stores an active scheduled job whose first occurrence is the one
// after the clock, as the API does.
func (e *scanEnv) addJob(t *testing.T, cronExpr, tz string) *store.ScheduledJob {
	t.Helper()
	s, err := store.ParseSchedule(cronExpr, tz)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, _ := json.Marshal(map[string]any{
		"from": map[string]any{"email": "reports@example.com"}, "to": []any{map[string]any{"email": "boss@example.com"}},
		"subject": "Report", "text": "Numbers.", "queue": "default",
	})
	next := s.Next(e.clock())
	j, err := e.st.ScheduledJobInsert(t.Context(), &store.ScheduledJobInsertParams{
		AppID: e.app.ID, QueueID: e.queue.ID, Name: "report", CronExpression: cronExpr, Timezone: tz,
		EmailTemplate: tmpl, IsActive: true, NextRunAt: &next, Now: e.clock(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func (e *scanEnv) scan(t *testing.T, w *jobs.ScheduleWorker) int {
	t.Helper()
	n, err := w.Scan(t.Context())
	if err != nil {
		t.Fatalf("Scan: %v", err)
	}
	return n
}

func (e *scanEnv) job(t *testing.T, id uuid.UUID) *store.ScheduledJob {
	t.Helper()
	j, err := e.st.ScheduledJobGet(t.Context(), e.app.ID, id)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// emails returns the idempotency keys of the app's emails, which name the
// job and occurrence that queued them.
func (e *scanEnv) emails(t *testing.T) []string {
	t.Helper()
	rows, err := e.pool.Query(t.Context(),
		`SELECT coalesce(idempotency_key, '') FROM emails WHERE app_id = $1 ORDER BY idempotency_key`, e.app.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		out = append(out, k)
	}
	return out
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// The scan, driven by a clock crossing both daylight saving changes of 2026,
// fires a 09:00 Europe/Berlin job at 09:00 local time every day: 08:00 UTC
// in winter, 07:00 UTC in summer.
func TestScheduleScanAcrossDST(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		start string
		fires []string
	}{
		{"spring", "2026-03-27T12:00:00Z", []string{"2026-03-28T08:00:00Z", "2026-03-29T07:00:00Z", "2026-03-30T07:00:00Z"}},
		{"autumn", "2026-10-23T12:00:00Z", []string{"2026-10-24T07:00:00Z", "2026-10-25T08:00:00Z", "2026-10-26T08:00:00Z"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := newScanEnv(t, utc(tc.start))
			w := env.worker(t)
			j := env.addJob(t, "0 9 * * *", "Europe/Berlin")
			if !j.NextRunAt.Equal(utc(tc.fires[0])) {
				t.Fatalf("first next_run_at = %s, want %s", j.NextRunAt, tc.fires[0])
			}
			for i, fire := range tc.fires {
				// A second before: nothing is due.
				env.set(utc(fire).Add(-time.Second))
				if n := env.scan(t, w); n != 0 {
					t.Fatalf("scan before %s fired %d", fire, n)
				}
				env.set(utc(fire).Add(3 * time.Second))
				if n := env.scan(t, w); n != 1 {
					t.Fatalf("scan at %s fired %d, want 1", fire, n)
				}
				got := env.job(t, j.ID)
				if got.LastRunAt == nil || !got.LastRunAt.Equal(utc(fire)) {
					t.Errorf("last_run_at = %v, want %s", got.LastRunAt, fire)
				}
				if i+1 < len(tc.fires) && !got.NextRunAt.Equal(utc(tc.fires[i+1])) {
					t.Errorf("next_run_at after %s = %s, want %s", fire, got.NextRunAt, tc.fires[i+1])
				}
			}
			keys := env.emails(t)
			if len(keys) != len(tc.fires) {
				t.Fatalf("%d emails, want %d: %v", len(keys), len(tc.fires), keys)
			}
			for i, fire := range tc.fires {
				if want := "scheduled:" + j.ID.String() + ":" + fire; keys[i] != want {
					t.Errorf("email %d key = %s, want %s", i, keys[i], want)
				}
			}
		})
	}
}

// Occurrences missed while nothing scanned fire once, then the job skips to
// its next occurrence after now.
func TestScheduleScanMissedOccurrencesFireOnce(t *testing.T) {
	t.Parallel()
	env := newScanEnv(t, utc("2026-05-04T10:00:00Z"))
	w := env.worker(t)
	j := env.addJob(t, "0 * * * *", "UTC") // hourly, first at 11:00
	env.set(utc("2026-05-07T15:30:00Z"))   // three days down
	if n := env.scan(t, w); n != 1 {
		t.Fatalf("scan fired %d, want 1", n)
	}
	got := env.job(t, j.ID)
	if !got.LastRunAt.Equal(utc("2026-05-04T11:00:00Z")) || !got.NextRunAt.Equal(utc("2026-05-07T16:00:00Z")) {
		t.Errorf("last_run_at %s, next_run_at %s; want the missed 11:00 and 16:00 today", got.LastRunAt, got.NextRunAt)
	}
	if n := env.scan(t, w); n != 0 {
		t.Errorf("second scan fired %d, want 0", n)
	}
	if keys := env.emails(t); len(keys) != 1 {
		t.Errorf("%d emails, want 1", len(keys))
	}
}

// Scanners running at once (an old and a new leader, or two overlapping
// ticks) queue each occurrence once.
func TestScheduleScanConcurrentScannersFireOnce(t *testing.T) {
	t.Parallel()
	env := newScanEnv(t, utc("2026-06-01T08:59:00Z"))
	const jobsN = 30
	for range jobsN {
		env.addJob(t, "0 9 * * *", "UTC")
	}
	env.set(utc("2026-06-01T09:00:01Z"))
	var wg sync.WaitGroup
	counts := make([]int, 4)
	for i := range counts {
		wg.Go(func() {
			n, err := env.worker(t).Scan(context.Background())
			if err != nil {
				t.Errorf("scanner %d: %v", i, err)
			}
			counts[i] = n
		})
	}
	wg.Wait()
	total := 0
	for _, n := range counts {
		total += n
	}
	if total != jobsN {
		t.Errorf("scanners fired %v (total %d), want %d in all", counts, total, jobsN)
	}
	keys := env.emails(t)
	seen := map[string]bool{}
	for _, k := range keys {
		if seen[k] {
			t.Errorf("occurrence %s queued twice", k)
		}
		seen[k] = true
	}
	if len(keys) != jobsN {
		t.Errorf("%d emails, want %d", len(keys), jobsN)
	}
}

// A scan that dies mid-way leaves nothing behind and the next one fires the
// occurrence; an occurrence that already fired never fires again, even if
// the job is made to look due for it again (a stale or skewed scanner).
func TestScheduleScanAfterCrash(t *testing.T) {
	t.Parallel()
	env := newScanEnv(t, utc("2026-06-01T08:59:00Z"))
	w := env.worker(t)
	j := env.addJob(t, "0 9 * * *", "UTC")
	env.set(utc("2026-06-01T09:00:01Z"))

	// A scanner crashes after queuing the email but before committing.
	crash := errors.New("crash")
	err := env.st.Tx(t.Context(), func(tx *store.Store) error {
		claimed, err := tx.ScheduledJobClaimDue(t.Context(), env.clock(), nil, nil)
		if err != nil {
			return err
		}
		p, err := claimed.EmailParams(env.queue)
		if err != nil {
			return err
		}
		if _, err := tx.EmailInsert(t.Context(), p); err != nil {
			return err
		}
		return crash
	})
	if !errors.Is(err, crash) {
		t.Fatalf("crashed scan: %v", err)
	}
	if keys := env.emails(t); len(keys) != 0 {
		t.Fatalf("a crashed scan left %d emails", len(keys))
	}
	if n := env.scan(t, w); n != 1 {
		t.Fatalf("scan after the crash fired %d, want 1", n)
	}

	// Make the fired occurrence due again: the runs table refuses it.
	if _, err := env.pool.Exec(t.Context(), `UPDATE scheduled_jobs SET next_run_at = $2 WHERE id = $1`,
		j.ID, utc("2026-06-01T09:00:00Z")); err != nil {
		t.Fatal(err)
	}
	if n := env.scan(t, w); n != 1 {
		t.Fatalf("scan of the stale occurrence handled %d, want 1", n)
	}
	if keys := env.emails(t); len(keys) != 1 {
		t.Errorf("%d emails, want 1: the occurrence fired twice", len(keys))
	}
	if got := env.job(t, j.ID); !got.NextRunAt.Equal(utc("2026-06-02T09:00:00Z")) {
		t.Errorf("next_run_at = %s, want tomorrow 09:00", got.NextRunAt)
	}
}

// An occurrence that cannot queue its email (queue draining, quota reached)
// is skipped, recorded, and the job moves on rather than retrying forever.
func TestScheduleScanSkips(t *testing.T) {
	t.Parallel()
	env := newScanEnv(t, utc("2026-06-01T08:59:00Z"))
	w := env.worker(t)
	j := env.addJob(t, "0 9 * * *", "UTC")

	if _, err := env.pool.Exec(t.Context(), `UPDATE queues SET is_draining = true WHERE id = $1`, env.queue.ID); err != nil {
		t.Fatal(err)
	}
	env.set(utc("2026-06-01T09:00:01Z"))
	if n := env.scan(t, w); n != 1 {
		t.Fatalf("scan fired %d, want 1", n)
	}
	if _, err := env.pool.Exec(t.Context(),
		`UPDATE queues SET is_draining = false WHERE id = $1;`, env.queue.ID); err != nil {
		t.Fatal(err)
	}
	// A daily limit already used up by the first email of the day.
	if _, err := env.pool.Exec(t.Context(), `UPDATE apps SET daily_limit = 1 WHERE id = $1`, env.app.ID); err != nil {
		t.Fatal(err)
	}
	if err := env.st.AppUsageTake(t.Context(), env.app.ID, 1, utc("2026-06-02T06:00:00Z")); err != nil {
		t.Fatal(err)
	}
	env.set(utc("2026-06-02T09:00:01Z"))
	if n := env.scan(t, w); n != 1 {
		t.Fatalf("scan fired %d, want 1", n)
	}
	if keys := env.emails(t); len(keys) != 0 {
		t.Errorf("%d emails queued, want none", len(keys))
	}
	rows, err := env.pool.Query(t.Context(),
		`SELECT skipped_reason FROM scheduled_job_runs WHERE scheduled_job_id = $1 AND email_id IS NULL ORDER BY occurrence_at`, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			t.Fatal(err)
		}
		reasons = append(reasons, r)
	}
	if len(reasons) != 2 || reasons[0] != "queue default is draining" || reasons[1] != "daily or monthly email limit reached" {
		t.Errorf("skipped runs = %q", reasons)
	}
	if got := env.job(t, j.ID); !got.NextRunAt.Equal(utc("2026-06-03T09:00:00Z")) || !got.IsActive {
		t.Errorf("job after skips: next_run_at %s active %v, want the 3rd and active", got.NextRunAt, got.IsActive)
	}
}
