package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// queueQueries are the statements of sql/queries/queues.sql.
type queueQueries struct {
	QueueInsert    string
	QueueGet       string
	QueueGetByName string
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
