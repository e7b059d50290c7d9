package jobs

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/mailqueue/mailqueue/store"
)

// sendInsertChunk is how many send jobs one COPY carries: a whole batch of
// 10,000, since each COPY is a round trip with PostgreSQL idle while River
// prepares the next.
const sendInsertChunk = 10000

// EnqueueSendManyTx inserts the send jobs of emails in tx with
// InsertManyFastTx (COPY), in chunks, each in the lane of its email's
// priority. It implements store.SendManyEnqueuer, which reads the job ids
// back from river_job's sequence.
func (q *Enqueuer) EnqueueSendManyTx(ctx context.Context, tx pgx.Tx, emails []*store.Email) error {
	params := make([]river.InsertManyParams, len(emails))
	for i, e := range emails {
		params[i] = sendJob(e)
	}
	for start := 0; start < len(params); start += sendInsertChunk {
		chunk := params[start:min(start+sendInsertChunk, len(params))]
		n, err := q.client.InsertManyFastTx(ctx, tx, chunk)
		if err != nil {
			return fmt.Errorf("inserting send jobs: %w", err)
		}
		if n != len(chunk) {
			return fmt.Errorf("inserting send jobs: %d of %d inserted", n, len(chunk))
		}
	}
	return nil
}

var _ store.SendManyEnqueuer = (*Enqueuer)(nil)
