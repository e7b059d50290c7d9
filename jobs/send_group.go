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

// EnqueueSendGroupTx inserts the send jobs of emails in tx with one
// multi-row insert (InsertManyTx), each in the lane of its email's
// priority, and returns the jobs' ids in the order of emails. It
// implements store.SendGroupEnqueuer, for the API's group accepts.
func (q *Enqueuer) EnqueueSendGroupTx(ctx context.Context, tx pgx.Tx, emails []*store.Email) ([]int64, error) {
	params := make([]river.InsertManyParams, len(emails))
	index := make(map[uuid.UUID]int, len(emails))
	for i, e := range emails {
		params[i] = sendJob(e)
		index[e.ID] = i
	}
	res, err := q.client.InsertManyTx(ctx, tx, params)
	if err != nil {
		return nil, fmt.Errorf("inserting send jobs: %w", err)
	}
	if len(res) != len(emails) {
		return nil, fmt.Errorf("inserting send jobs: %d of %d inserted", len(res), len(emails))
	}
	// The rows come back from INSERT ... RETURNING, whose order PostgreSQL
	// does not promise: match them to emails by their arguments.
	ids := make([]int64, len(emails))
	for _, r := range res {
		var args struct {
			EmailID uuid.UUID `json:"email_id"`
		}
		if err := json.Unmarshal(r.Job.EncodedArgs, &args); err != nil {
			return nil, fmt.Errorf("reading send job %d: %w", r.Job.ID, err)
		}
		i, ok := index[args.EmailID]
		if !ok || ids[i] != 0 {
			return nil, fmt.Errorf("send job %d is for email %s, not one of this insert", r.Job.ID, args.EmailID)
		}
		ids[i] = r.Job.ID
	}
	return ids, nil
}

var _ store.SendGroupEnqueuer = (*Enqueuer)(nil)
