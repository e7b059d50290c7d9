package handlers

import (
	"context"
	"errors"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/ratelimit"
	"github.com/mailqueue/mailqueue/store"
)

// onIdempotencyPostgres, when set (by tests only), is called each time a
// request with an Idempotency-Key goes to the PostgreSQL record: it lets a
// test count how often a request storm reached the database.
var onIdempotencyPostgres func(appID uuid.UUID, key string)

// dedupBegin is the Redis fast path of idempotent (ratelimit.Dedup). It
// returns a claim to pass to dedupFinish when the request must go on to
// PostgreSQL (nil when Redis failed: PostgreSQL alone decides), the opened
// body of the first response when this is a replay, or the 409/422 error.
func (h *Handler) dedupBegin(ctx context.Context, appID uuid.UUID, key, operation string, sum []byte, sealContext string) (*ratelimit.DedupClaim, []byte, error) {
	claim, rec, err := h.dedup.Begin(ctx, appID, key, operation, sum)
	switch {
	case errors.Is(err, ratelimit.ErrDedupInFlight):
		return nil, nil, idempotencyInFlight()
	case errors.Is(err, ratelimit.ErrDedupMismatch):
		return nil, nil, idempotencyMismatch()
	case errors.Is(err, ratelimit.ErrDedupSkipped):
	case err != nil:
		h.logger.WarnContext(ctx, "idempotency fast path unavailable; using PostgreSQL alone", "error", err)
	case rec != nil:
		body, err := h.box.Open(rec.Body, rec.KeyID, sealContext)
		if err == nil {
			return nil, body, nil
		}
		// Sealed under a key no longer configured: PostgreSQL will say.
		h.logger.WarnContext(ctx, "cached idempotent response cannot be opened", "error", err)
	}
	if onIdempotencyPostgres != nil {
		onIdempotencyPostgres(appID, key)
	}
	return claim, nil, nil
}

// dedupFinish caches the response PostgreSQL committed or replayed (resp),
// or releases the claim when the request failed, so a retry can run.
func (h *Handler) dedupFinish(ctx context.Context, claim *ratelimit.DedupClaim, operation string, sum []byte, resp *store.StoredResponse, failed error) {
	if claim == nil {
		return
	}
	// The outcome is settled; record it even if the client has gone.
	ctx = context.WithoutCancel(ctx)
	var err error
	if failed == nil && resp != nil {
		err = h.dedup.Complete(ctx, claim, &ratelimit.DedupRecord{
			Operation: operation, RequestHash: sum, StatusCode: resp.StatusCode, Body: resp.Body, KeyID: resp.KeyID,
		})
	} else {
		err = h.dedup.Release(ctx, claim)
	}
	if err != nil {
		h.logger.WarnContext(ctx, "idempotency fast path", "error", err)
	}
}

func idempotencyInFlight() error {
	return conflict("idempotency_in_progress", "a request with this Idempotency-Key is still being processed; retry shortly")
}

func idempotencyMismatch() error {
	e := invalid("Idempotency-Key", "this Idempotency-Key was already used with a different request body")
	e.code = "idempotency_mismatch"
	return e
}
