package jobs

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"time"

	"github.com/riverqueue/river"

	"github.com/mailqueue/mailqueue/ratelimit"
	"github.com/mailqueue/mailqueue/store"
)

// maxLimitSpread caps the random part of a rate-limited job's snooze.
const maxLimitSpread = 30 * time.Second

// rateLimited takes a token at every level that limits e (global, app,
// queue). When one refuses it returns why and how long the job should
// snooze: until that level frees, plus a random spread that grows with the
// job's earlier snoozes, so that a backlog far larger than the limit does
// not wake all at once for every token (each wake is a job fetch and a
// database write). Snoozing (river.JobSnooze) gives the attempt back, so
// waiting for a limit never uses a retry.
func (w *SendWorker) rateLimited(ctx context.Context, e *store.EmailForSend, job *river.Job[SendArgs]) (string, time.Duration, bool) {
	if w.Limits == nil {
		return "", 0, false
	}
	s := ratelimit.SendLimits{AppID: e.AppID, QueueID: e.QueueID, SkipGlobal: e.Sandbox}
	if e.AppRateLimit != nil {
		s.App = int(*e.AppRateLimit)
	}
	if e.QueueRateLimit != nil {
		s.Queue = int(*e.QueueRateLimit)
	}
	d := w.Limits.TakeSend(ctx, s)
	if d.Allowed {
		return "", 0, false
	}
	wait := max(d.RetryAfter, 10*time.Millisecond)
	spread := min(wait*time.Duration(1+snoozes(job)), maxLimitSpread)
	return d.Reason(), wait + rand.N(spread), true
}

// snoozes is how many times River has snoozed the job.
func snoozes(job *river.Job[SendArgs]) int {
	var m struct {
		Snoozes int `json:"snoozes"`
	}
	_ = json.Unmarshal(job.Metadata, &m)
	return min(max(m.Snoozes, 0), 1000)
}
