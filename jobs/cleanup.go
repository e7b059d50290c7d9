package jobs

import (
	"context"
	"log/slog"
	"time"

	"github.com/riverqueue/river"

	"github.com/mailqueue/mailqueue/store"
)

// CleanupArgs are the arguments of the hourly housekeeping job, which
// removes idempotency keys past their 24 hours.
type CleanupArgs struct{}

// Kind is the stable job kind stored in river_job.
func (CleanupArgs) Kind() string { return "cleanup" }

// InsertOpts puts cleanup on the maintenance queue.
func (CleanupArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueMaintenance}
}

// CleanupWorker runs CleanupArgs.
type CleanupWorker struct {
	river.WorkerDefaults[CleanupArgs]

	Store  *store.Store
	Logger *slog.Logger
}

// Work deletes expired idempotency keys.
func (w *CleanupWorker) Work(ctx context.Context, _ *river.Job[CleanupArgs]) error {
	n, err := w.Store.IdempotencyDeleteOld(ctx)
	if err != nil {
		return err
	}
	if n > 0 {
		w.Logger.Info("deleted expired idempotency keys", "count", n)
	}
	return nil
}

// CleanupPeriodicJob runs cleanup every hour on the leader.
func CleanupPeriodicJob() *river.PeriodicJob {
	return river.NewPeriodicJob(river.PeriodicInterval(time.Hour),
		func() (river.JobArgs, *river.InsertOpts) { return CleanupArgs{}, nil },
		&river.PeriodicJobOpts{RunOnStart: true})
}
