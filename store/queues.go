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

// queueQueries are the statements of sql/queries/queues.sql.
type queueQueries struct {
	QueueInsert           string
	QueueGet              string
	QueueGetByName        string
	QueueGetByNameVersion string
	QueueVersions         string
	QueueLock             string
	QueueLockForDelete    string
	QueueList             string
	QueueUpdate           string
	QueueSetState         string
	QueueDelete           string
	QueueHolds            string
	QueueCancelQueued     string
	QueueCancelEvents     string
	QueueStats            string
}

// DefaultQueueName is the queue every app gets at creation, used when an
// email names none.
const DefaultQueueName = "default"

// DefaultRetryDelay is the wait before each retry, in seconds (DESIGN.md,
// decision 7).
var DefaultRetryDelay = []int32{30, 120, 600, 3600}

// Queue is one of an app's named streams of email.
type Queue struct {
	ID           uuid.UUID     `db:"id"`
	AppID        uuid.UUID     `db:"app_id"`
	Name         string        `db:"name"`
	Priority     int16         `db:"priority"`
	RateLimit    *int32        `db:"rate_limit"`
	MaxRetries   int16         `db:"max_retries"`
	RetryDelay   []int32       `db:"retry_delay"`
	SMTPConfigID *uuid.UUID    `db:"smtp_config_id"`
	IsPaused     bool          `db:"is_paused"`
	IsDraining   bool          `db:"is_draining"`
	Settings     QueueSettings `db:"settings"`
	CreatedAt    time.Time     `db:"created_at"`
	UpdatedAt    time.Time     `db:"updated_at"`
}

// QueueSettings are a queue's behaviour switches, stored as JSON.
type QueueSettings struct {
	ListUnsubscribe       bool   `json:"list_unsubscribe,omitempty"`
	StrictPersonalization bool   `json:"strict_personalization,omitempty"`
	UncertainPolicy       string `json:"uncertain_policy,omitempty"`
}

// QueueInsertParams are the fields of a new queue.
type QueueInsertParams struct {
	AppID        uuid.UUID
	Name         string
	Priority     int16
	RateLimit    *int32
	MaxRetries   int16
	RetryDelay   []int32
	SMTPConfigID *uuid.UUID
	Settings     QueueSettings
}

// QueueInsert creates a queue; ErrConflict if the app already has one of
// that name.
func (s *Store) QueueInsert(ctx context.Context, p *QueueInsertParams) (*Queue, error) {
	id, _ := NewID()
	delay := p.RetryDelay
	if len(delay) == 0 {
		delay = DefaultRetryDelay
	}
	rows, err := s.db.Query(ctx, s.q.QueueInsert, pgx.NamedArgs{
		"id": id, "app_id": p.AppID, "name": p.Name, "priority": p.Priority,
		"rate_limit": p.RateLimit, "max_retries": p.MaxRetries, "retry_delay": delay,
		"smtp_config_id": p.SMTPConfigID, "settings": p.Settings,
	})
	if err == nil {
		var q *Queue
		q, err = pgx.CollectExactlyOneRow(rows, pgx.RowToAddrOfStructByName[Queue])
		if err == nil {
			return q, nil
		}
	}
	switch {
	case uniqueViolation(err):
		return nil, fmt.Errorf("inserting queue %q: %w", p.Name, ErrConflict)
	case errors.Is(err, pgx.ErrNoRows):
		return nil, fmt.Errorf("inserting queue %q: smtp config %s: %w", p.Name, p.SMTPConfigID, ErrNotFound)
	}
	return nil, fmt.Errorf("inserting queue %q: %w", p.Name, err)
}

// QueueGet returns one of an app's queues by id.
func (s *Store) QueueGet(ctx context.Context, appID, id uuid.UUID) (*Queue, error) {
	return s.queueOne(ctx, s.q.QueueGet, pgx.NamedArgs{"app_id": appID, "id": id})
}

// QueueGetByName returns one of an app's queues by name.
func (s *Store) QueueGetByName(ctx context.Context, appID uuid.UUID, name string) (*Queue, error) {
	return s.queueOne(ctx, s.q.QueueGetByName, pgx.NamedArgs{"app_id": appID, "name": name})
}

// QueueGetByNameVersion is QueueGetByName that also returns the row's
// version, which changes with every update of the queue. An email whose
// EmailInsertParams.QueueVersion is set is accepted only while its queue
// still has that version (see ErrQueueChanged), so a cached queue can be
// used without ever accepting email on stale settings.
func (s *Store) QueueGetByNameVersion(ctx context.Context, appID uuid.UUID, name string) (*Queue, int64, error) {
	rows, err := s.db.Query(ctx, s.q.QueueGetByNameVersion, pgx.NamedArgs{"app_id": appID, "name": name})
	if err != nil {
		return nil, 0, notFound(err, "getting queue")
	}
	type versioned struct {
		Queue
		Version int64 `db:"version"`
	}
	q, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[versioned])
	if err != nil {
		return nil, 0, notFound(err, "getting queue")
	}
	return &q.Queue, q.Version, nil
}

// queueVersions returns the versions of those of ids that are live queues,
// locking them FOR KEY SHARE (see queueHold). Call it in a transaction.
func (s *Store) queueVersions(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]int64, error) {
	rows, err := s.db.Query(ctx, s.q.QueueVersions, pgx.NamedArgs{"ids": ids})
	if err != nil {
		return nil, fmt.Errorf("checking queue versions: %w", err)
	}
	out := make(map[uuid.UUID]int64, len(ids))
	var (
		id      uuid.UUID
		version int64
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &version}, func() error {
		out[id] = version
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("checking queue versions: %w", err)
	}
	return out, nil
}

// queueHold locks the live queue q FOR KEY SHARE for the rest of the
// transaction, as every email insert must: a deletion (QueueLockForDelete)
// then waits for the insert and counts its email, and an insert after a
// deletion is refused. With version not 0 the queue must also still be at
// that version. Either refusal is ErrQueueChanged.
func (s *Store) queueHold(ctx context.Context, q uuid.UUID, version int64) error {
	versions, err := s.queueVersions(ctx, []uuid.UUID{q})
	if err != nil {
		return err
	}
	if v, ok := versions[q]; !ok || (version != 0 && v != version) {
		return ErrQueueChanged
	}
	return nil
}

func (s *Store) queueOne(ctx context.Context, query string, args pgx.NamedArgs) (*Queue, error) {
	rows, err := s.db.Query(ctx, query, args)
	if err != nil {
		return nil, notFound(err, "getting queue")
	}
	q, err := pgx.CollectExactlyOneRow(rows, pgx.RowToAddrOfStructByName[Queue])
	if err != nil {
		return nil, notFound(err, "getting queue")
	}
	return q, nil
}

// QueueLock returns one of an app's queues and locks it until the end of the
// transaction, so concurrent changes to it apply one at a time. Call it on a
// Store from Tx. It does not block email being accepted into the queue.
func (s *Store) QueueLock(ctx context.Context, appID, id uuid.UUID) (*Queue, error) {
	return s.queueOne(ctx, s.q.QueueLock, pgx.NamedArgs{"app_id": appID, "id": id})
}

// QueueLockForDelete is QueueLock for a deletion: it also waits for email
// being accepted into the queue to commit, and holds back any more until the
// transaction ends, so what QueueHolds counts afterwards is complete.
func (s *Store) QueueLockForDelete(ctx context.Context, appID, id uuid.UUID) (*Queue, error) {
	return s.queueOne(ctx, s.q.QueueLockForDelete, pgx.NamedArgs{"app_id": appID, "id": id})
}

// QueueListParams page through an app's queues, newest first.
type QueueListParams struct {
	AppID uuid.UUID
	After *Cursor
	Limit int
}

// QueueList returns up to Limit of an app's live queues and whether more
// follow.
func (s *Store) QueueList(ctx context.Context, p *QueueListParams) ([]*Queue, bool, error) {
	args := pgx.NamedArgs{"app_id": p.AppID, "cursor_created_at": nil, "cursor_id": nil, "limit": p.Limit + 1}
	if p.After != nil {
		args["cursor_created_at"], args["cursor_id"] = p.After.CreatedAt, p.After.ID
	}
	rows, err := s.db.Query(ctx, s.q.QueueList, args)
	if err != nil {
		return nil, false, fmt.Errorf("listing queues: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToAddrOfStructByName[Queue])
	if err != nil {
		return nil, false, fmt.Errorf("listing queues: %w", err)
	}
	more := len(list) > p.Limit
	if more {
		list = list[:p.Limit]
	}
	return list, more, nil
}

// QueueUpdate writes every editable field of q (name, priority, rate limit,
// retries, retry delay, SMTP config, settings) to the queue q.ID of app
// q.AppID; the caller merges a partial request into the current row first.
// ErrConflict if the app has another queue of that name; ErrNotFound if the
// queue is gone or q.SMTPConfigID is not one of the app's configs.
func (s *Store) QueueUpdate(ctx context.Context, q *Queue) (*Queue, error) {
	rows, err := s.db.Query(ctx, s.q.QueueUpdate, pgx.NamedArgs{
		"app_id": q.AppID, "id": q.ID, "name": q.Name, "priority": q.Priority,
		"rate_limit": q.RateLimit, "max_retries": q.MaxRetries, "retry_delay": q.RetryDelay,
		"smtp_config_id": q.SMTPConfigID, "settings": q.Settings,
	})
	if err == nil {
		var out *Queue
		out, err = pgx.CollectExactlyOneRow(rows, pgx.RowToAddrOfStructByName[Queue])
		if err == nil {
			return out, nil
		}
	}
	switch {
	case uniqueViolation(err):
		return nil, fmt.Errorf("updating queue %s to name %q: %w", q.ID, q.Name, ErrConflict)
	case errors.Is(err, pgx.ErrNoRows):
		return nil, fmt.Errorf("updating queue %s (smtp config %v): %w", q.ID, q.SMTPConfigID, ErrNotFound)
	}
	return nil, fmt.Errorf("updating queue %s: %w", q.ID, err)
}

// QueueSetState sets a queue's paused and draining flags; nil leaves a flag
// unchanged. Setting a flag to the value it has is a no-op, so pause, resume
// and drain can be repeated safely.
func (s *Store) QueueSetState(ctx context.Context, appID, id uuid.UUID, paused, draining *bool) (*Queue, error) {
	return s.queueOne(ctx, s.q.QueueSetState, pgx.NamedArgs{
		"app_id": appID, "id": id, "is_paused": paused, "is_draining": draining,
	})
}

// QueueDelete soft-deletes one of an app's queues: it disappears from every
// lookup and its name may be reused, while its emails keep pointing at it.
func (s *Store) QueueDelete(ctx context.Context, appID, id uuid.UUID) error {
	tag, err := s.db.Exec(ctx, s.q.QueueDelete, pgx.NamedArgs{"app_id": appID, "id": id})
	if err != nil {
		return fmt.Errorf("deleting queue %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("deleting queue %s: %w", id, ErrNotFound)
	}
	return nil
}

// QueueHoldings is what a queue still holds that stands in the way of
// deleting it.
type QueueHoldings struct {
	// Pending counts emails queued or being sent.
	Pending int64 `db:"pending"`
	// ScheduledJobs counts the scheduled jobs that create email in the queue.
	ScheduledJobs int64 `db:"scheduled_jobs"`
}

// QueueHolds counts what a queue still holds. Call it after
// QueueLockForDelete in the same transaction for a count that stays true
// until commit.
func (s *Store) QueueHolds(ctx context.Context, appID, queueID uuid.UUID) (*QueueHoldings, error) {
	rows, err := s.db.Query(ctx, s.q.QueueHolds, pgx.NamedArgs{"app_id": appID, "queue_id": queueID})
	if err != nil {
		return nil, fmt.Errorf("counting what queue %s holds: %w", queueID, err)
	}
	h, err := pgx.CollectExactlyOneRow(rows, pgx.RowToAddrOfStructByName[QueueHoldings])
	if err != nil {
		return nil, fmt.Errorf("counting what queue %s holds: %w", queueID, err)
	}
	return h, nil
}

// QueueCancelQueued cancels every email of the queue that is still queued
// (scheduled ones included) and records a "cancelled" event with data for
// each, in the transaction of s; it returns how many it cancelled. Emails
// already being sent are left to finish.
func (s *Store) QueueCancelQueued(ctx context.Context, appID, queueID uuid.UUID, data any) (int, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return 0, fmt.Errorf("encoding cancelled event: %w", err)
	}
	var n int
	err = s.Tx(ctx, func(tx *Store) error {
		rows, err := tx.db.Query(ctx, tx.q.QueueCancelQueued, pgx.NamedArgs{"app_id": appID, "queue_id": queueID})
		if err != nil {
			return fmt.Errorf("cancelling emails of queue %s: %w", queueID, err)
		}
		type moved struct {
			ID        uuid.UUID `db:"id"`
			CreatedAt time.Time `db:"created_at"`
		}
		emails, err := pgx.CollectRows(rows, pgx.RowToStructByName[moved])
		if err != nil {
			return fmt.Errorf("cancelling emails of queue %s: %w", queueID, err)
		}
		if n = len(emails); n == 0 {
			return nil
		}
		ids := make([]uuid.UUID, n)
		ats := make([]time.Time, n)
		emailIDs := make([]uuid.UUID, n)
		for i, e := range emails {
			// The event's UUIDv7 carries its created_at, which pins its
			// partition; an email never has events older than itself.
			ids[i], ats[i] = NewID()
			if ats[i].Before(e.CreatedAt) {
				ats[i] = e.CreatedAt
			}
			emailIDs[i] = e.ID
		}
		_, err = tx.db.Exec(ctx, tx.q.QueueCancelEvents, pgx.NamedArgs{
			"app_id": appID, "ids": ids, "created_ats": ats, "email_ids": emailIDs,
			"event_data": json.RawMessage(raw),
		})
		if err != nil {
			return fmt.Errorf("recording cancelled events of queue %s: %w", queueID, err)
		}
		return nil
	})
	return n, err
}

// QueueStats are the counts of a queue's emails by state.
type QueueStats struct {
	// Pending are queued and due now.
	Pending int64 `db:"pending"`
	// Scheduled are queued for a later time or waiting for a retry.
	Scheduled  int64 `db:"scheduled"`
	Processing int64 `db:"processing"`
	// Sent counts sent and delivered emails.
	Sent      int64 `db:"sent"`
	Failed    int64 `db:"failed"`
	Cancelled int64 `db:"cancelled"`
	// OldestPendingAgeSeconds is how long the oldest due email has waited;
	// nil when none is pending.
	OldestPendingAgeSeconds *float64 `db:"oldest_pending_age_seconds"`
}

// QueueStats counts one of an app's queues' emails by state. It reads every
// partition of emails: fine for a stats endpoint, not for a hot path.
// ErrNotFound if the queue is not one of the app's live queues.
func (s *Store) QueueStats(ctx context.Context, appID, queueID uuid.UUID) (*QueueStats, error) {
	rows, err := s.db.Query(ctx, s.q.QueueStats, pgx.NamedArgs{"app_id": appID, "queue_id": queueID})
	if err != nil {
		return nil, fmt.Errorf("counting emails of queue %s: %w", queueID, err)
	}
	st, err := pgx.CollectExactlyOneRow(rows, pgx.RowToAddrOfStructByName[QueueStats])
	if err != nil {
		return nil, notFound(err, "counting emails of queue "+queueID.String())
	}
	return st, nil
}

// Position is the place of a queue in a list.
func (r *Queue) Position() Cursor { return Cursor{CreatedAt: r.CreatedAt, ID: r.ID} }
