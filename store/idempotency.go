package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// idempotencyQueries are the statements of sql/queries/idempotency.sql.
type idempotencyQueries struct {
	IdempotencyLock      string
	IdempotencyGet       string
	IdempotencyInsert    string
	IdempotencyDeleteOld string
}

// ErrIdempotencyInFlight means another request with the same key is being
// processed right now (answer 409).
var ErrIdempotencyInFlight = errors.New("a request with this Idempotency-Key is in progress")

// ErrIdempotencyMismatch means the key was used before with a different
// request (answer 422).
var ErrIdempotencyMismatch = errors.New("this Idempotency-Key was used with a different request")

// StoredResponse is the first response given to an idempotency key. Body
// is sealed by the caller (it may hold a secret shown once); KeyID names the
// key that sealed it.
type StoredResponse struct {
	StatusCode int
	Body       []byte
	KeyID      string
}

// IdempotencyBegin claims key for this transaction. It returns the stored
// response when the same request was answered before (replay it), nil when
// the request is new (do the work, then IdempotencySave in the same
// transaction), or one of the Err… values above. Must run inside Tx: the
// claim lasts until the transaction ends, so a crash leaves no stuck key.
func (s *Store) IdempotencyBegin(ctx context.Context, appID uuid.UUID, key, operation string, requestHash []byte) (*StoredResponse, error) {
	if s.tx == nil {
		return nil, errors.New("IdempotencyBegin must run inside Store.Tx")
	}
	var locked bool
	if err := s.db.QueryRow(ctx, s.q.IdempotencyLock, pgx.NamedArgs{"app_id": appID, "key": key}).Scan(&locked); err != nil {
		return nil, fmt.Errorf("claiming idempotency key: %w", err)
	}
	if !locked {
		return nil, ErrIdempotencyInFlight
	}
	var (
		op   string
		hash []byte
		resp StoredResponse
	)
	err := s.db.QueryRow(ctx, s.q.IdempotencyGet, pgx.NamedArgs{"app_id": appID, "key": key}).
		Scan(&op, &hash, &resp.StatusCode, &resp.Body, &resp.KeyID)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("reading idempotency key: %w", err)
	case op != operation || !bytes.Equal(hash, requestHash):
		return nil, ErrIdempotencyMismatch
	}
	return &resp, nil
}

// IdempotencySave stores the response to a request claimed by
// IdempotencyBegin, in the same transaction as the work it describes.
func (s *Store) IdempotencySave(ctx context.Context, appID uuid.UUID, key, operation string, requestHash []byte, resp *StoredResponse) error {
	_, err := s.db.Exec(ctx, s.q.IdempotencyInsert, pgx.NamedArgs{
		"app_id": appID, "key": key, "operation": operation, "request_hash": requestHash,
		"status_code": resp.StatusCode, "response": resp.Body, "response_key_id": resp.KeyID,
	})
	if err != nil {
		return fmt.Errorf("saving idempotent response: %w", err)
	}
	return nil
}

// IdempotencyDeleteOld removes keys older than 24 hours.
func (s *Store) IdempotencyDeleteOld(ctx context.Context) (int64, error) {
	tag, err := s.db.Exec(ctx, s.q.IdempotencyDeleteOld)
	if err != nil {
		return 0, fmt.Errorf("deleting old idempotency keys: %w", err)
	}
	return tag.RowsAffected(), nil
}
