package jobs

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river/rivertype"
)

// CancelSendTx cancels the send job jobID in tx, so a cancelled email's job
// does not linger until it runs. A job that is running is told to stop; the
// email's status guard already keeps it from sending. It implements
// store.SendCanceller.
func (q *Enqueuer) CancelSendTx(ctx context.Context, tx pgx.Tx, jobID int64) error {
	_, err := q.client.JobCancelTx(ctx, tx, jobID)
	if err != nil && !errors.Is(err, rivertype.ErrNotFound) {
		return fmt.Errorf("cancelling send job %d: %w", jobID, err)
	}
	return nil
}
