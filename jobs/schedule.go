package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"

	"github.com/mailqueue/mailqueue/store"
)

// ScheduleArgs is the River job that fires the scheduled jobs (recurring
// emails) that are due. It has no arguments: each run takes every job whose
// next_run_at has passed.
type ScheduleArgs struct{}

// Kind returns the job kind stored in river_job.
func (ScheduleArgs) Kind() string { return "scheduled_jobs_scan" }

// InsertOpts puts the scan on the maintenance queue with a single attempt:
// a failed scan is not retried, the next tick scans again.
func (ScheduleArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueMaintenance, MaxAttempts: 1}
}

// DefaultScheduleInterval is how often the due scan runs: a recurring email
// goes out at most this long after its minute.
const DefaultScheduleInterval = 15 * time.Second

// scheduleBatch bounds the occurrences one scan fires, so a scan after a long
// outage ends and the next one carries on.
const scheduleBatch = 500

// SchedulePeriodicJob runs the due scan every interval and on start. River
// runs periodic jobs on the elected leader only; a scan that still runs on
// an old leader, or two scans at once, are harmless (see ScheduleWorker).
func SchedulePeriodicJob(interval time.Duration) *river.PeriodicJob {
	if interval <= 0 {
		interval = DefaultScheduleInterval
	}
	return river.NewPeriodicJob(
		river.PeriodicInterval(interval),
		func() (river.JobArgs, *river.InsertOpts) { return ScheduleArgs{}, nil },
		&river.PeriodicJobOpts{ID: "scheduled_jobs_scan", RunOnStart: true},
	)
}

// ScheduleWorker fires due scheduled jobs. Each occurrence is handled in one
// transaction that claims the job row (FOR UPDATE SKIP LOCKED), records the
// occurrence in scheduled_job_runs (primary key: job, occurrence), inserts
// the email exactly as POST /v1/emails does, and moves next_run_at on. Either
// all of it commits or none, and the runs key refuses a second email for an
// occurrence, so each occurrence queues one email however many scanners run
// and whenever one crashes.
//
// Occurrences missed while nothing ran (downtime) fire once, late, and the
// job then skips to its next occurrence after now: a daily report that was
// down for three days sends one email, not three.
type ScheduleWorker struct {
	river.WorkerDefaults[ScheduleArgs]

	Store  *store.Store // with a send enqueuer
	Logger *slog.Logger
	Now    func() time.Time
}

// Work runs one scan.
func (w *ScheduleWorker) Work(ctx context.Context, _ *river.Job[ScheduleArgs]) error {
	_, err := w.Scan(ctx)
	return err
}

// Scan fires every due occurrence (up to a bound) and returns how many it
// handled.
func (w *ScheduleWorker) Scan(ctx context.Context) (int, error) {
	now := w.now()
	n := 0
	for ; n < scheduleBatch; n++ {
		found, err := w.fireOne(ctx, now)
		if err != nil {
			return n, err
		}
		if !found {
			break
		}
	}
	return n, nil
}

// errQuota carries a quota refusal out of the transaction it must roll back.
type errQuota struct {
	job        uuid.UUID
	occurrence time.Time
	err        error
}

func (e *errQuota) Error() string { return e.err.Error() }

// fireOne fires the earliest due occurrence; false when none is due.
func (w *ScheduleWorker) fireOne(ctx context.Context, now time.Time) (bool, error) {
	found := false
	err := w.Store.Tx(ctx, func(tx *store.Store) error {
		j, err := tx.ScheduledJobClaimDue(ctx, now, nil, nil)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		found = true
		return w.fire(ctx, tx, j, now, true)
	})
	var q *errQuota
	if errors.As(err, &q) {
		// The quota check's writes are rolled back with the email; record
		// the occurrence as skipped in a transaction of its own.
		w.Logger.WarnContext(ctx, "scheduled email skipped: quota reached",
			"scheduled_job_id", q.job, "occurrence_at", q.occurrence, "error", q.err)
		err = w.Store.Tx(ctx, func(tx *store.Store) error {
			j, err := tx.ScheduledJobClaimDue(ctx, now, &q.job, &q.occurrence)
			if errors.Is(err, store.ErrNotFound) {
				return nil // handled meanwhile by another scanner
			}
			if err != nil {
				return err
			}
			return w.fire(ctx, tx, j, now, false)
		})
	}
	return found, err
}

// fire handles the occurrence j.NextRunAt of the claimed job j: queues its
// email (unless send is false or the occurrence already fired) and moves the
// job to its next occurrence after now.
func (w *ScheduleWorker) fire(ctx context.Context, tx *store.Store, j *store.ScheduledJob, now time.Time, send bool) error {
	occ := *j.NextRunAt
	log := w.Logger.With("scheduled_job_id", j.ID, "app_id", j.AppID, "occurrence_at", occ)
	var next *time.Time
	if s, err := store.ParseSchedule(j.CronExpression, j.Timezone); err != nil {
		// Validated when saved; a zone removed from the tz database since
		// would end here. The job stops rather than looping.
		log.WarnContext(ctx, "scheduled job has an invalid schedule; deactivating it", "error", err)
	} else if n := s.Next(now); !n.IsZero() {
		next = &n
	}
	first, err := tx.ScheduledJobRunInsert(ctx, j.ID, occ)
	if err != nil {
		return err
	}
	if first {
		var emailID *uuid.UUID
		var skipped *string
		if send {
			id, reason, err := w.queueEmail(ctx, tx, j, now)
			if err != nil {
				return err
			}
			emailID, skipped = id, reason
		} else {
			reason := "daily or monthly email limit reached"
			skipped = &reason
		}
		if skipped != nil {
			log.WarnContext(ctx, "scheduled email not queued", "reason", *skipped)
		} else {
			log.InfoContext(ctx, "scheduled email queued", "email_id", *emailID)
		}
		if err := tx.ScheduledJobRunFinish(ctx, j.ID, occ, emailID, skipped); err != nil {
			return err
		}
	}
	return tx.ScheduledJobAdvance(ctx, j.ID, occ, next, now)
}

// queueEmail inserts the email of one occurrence, or says why it cannot.
func (w *ScheduleWorker) queueEmail(ctx context.Context, tx *store.Store, j *store.ScheduledJob, now time.Time) (*uuid.UUID, *string, error) {
	skip := func(format string, args ...any) (*uuid.UUID, *string, error) {
		s := fmt.Sprintf(format, args...)
		return nil, &s, nil
	}
	q, err := tx.QueueGet(ctx, j.AppID, j.QueueID)
	if errors.Is(err, store.ErrNotFound) {
		return skip("queue %s was deleted", j.QueueName)
	}
	if err != nil {
		return nil, nil, err
	}
	if q.IsDraining {
		return skip("queue %s is draining", q.Name)
	}
	p, err := j.EmailParams(q)
	if err != nil {
		return skip("%v", err)
	}
	// Traceability only: the runs table, not this key, guarantees one
	// email per occurrence.
	key := "scheduled:" + j.ID.String() + ":" + j.NextRunAt.UTC().Format(time.RFC3339)
	p.IdempotencyKey = &key
	if err := tx.AppUsageTake(ctx, j.AppID, 1, now); err != nil {
		var qe *store.QuotaError
		if errors.As(err, &qe) {
			return nil, nil, &errQuota{job: j.ID, occurrence: *j.NextRunAt, err: err}
		}
		return nil, nil, err
	}
	e, err := tx.EmailInsert(ctx, p)
	if err != nil {
		return nil, nil, err
	}
	return &e.ID, nil, nil
}

func (w *ScheduleWorker) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}
