package jobs_test

import (
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/mailqueue/mailqueue/jobs"
)

func TestLane(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		priority  int
		lane      string
		riverPrio int
	}{
		{-5, jobs.LaneBulk, 3},
		{0, jobs.LaneBulk, 3},
		{1, jobs.LaneBulk, 3},
		{2, jobs.LaneBulk, 2},
		{3, jobs.LaneBulk, 1},
		{4, jobs.LaneNormal, 3},
		{5, jobs.LaneNormal, 2},
		{6, jobs.LaneNormal, 1},
		{7, jobs.LaneHigh, 2},
		{8, jobs.LaneHigh, 1},
		{9, jobs.LaneCritical, 2},
		{10, jobs.LaneCritical, 1},
		{11, jobs.LaneCritical, 1},
		{100, jobs.LaneCritical, 1},
	} {
		lane, prio := jobs.Lane(tc.priority)
		if lane != tc.lane || prio != tc.riverPrio {
			t.Errorf("Lane(%d) = %s, %d; want %s, %d", tc.priority, lane, prio, tc.lane, tc.riverPrio)
		}
		if prio < 1 || prio > 4 {
			t.Errorf("Lane(%d) River priority %d outside 1..4", tc.priority, prio)
		}
	}
}

// Higher Mail Queue priorities never land in a slower lane or behind a lower
// priority in the same lane.
func TestLaneIsMonotonic(t *testing.T) {
	t.Parallel()
	rank := map[string]int{jobs.LaneBulk: 0, jobs.LaneNormal: 1, jobs.LaneHigh: 2, jobs.LaneCritical: 3}
	prevLane, prevPrio := jobs.Lane(1)
	for p := 2; p <= 10; p++ {
		lane, prio := jobs.Lane(p)
		switch {
		case rank[lane] < rank[prevLane]:
			t.Errorf("priority %d in lane %s, below priority %d's %s", p, lane, p-1, prevLane)
		case lane == prevLane && prio >= prevPrio:
			t.Errorf("priority %d has River priority %d, not ahead of priority %d's %d", p, prio, p-1, prevPrio)
		}
		prevLane, prevPrio = lane, prio
	}
}

func TestQueueConfig(t *testing.T) {
	t.Parallel()
	lanes := []string{jobs.LaneCritical, jobs.LaneHigh, jobs.LaneNormal, jobs.LaneBulk}
	for _, workers := range []int{4, 5, 8, 10, 64, 100, 1000} {
		cfg := jobs.QueueConfig(workers)
		if len(cfg) != len(lanes)+1 {
			t.Errorf("QueueConfig(%d) has %d queues, want %d", workers, len(cfg), len(lanes)+1)
		}
		sum := 0
		for _, lane := range lanes {
			q, ok := cfg[lane]
			if !ok {
				t.Errorf("QueueConfig(%d) has no %s lane", workers, lane)
				continue
			}
			if q.MaxWorkers < 1 {
				t.Errorf("QueueConfig(%d)[%s].MaxWorkers = %d, want ≥ 1", workers, lane, q.MaxWorkers)
			}
			sum += q.MaxWorkers
		}
		if sum > workers {
			t.Errorf("QueueConfig(%d) lanes share %d workers, more than %d", workers, sum, workers)
		}
		if m, ok := cfg[jobs.QueueMaintenance]; !ok || m.MaxWorkers < 1 {
			t.Errorf("QueueConfig(%d) maintenance queue = %+v, %v", workers, m, ok)
		}
	}
	cfg := jobs.QueueConfig(64)
	if c, b := cfg[jobs.LaneCritical].MaxWorkers, cfg[jobs.LaneBulk].MaxWorkers; c < 12 || b < 16 {
		t.Errorf("QueueConfig(64) critical %d bulk %d, want their 20%% and 25%% shares", c, b)
	}
}

func TestNextRetryFollowsRetryDelay(t *testing.T) {
	t.Parallel()
	now := time.Date(2031, 5, 20, 3, 0, 0, 0, time.UTC)
	w := &jobs.SendWorker{Now: func() time.Time { return now }}
	job := func(attempt int, delay []int32) *river.Job[jobs.SendArgs] {
		return &river.Job[jobs.SendArgs]{
			JobRow: &rivertype.JobRow{Attempt: attempt},
			Args:   jobs.SendArgs{RetryDelay: delay},
		}
	}
	delay := []int32{30, 120, 600, 3600}
	for _, tc := range []struct {
		attempt int
		want    time.Duration
	}{
		{0, 30 * time.Second},
		{1, 30 * time.Second},
		{2, 120 * time.Second},
		{3, 600 * time.Second},
		{4, time.Hour},
		{5, time.Hour},
		{25, time.Hour},
	} {
		if got := w.NextRetry(job(tc.attempt, delay)); !got.Equal(now.Add(tc.want)) {
			t.Errorf("NextRetry after attempt %d = %s, want now+%s", tc.attempt, got, tc.want)
		}
	}
	if got := w.NextRetry(job(3, []int32{7})); !got.Equal(now.Add(7 * time.Second)) {
		t.Errorf("NextRetry with one delay = %s, want now+7s", got)
	}
	if got := w.NextRetry(job(1, nil)); !got.IsZero() {
		t.Errorf("NextRetry without a schedule = %s, want zero (River's default)", got)
	}
}

func TestSendArgsKindIsStable(t *testing.T) {
	t.Parallel()
	if k := (jobs.SendArgs{}).Kind(); k != "send_email" {
		t.Errorf("SendArgs.Kind() = %q; it is stored in river_job and must stay send_email", k)
	}
}
