package jobs

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/mailqueue/mailqueue/store"
)

// sendInsertChunk is how many send jobs one multi-row insert carries.
const sendInsertChunk = 2000

// EnqueueSendManyTx inserts the send jobs of emails in tx, in chunks, each
// in the lane of its email's priority, and returns their job ids in the
// order of emails.
//
// It uses InsertManyTx, not InsertManyFastTx: emails.job_id must hold each
// job's id (GET /v1/emails/{id} reads the next attempt from the job, and
// cancelling an email cancels its job), and the fast variant, which streams
// with COPY, returns only a count and cannot be given ids in advance.
// InsertManyTx is one multi-row INSERT ... RETURNING per chunk; the cost is
// decoding the returned rows, small next to writing them.
func (q *Enqueuer) EnqueueSendManyTx(ctx context.Context, tx pgx.Tx, emails []*store.Email) ([]int64, error) {
	index := make(map[uuid.UUID]int, len(emails))
	params := make([]river.InsertManyParams, len(emails))
	for i, e := range emails {
		index[e.ID] = i
		lane, prio := Lane(int(e.Priority))
		opts := &river.InsertOpts{Queue: lane, Priority: prio, MaxAttempts: int(e.MaxRetries) + 1}
		if e.ScheduledAt != nil {
			opts.ScheduledAt = *e.ScheduledAt
		}
		params[i] = river.InsertManyParams{Args: SendArgs{EmailID: e.ID, RetryDelay: e.RetryDelay}, InsertOpts: opts}
	}
	ids := make([]int64, len(emails))
	for start := 0; start < len(params); start += sendInsertChunk {
		chunk := params[start:min(start+sendInsertChunk, len(params))]
		res, err := q.client.InsertManyTx(ctx, tx, chunk)
		if err != nil {
			return nil, fmt.Errorf("inserting send jobs: %w", err)
		}
		// Match rows to emails by their args rather than trusting the order
		// of RETURNING, which SQL does not promise.
		for _, r := range res {
			var args struct {
				EmailID uuid.UUID `json:"email_id"`
			}
			if err := json.Unmarshal(r.Job.EncodedArgs, &args); err != nil {
				return nil, fmt.Errorf("reading inserted send job %d: %w", r.Job.ID, err)
			}
			i, ok := index[args.EmailID]
			if !ok {
				return nil, fmt.Errorf("inserted send job %d is for unknown email %s", r.Job.ID, args.EmailID)
			}
			ids[i] = r.Job.ID
		}
	}
	return ids, nil
}
