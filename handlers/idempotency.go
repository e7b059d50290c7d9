package handlers

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/oas"
	"github.com/mailqueue/mailqueue/store"
)

// jsonBody is what generated request and response types offer.
type jsonBody interface {
	MarshalJSON() ([]byte, error)
}

// idempotent runs create inside a transaction guarded by the request's
// Idempotency-Key (DESIGN.md, decision 3): the same key with the same body
// replays the first response; with a different body it is refused (422);
// while the first request is still running, a duplicate gets 409. The
// stored response commits with the work, so there is never a key without
// its result or a result without its key. Without a key, create just runs
// in a transaction.
func idempotent[T any, PT interface {
	*T
	jsonBody
	json.Unmarshaler
}](ctx context.Context, s *store.Store, appID uuid.UUID, key oas.OptString, operation string, req jsonBody, status int, create func(tx *store.Store) (PT, error)) (PT, error) {
	k, has := key.Get()
	if !has {
		var out PT
		err := s.Tx(ctx, func(tx *store.Store) error {
			var err error
			out, err = create(tx)
			return err
		})
		return out, err
	}
	if k == "" {
		return nil, invalid("Idempotency-Key", "Idempotency-Key must not be empty")
	}
	body, err := req.MarshalJSON()
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body)
	var out PT
	err = s.Tx(ctx, func(tx *store.Store) error {
		stored, err := tx.IdempotencyBegin(ctx, appID, k, operation, sum[:])
		switch {
		case errors.Is(err, store.ErrIdempotencyInFlight):
			return conflict("idempotency_in_progress", "a request with this Idempotency-Key is still being processed; retry shortly")
		case errors.Is(err, store.ErrIdempotencyMismatch):
			return invalid("Idempotency-Key", "this Idempotency-Key was already used with a different request body")
		case err != nil:
			return err
		case stored != nil:
			out = new(T)
			return out.UnmarshalJSON(stored.Body)
		}
		if out, err = create(tx); err != nil {
			return err
		}
		resp, err := out.MarshalJSON()
		if err != nil {
			return err
		}
		return tx.IdempotencySave(ctx, appID, k, operation, sum[:], status, resp)
	})
	return out, err
}
