package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// emailManageQueries are the statements of sql/queries/emails_manage.sql.
type emailManageQueries struct {
	EmailRetry           string
	EmailLock            string
	SendJobLockState     string
	EmailQueueRetryDelay string
}

// SendCanceller cancels the River job that would send an email, inside the
// transaction that cancels the email. jobs.Enqueuer implements it; a store
// whose enqueuer does not leaves the job to find the email cancelled and do
// nothing.
type SendCanceller interface {
	CancelSendTx(ctx context.Context, tx pgx.Tx, jobID int64) error
}

// InvalidStateError is returned when an email's status does not allow the
// change asked for (cancelling a sent email, retrying a queued one).
type InvalidStateError struct {
	Status string // the email's status when the change was refused
}

func (e *InvalidStateError) Error() string { return "email is " + e.Status }

// emailLocked is what EmailLock reads.
type emailLocked struct {
	ID          uuid.UUID  `db:"id"`
	CreatedAt   time.Time  `db:"created_at"`
	AppID       uuid.UUID  `db:"app_id"`
	QueueID     uuid.UUID  `db:"queue_id"`
	Status      string     `db:"status"`
	Priority    int16      `db:"priority"`
	MaxRetries  int16      `db:"max_retries"`
	ScheduledAt *time.Time `db:"scheduled_at"`
	ExpiresAt   *time.Time `db:"expires_at"`
	LastError   *string    `db:"last_error"`
	JobID       *int64     `db:"job_id"`
}

func (s *Store) emailLock(ctx context.Context, appID, id uuid.UUID) (*emailLocked, error) {
	rows, err := s.db.Query(ctx, s.q.EmailLock, pgx.NamedArgs{"app_id": appID, "id": id, "created_at": IDTime(id)})
	if err != nil {
		return nil, notFound(err, "locking email")
	}
	e, err := pgx.CollectExactlyOneRow(rows, pgx.RowToAddrOfStructByName[emailLocked])
	if err != nil {
		return nil, notFound(err, "locking email")
	}
	return e, nil
}

// emailLockAfterJob locks a queued email for cancelling, its send job
// first: jobs before emails, the order QueueCancelQueued takes them in, so
// the two cannot deadlock. It refuses an email that is not queued, or whose
// job is running (processing), with *InvalidStateError.
func (tx *Store) emailLockAfterJob(ctx context.Context, appID, id uuid.UUID) (*emailLocked, error) {
	// The job id is read unlocked, then checked again under the email's
	// lock: a retry may have given the email a new job in between.
	for range 3 {
		cur, err := tx.EmailGet(ctx, appID, id)
		if err != nil {
			return nil, err
		}
		if cur.Status != StatusQueued {
			return nil, &InvalidStateError{Status: cur.Status}
		}
		if cur.JobID != nil {
			var state string
			err := tx.db.QueryRow(ctx, tx.q.SendJobLockState, pgx.NamedArgs{"id": *cur.JobID}).Scan(&state)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return nil, fmt.Errorf("locking the send job of email %s: %w", id, err)
			}
			if state == "running" {
				return nil, &InvalidStateError{Status: StatusProcessing}
			}
		}
		e, err := tx.emailLock(ctx, appID, id)
		if err != nil {
			return nil, err
		}
		if e.Status != StatusQueued {
			return nil, &InvalidStateError{Status: e.Status}
		}
		if (e.JobID == nil) == (cur.JobID == nil) && (e.JobID == nil || *e.JobID == *cur.JobID) {
			return e, nil
		}
	}
	return nil, fmt.Errorf("cancelling email %s: its send job kept changing", id)
}

// EmailCancel cancels one of an app's emails that no worker has taken yet
// (status queued, scheduled or not): status cancelled, a "cancelled" event,
// and its River job cancelled, in one transaction. The lock on the send job
// orders a cancel and River handing the job to a worker: if the job is
// already running the email is being sent (processing) and the cancel is
// refused; otherwise it cannot start until the cancel commits, and then
// finds the email cancelled. So a cancelled email is never sent, and an
// email being sent is never marked cancelled. It returns ErrNotFound, or
// *InvalidStateError for any other status.
func (s *Store) EmailCancel(ctx context.Context, appID, id uuid.UUID, now time.Time) (*Email, error) {
	var out *Email
	err := s.Tx(ctx, func(tx *Store) error {
		e, err := tx.emailLockAfterJob(ctx, appID, id)
		if err != nil {
			return err
		}
		moved, err := tx.EmailTransition(ctx, &EmailTransitionParams{
			ID: id, From: []string{StatusQueued}, Status: StatusCancelled, Event: "cancelled",
			Data: map[string]any{"previous_status": e.Status}, At: now,
		})
		if err != nil {
			return err
		}
		if !moved {
			return &InvalidStateError{Status: e.Status}
		}
		if c, ok := tx.enqueue.(SendCanceller); ok && e.JobID != nil {
			if err := c.CancelSendTx(ctx, tx.tx, *e.JobID); err != nil {
				return err
			}
		}
		out, err = tx.EmailGet(ctx, appID, id)
		return err
	})
	return out, err
}

// RetryableStatuses are the statuses EmailRetry queues again: the dead
// letters.
var RetryableStatuses = []string{StatusFailed, StatusUncertain, StatusExpired}

// EmailRetry queues a dead email (failed, uncertain or expired) again, in
// one transaction: a new send job in the lane of its priority, following
// its queue's current retry schedule from the first attempt, status queued
// with retry_count 0 and no last_error, and a "retried" event holding the
// status and error it had. It returns ErrNotFound, or *InvalidStateError for
// any other status.
func (s *Store) EmailRetry(ctx context.Context, appID, id uuid.UUID, now time.Time) (*Email, error) {
	if s.enqueue == nil {
		return nil, fmt.Errorf("retrying email: store has no job enqueuer")
	}
	var out *Email
	err := s.Tx(ctx, func(tx *Store) error {
		e, err := tx.emailLock(ctx, appID, id)
		if err != nil {
			return err
		}
		retryable := false
		for _, st := range RetryableStatuses {
			retryable = retryable || e.Status == st
		}
		if !retryable {
			return &InvalidStateError{Status: e.Status}
		}
		q, err := tx.queueByID(ctx, e.QueueID)
		if err != nil {
			return err
		}
		// Suppressed recipients are checked by the caller before this.
		jobID, err := tx.enqueue.EnqueueSendTx(ctx, tx.tx, &Email{
			ID: id, CreatedAt: e.CreatedAt, AppID: appID, QueueID: e.QueueID, Priority: e.Priority,
			MaxRetries: e.MaxRetries, RetryDelay: q.RetryDelay,
		})
		if err != nil {
			return fmt.Errorf("enqueueing retry of email %s: %w", id, err)
		}
		data, err := json.Marshal(map[string]any{
			"previous_status": e.Status, "last_error": e.LastError, "job_id": jobID,
		})
		if err != nil {
			return err
		}
		eventID, _ := NewID()
		tag, err := tx.db.Exec(ctx, tx.q.EmailRetry, pgx.NamedArgs{
			"app_id": appID, "id": id, "created_at": e.CreatedAt, "from_statuses": RetryableStatuses,
			"job_id": jobID, "at": now, "event_id": eventID, "event_data": json.RawMessage(data),
		})
		if err != nil {
			return fmt.Errorf("retrying email %s: %w", id, err)
		}
		if tag.RowsAffected() != 1 {
			return &InvalidStateError{Status: e.Status}
		}
		out, err = tx.EmailGet(ctx, appID, id)
		return err
	})
	return out, err
}

// queueByID reads a queue, deleted or not, for an email that is already in
// it.
func (s *Store) queueByID(ctx context.Context, id uuid.UUID) (*Queue, error) {
	var delay []int32
	err := s.db.QueryRow(ctx, s.q.EmailQueueRetryDelay, pgx.NamedArgs{"id": id}).Scan(&delay)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("reading queue %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("reading queue %s: %w", id, err)
	}
	return &Queue{ID: id, RetryDelay: delay}, nil
}
