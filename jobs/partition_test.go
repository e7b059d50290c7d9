package jobs_test

import (
	"context"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/mailqueue/mailqueue/jobs"
	"github.com/mailqueue/mailqueue/partitions"
	"github.com/mailqueue/mailqueue/testenv"
)

func TestPartitionWorkerCreatesFuturePartitions(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := testenv.DB(t)
	logger := testenv.Logger(t)
	now := time.Date(2031, 5, 20, 3, 0, 0, 0, time.UTC)

	workers := river.NewWorkers()
	river.AddWorker(workers, &jobs.PartitionWorker{Pool: pool, Logger: logger, Now: func() time.Time { return now }})
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Logger:       logger,
		Queues:       map[string]river.QueueConfig{"maintenance": {MaxWorkers: 2}},
		Workers:      workers,
		PeriodicJobs: []*river.PeriodicJob{jobs.PartitionPeriodicJob()},
		TestOnly:     true,
	})
	if err != nil {
		t.Fatalf("creating River client: %v", err)
	}
	events, cancel := client.Subscribe(river.EventKindJobCompleted, river.EventKindJobFailed)
	defer cancel()
	if err := client.Start(ctx); err != nil {
		t.Fatalf("starting River client: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := client.Stop(ctx); err != nil {
			t.Errorf("stopping River client: %v", err)
		}
	})

	// The periodic job's run on start may have inserted it first; either
	// way this returns the job of this hour, and a second insert is refused.
	res, err := client.Insert(ctx, jobs.PartitionArgs{}, nil)
	if err != nil {
		t.Fatalf("inserting PartitionArgs: %v", err)
	}
	if res.Job.Queue != "maintenance" {
		t.Errorf("job went to queue %q, want maintenance", res.Job.Queue)
	}
	again, err := client.Insert(ctx, jobs.PartitionArgs{}, nil)
	if err != nil {
		t.Fatalf("inserting PartitionArgs again: %v", err)
	}
	if !again.UniqueSkippedAsDuplicate || again.Job.ID != res.Job.ID {
		t.Errorf("second insert in the hour: skipped %t, job %d; want skipped, job %d",
			again.UniqueSkippedAsDuplicate, again.Job.ID, res.Job.ID)
	}

	timeout := time.After(30 * time.Second)
	for done := false; !done; {
		select {
		case ev := <-events:
			if ev.Job.ID != res.Job.ID {
				continue
			}
			if ev.Kind != river.EventKindJobCompleted {
				t.Fatalf("partition job ended with %s: %v", ev.Kind, ev.Job.Errors)
			}
			done = true
		case <-timeout:
			t.Fatal("partition job did not complete within 30s")
		}
	}

	for _, table := range partitions.Tables {
		for i := range partitions.MonthsAhead + 1 {
			name := partitions.Name(table, time.Date(2031, time.Month(5+i), 1, 0, 0, 0, 0, time.UTC))
			var exists bool
			if err := pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", name).Scan(&exists); err != nil {
				t.Fatalf("checking %s: %v", name, err)
			}
			if !exists {
				t.Errorf("partition %s missing after the job ran", name)
			}
		}
	}
}

func TestPartitionArgs(t *testing.T) {
	t.Parallel()
	if got := (jobs.PartitionArgs{}).Kind(); got != "partition_maintenance" {
		t.Errorf("Kind() = %q", got)
	}
	opts := jobs.PartitionArgs{}.InsertOpts()
	if opts.Queue != "maintenance" || opts.UniqueOpts.ByPeriod != time.Hour {
		t.Errorf("InsertOpts() = %+v, want queue maintenance, unique by hour", opts)
	}
	if jobs.PartitionPeriodicJob() == nil {
		t.Error("PartitionPeriodicJob() is nil")
	}
}
