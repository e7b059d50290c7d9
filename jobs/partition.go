package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/mailqueue/mailqueue/partitions"
)

// PartitionArgs is the River job that creates the coming months' partitions
// of the partitioned tables. It has no arguments: each run covers the month
// of the run and partitions.MonthsAhead months after it.
type PartitionArgs struct{}

// Kind returns the job kind stored in river_job.
func (PartitionArgs) Kind() string { return "partition_maintenance" }

// InsertOpts puts the job on the "maintenance" queue, away from the send
// lanes, and makes it unique per hour: after a leader change the new leader
// runs its periodic jobs on start, and the job it inserts is skipped when the
// old leader's ran within the same hour.
func (PartitionArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{
		Queue:      "maintenance",
		UniqueOpts: river.UniqueOpts{ByPeriod: time.Hour},
	}
}

// PartitionWorker works PartitionArgs jobs. Pool and Logger are required;
// Now defaults to time.Now and is there for tests.
type PartitionWorker struct {
	river.WorkerDefaults[PartitionArgs]

	Pool   *pgxpool.Pool
	Logger *slog.Logger
	Now    func() time.Time
}

// Work creates whichever partitions are missing for the current month and
// the partitions.MonthsAhead months after it.
func (w *PartitionWorker) Work(ctx context.Context, job *river.Job[PartitionArgs]) error {
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	created, err := partitions.Ensure(ctx, w.Pool, now(), partitions.MonthsAhead)
	for _, name := range created {
		w.Logger.InfoContext(ctx, "created partition", slog.String("partition", name), slog.Int64("job_id", job.ID))
	}
	if err != nil {
		return fmt.Errorf("ensuring partitions: %w", err)
	}
	return nil
}

// PartitionPeriodicJob schedules PartitionArgs every six hours and on start.
// River runs periodic jobs on the elected leader only; running on start
// covers a cluster restarted right before a month begins.
func PartitionPeriodicJob() *river.PeriodicJob {
	return river.NewPeriodicJob(
		river.PeriodicInterval(6*time.Hour),
		func() (river.JobArgs, *river.InsertOpts) { return PartitionArgs{}, nil },
		&river.PeriodicJobOpts{ID: "partition_maintenance", RunOnStart: true},
	)
}
