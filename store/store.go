// Package store is Mail Queue's data access: every read and write of
// PostgreSQL goes through a Store method named resource-then-verb
// (EmailGet, QueueInsert), whose SQL lives in sql/queries.
//
// Every method that reads tenant data takes the app id and filters on it, so
// one app can never see another's rows, whatever id it asks for.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	pgxuuid "github.com/vgarvardt/pgx-google-uuid/v5"
)

// ErrNotFound is returned when a row does not exist or belongs to another app.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned when a unique constraint refuses a write.
var ErrConflict = errors.New("already exists")

// SendEnqueuer inserts the River job that delivers an email, inside the
// transaction that stores it. The jobs package implements it; the store only
// needs to know that one exists, which keeps jobs -> store one-way.
type SendEnqueuer interface {
	EnqueueSendTx(ctx context.Context, tx pgx.Tx, e *Email) (jobID int64, err error)
}

// Store reads and writes Mail Queue's tables. The Store returned by New runs
// each statement on the pool; the one handed to a Tx callback runs them all
// in that transaction.
type Store struct {
	pool    *pgxpool.Pool
	db      querier
	tx      pgx.Tx // nil outside a transaction
	q       *queries
	enqueue SendEnqueuer
}

// New returns a Store on pool. enqueue may be nil for processes that never
// accept email.
func New(pool *pgxpool.Pool, enqueue SendEnqueuer) *Store {
	return &Store{pool: pool, db: pool, q: mustLoadQueries(), enqueue: enqueue}
}

// Pool returns the underlying connection pool.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Tx runs fn with a Store bound to one transaction, committing if fn returns
// nil and rolling back otherwise. River inserts made inside create no
// savepoints, so any error must roll the whole transaction back, which is
// what this does.
func (s *Store) Tx(ctx context.Context, fn func(tx *Store) error) error {
	if s.tx != nil {
		return fn(s)
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		bound := *s
		bound.db, bound.tx = tx, tx
		return fn(&bound)
	})
}

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// NewID returns a UUIDv7 and the time inside it. Partitioned rows use that
// time as created_at, so the id alone pins the partition.
func NewID() (uuid.UUID, time.Time) {
	id := uuid.Must(uuid.NewV7())
	return id, IDTime(id)
}

// IDTime returns the creation time held in a UUIDv7 id, to the millisecond.
// For any other version it returns the zero time, which matches no row.
func IDTime(id uuid.UUID) time.Time {
	if id.Version() != 7 {
		return time.Time{}
	}
	// The first 48 bits of a UUIDv7 are Unix milliseconds (RFC 9562, 5.7).
	ms := int64(id[0])<<40 | int64(id[1])<<32 | int64(id[2])<<24 | int64(id[3])<<16 | int64(id[4])<<8 | int64(id[5])
	return time.UnixMilli(ms).UTC()
}

// notFound maps pgx's no-rows error to ErrNotFound.
func notFound(err error, what string) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// uniqueViolation reports whether err is a unique-constraint violation.
func uniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// querier is what both a pool and a transaction offer.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// ConfigurePool prepares a pool's connections for the store: uuid.UUID
// values are encoded and decoded as PostgreSQL uuids directly. Without it
// pgx goes through each uuid's text form (and a failed binary attempt
// first), which cost about 9 µs per uuid — a large share of a 10,000-email
// batch and a measurable one of every send.
func ConfigurePool(cfg *pgxpool.Config) {
	next := cfg.AfterConnect
	cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		pgxuuid.Register(conn.TypeMap())
		if next != nil {
			return next(ctx, conn)
		}
		return nil
	}
}

// NewPool opens a pool on url configured by ConfigurePool.
func NewPool(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	ConfigurePool(cfg)
	return pgxpool.NewWithConfig(ctx, cfg)
}
