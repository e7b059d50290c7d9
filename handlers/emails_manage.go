package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/oas"
	"github.com/mailqueue/mailqueue/store"
)

// CancelEmail cancels an email no worker has taken yet (queued, scheduled
// or not). The email, its "cancelled" event and the cancellation of its
// send job commit together; an email already processing or finished is a
// 409, and a worker that takes the email at the same moment either wins
// (409 here) or finds it cancelled and sends nothing.
func (h *Handler) CancelEmail(ctx context.Context, params oas.CancelEmailParams) (*oas.Email, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	e, err := h.store.EmailCancel(ctx, pr.appID, params.EmailId, now)
	if err != nil {
		return nil, emailStateError(err, "cancelled", "only a queued email can be cancelled")
	}
	out := emailToAPI(e, now)
	return &out, nil
}

// RetryEmail queues a dead email (failed, uncertain or expired) again, with
// a new send job and a fresh attempt series; the "retried" event keeps the
// status and error it had.
func (h *Handler) RetryEmail(ctx context.Context, params oas.RetryEmailParams) (*oas.Email, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	return idempotent(ctx, h, pr.appID, params.IdempotencyKey, "retryEmail", emailRef{id: params.EmailId}, http.StatusAccepted,
		func(tx *store.Store) (*oas.Email, error) {
			// The suppression check of the recipients belongs here, before
			// the email is queued again (409 invalid_state when suppressed).
			now := time.Now()
			e, err := tx.EmailRetry(ctx, pr.appID, params.EmailId, now)
			if err != nil {
				return nil, emailStateError(err, "retried", "only a failed, uncertain or expired email can be retried")
			}
			out := emailToAPI(e, now)
			return &out, nil
		})
}

// emailStateError maps the store's refusals of a cancel or retry to the API.
func emailStateError(err error, verb, rule string) error {
	var st *store.InvalidStateError
	switch {
	case errors.Is(err, store.ErrNotFound):
		return notFound("email")
	case errors.As(err, &st):
		return conflict("invalid_state", "the email is %s and cannot be %s: %s", st.Status, verb, rule)
	}
	return err
}

// emailRef is the request of an operation whose only input is the email id.
type emailRef struct{ id uuid.UUID }

// MarshalJSON encodes the path parameters, the whole of the request.
func (r emailRef) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{"email_id": r.id.String()})
}
