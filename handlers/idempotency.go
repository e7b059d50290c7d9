package handlers

import (
	"bytes"
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
// its result or a result without its key. It is stored sealed, because some
// responses carry a secret shown only once. Without a key, create just runs
// in a transaction. In front of all this, Redis answers duplicates and
// replays without reaching PostgreSQL (idempotency_fast.go).
func idempotent[T any, PT interface {
	*T
	jsonBody
	json.Unmarshaler
}](ctx context.Context, h *Handler, appID uuid.UUID, key oas.OptString, operation string, req jsonBody, status int, create func(tx *store.Store) (PT, error)) (PT, error) {
	k, has := key.Get()
	if !has {
		var out PT
		err := h.store.Tx(ctx, func(tx *store.Store) error {
			var err error
			out, err = create(tx)
			return err
		})
		return out, err
	}
	if k == "" || !storableText(k) {
		return nil, invalid("Idempotency-Key", "Idempotency-Key must be non-empty UTF-8 text without NUL characters")
	}
	sum, err := requestFingerprint(req)
	if err != nil {
		return nil, err
	}
	// The seal is bound to the tenant and key: a stored response cannot be
	// replayed under another.
	sealContext := "idempotency:" + appID.String() + ":" + k
	claim, cached, err := h.dedupBegin(ctx, appID, k, operation, sum, sealContext)
	if err != nil {
		return nil, err
	}
	if cached != nil {
		out := PT(new(T))
		return out, out.UnmarshalJSON(cached)
	}
	var out PT
	var final *store.StoredResponse // what PostgreSQL saved or replayed
	defer func() { h.dedupFinish(ctx, claim, operation, sum, final, err) }()
	err = h.store.Tx(ctx, func(tx *store.Store) error {
		stored, err := tx.IdempotencyBegin(ctx, appID, k, operation, sum)
		switch {
		case errors.Is(err, store.ErrIdempotencyInFlight):
			return idempotencyInFlight()
		case errors.Is(err, store.ErrIdempotencyMismatch):
			return idempotencyMismatch()
		case err != nil:
			return err
		case stored != nil:
			final = stored
			body, err := h.box.Open(stored.Body, stored.KeyID, sealContext)
			if err != nil {
				return err
			}
			out = new(T)
			return out.UnmarshalJSON(body)
		}
		if out, err = create(tx); err != nil {
			return err
		}
		resp, err := out.MarshalJSON()
		if err != nil {
			return err
		}
		sealed, keyID := h.box.Seal(resp, sealContext)
		final = &store.StoredResponse{StatusCode: status, Body: sealed, KeyID: keyID}
		return tx.IdempotencySave(ctx, appID, k, operation, sum, final)
	})
	return out, err
}

// requestFingerprint hashes a request in a canonical form. The generated
// encoder writes JSON objects in Go map order, which varies between runs,
// so the encoding is decoded and re-encoded with sorted keys first:
// identical requests always hash the same.
func requestFingerprint(req jsonBody) ([]byte, error) {
	raw, err := req.MarshalJSON()
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // keep large integers exact
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	canonical, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(canonical)
	return sum[:], nil
}
