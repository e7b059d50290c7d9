package handlers

import (
	"context"
	"errors"
	"net/http"
	"regexp"

	"github.com/mailqueue/mailqueue/oas"
	"github.com/mailqueue/mailqueue/store"
)

var queueNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// CreateQueue creates one of the calling app's queues.
func (h *Handler) CreateQueue(ctx context.Context, req *oas.QueueCreate, params oas.CreateQueueParams) (*oas.Queue, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	if !queueNamePattern.MatchString(req.Name) {
		return nil, invalid("name", "name must be 1–64 lower-case letters, digits, '-' or '_', starting with a letter or digit")
	}
	p := &store.QueueInsertParams{
		AppID: pr.appID, Name: req.Name,
		Priority: int16(req.Priority.Or(5)), MaxRetries: int16(req.MaxRetries.Or(5)),
	}
	if p.Priority < 1 || p.Priority > 10 {
		return nil, invalid("priority", "priority must be between 1 and 10")
	}
	if p.MaxRetries < 0 || p.MaxRetries > 25 {
		return nil, invalid("max_retries", "max_retries must be between 0 and 25")
	}
	if v, ok := req.RateLimit.Get(); ok {
		if v < 1 {
			return nil, invalid("rate_limit", "rate_limit must be at least 1 email per minute (omit it for no limit)")
		}
		n := int32(v)
		p.RateLimit = &n
	}
	for i, d := range req.RetryDelay {
		if d < 1 || d > 86400 {
			return nil, invalid(fieldIndex("retry_delay", i), "each retry delay must be between 1 and 86400 seconds")
		}
		p.RetryDelay = append(p.RetryDelay, int32(d))
	}
	if v, ok := req.SMTPConfigID.Get(); ok {
		p.SMTPConfigID = &v
	}
	if s, ok := req.Settings.Get(); ok {
		p.Settings = store.QueueSettings{
			ListUnsubscribe:       s.ListUnsubscribe.Or(false),
			StrictPersonalization: s.StrictPersonalization.Or(false),
			UncertainPolicy:       string(s.UncertainPolicy.Or("")),
		}
	}
	return idempotent(ctx, h, pr.appID, params.IdempotencyKey, "createQueue", req, http.StatusCreated,
		func(tx *store.Store) (*oas.Queue, error) {
			q, err := tx.QueueInsert(ctx, p)
			switch {
			case errors.Is(err, store.ErrConflict):
				return nil, conflict("already_exists", "a queue named %q already exists", req.Name)
			case errors.Is(err, store.ErrNotFound):
				return nil, invalid("smtp_config_id", "smtp_config_id does not name one of your SMTP configs")
			case err != nil:
				return nil, err
			}
			out := queueToAPI(q)
			return &out, nil
		})
}

// GetQueue returns one of the calling app's queues.
func (h *Handler) GetQueue(ctx context.Context, params oas.GetQueueParams) (*oas.Queue, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	q, err := h.store.QueueGet(ctx, pr.appID, params.QueueId)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound("queue")
	}
	if err != nil {
		return nil, err
	}
	out := queueToAPI(q)
	return &out, nil
}

func queueToAPI(q *store.Queue) oas.Queue {
	out := oas.Queue{
		ID: q.ID, Name: q.Name, Priority: int(q.Priority), MaxRetries: int(q.MaxRetries),
		IsPaused: q.IsPaused, IsDraining: q.IsDraining, CreatedAt: q.CreatedAt, UpdatedAt: q.UpdatedAt,
		RetryDelay: make([]int, 0, len(q.RetryDelay)),
	}
	for _, d := range q.RetryDelay {
		out.RetryDelay = append(out.RetryDelay, int(d))
	}
	if q.RateLimit != nil {
		out.RateLimit = oas.NewOptInt(int(*q.RateLimit))
	}
	if q.SMTPConfigID != nil {
		out.SMTPConfigID = oas.NewOptUUID(*q.SMTPConfigID)
	}
	out.Settings.ListUnsubscribe = oas.NewOptBool(q.Settings.ListUnsubscribe)
	out.Settings.StrictPersonalization = oas.NewOptBool(q.Settings.StrictPersonalization)
	if q.Settings.UncertainPolicy != "" {
		out.Settings.UncertainPolicy = oas.NewOptQueueSettingsUncertainPolicy(oas.QueueSettingsUncertainPolicy(q.Settings.UncertainPolicy))
	}
	return out
}
