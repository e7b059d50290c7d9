package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"

	"github.com/google/uuid"

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
	if err := checkQueueName(req.Name); err != nil {
		return nil, err
	}
	p := &store.QueueInsertParams{
		AppID: pr.appID, Name: req.Name,
		Priority: int16(req.Priority.Or(5)), MaxRetries: int16(req.MaxRetries.Or(5)),
	}
	if err := checkQueuePriority(req.Priority.Or(5)); err != nil {
		return nil, err
	}
	if err := checkQueueMaxRetries(req.MaxRetries.Or(5)); err != nil {
		return nil, err
	}
	if v, ok := req.RateLimit.Get(); ok {
		if p.RateLimit, err = queueRateLimit(v); err != nil {
			return nil, err
		}
	}
	if req.RetryDelay != nil {
		if p.RetryDelay, err = queueRetryDelay(req.RetryDelay); err != nil {
			return nil, err
		}
	}
	if v, ok := req.SMTPConfigID.Get(); ok {
		p.SMTPConfigID = &v
	}
	if s, ok := req.Settings.Get(); ok {
		p.Settings = queueSettingsFromAPI(store.QueueSettings{}, s)
	}
	return idempotent(ctx, h, pr.appID, params.IdempotencyKey, "createQueue", req, http.StatusCreated,
		func(tx *store.Store) (*oas.Queue, error) {
			q, err := tx.QueueInsert(ctx, p)
			switch {
			case errors.Is(err, store.ErrConflict):
				return nil, conflict("already_exists", "a queue named %q already exists", req.Name)
			case errors.Is(err, store.ErrNotFound):
				return nil, unknownSMTPConfig()
			case err != nil:
				return nil, err
			}
			out := queueToAPI(q)
			err = h.audit(ctx, tx, auditEntry{
				action: "queue.create", resourceType: "queue", resourceID: q.ID, appID: pr.appID, after: &out,
			})
			if err != nil {
				return nil, err
			}
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

// ListQueues lists the calling app's queues, newest first, like every other
// list of the API (the spec's "ordered by name" would need a name cursor).
func (h *Handler) ListQueues(ctx context.Context, params oas.ListQueuesParams) (*oas.QueueList, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	p := &store.QueueListParams{AppID: pr.appID, Limit: params.Limit.Or(50)}
	if p.After, err = h.cursorParam(params.Cursor); err != nil {
		return nil, err
	}
	list, more, err := h.store.QueueList(ctx, p)
	if err != nil {
		return nil, err
	}
	out := &oas.QueueList{HasMore: more}
	out.Data, out.Cursor = page(h, list, more, queueToAPI)
	return out, nil
}

// UpdateQueue changes the fields present in the request. The default queue
// may be edited but keeps its name: email that names no queue goes there.
func (h *Handler) UpdateQueue(ctx context.Context, req *oas.QueueUpdate, params oas.UpdateQueueParams) (*oas.Queue, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	// Check the request on its own first: nothing here depends on the queue.
	if v, ok := req.Name.Get(); ok {
		if err := checkQueueName(v); err != nil {
			return nil, err
		}
	}
	if v, ok := req.Priority.Get(); ok {
		if err := checkQueuePriority(v); err != nil {
			return nil, err
		}
	}
	if v, ok := req.MaxRetries.Get(); ok {
		if err := checkQueueMaxRetries(v); err != nil {
			return nil, err
		}
	}
	var rateLimit *int32
	if v, ok := req.RateLimit.Get(); ok { // Get is false for null, which means unlimited
		if rateLimit, err = queueRateLimit(v); err != nil {
			return nil, err
		}
	}
	var retryDelay []int32
	if req.RetryDelay != nil {
		if retryDelay, err = queueRetryDelay(req.RetryDelay); err != nil {
			return nil, err
		}
	}

	var out oas.Queue
	err = h.store.Tx(ctx, func(tx *store.Store) error {
		cur, err := tx.QueueLock(ctx, pr.appID, params.QueueId)
		if errors.Is(err, store.ErrNotFound) {
			return notFound("queue")
		}
		if err != nil {
			return err
		}
		next := *cur
		if v, ok := req.Name.Get(); ok && v != cur.Name {
			if cur.Name == store.DefaultQueueName {
				return conflict("invalid_state", "the %q queue cannot be renamed: email that names no queue is sent through it", store.DefaultQueueName)
			}
			next.Name = v
		}
		if v, ok := req.Priority.Get(); ok {
			next.Priority = int16(v)
		}
		if req.RateLimit.IsSet() {
			next.RateLimit = rateLimit
		}
		if v, ok := req.MaxRetries.Get(); ok {
			next.MaxRetries = int16(v)
		}
		if retryDelay != nil {
			next.RetryDelay = retryDelay
		}
		if req.SMTPConfigID.IsSet() {
			next.SMTPConfigID = nil
			if v, ok := req.SMTPConfigID.Get(); ok {
				next.SMTPConfigID = &v
			}
		}
		if s, ok := req.Settings.Get(); ok {
			next.Settings = queueSettingsFromAPI(cur.Settings, s)
		}
		q, err := tx.QueueUpdate(ctx, &next)
		switch {
		case errors.Is(err, store.ErrConflict):
			return conflict("already_exists", "a queue named %q already exists", next.Name)
		case errors.Is(err, store.ErrNotFound):
			// The row is locked, so it is the SMTP config that is unknown.
			return unknownSMTPConfig()
		case err != nil:
			return err
		}
		out = queueToAPI(q)
		return h.audit(ctx, tx, auditEntry{
			action: "queue.update", resourceType: "queue", resourceID: q.ID, appID: pr.appID,
			before: queueAuditShape(cur), after: &out,
		})
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteQueue soft-deletes a queue: its emails keep pointing at it, and its
// name is free for a new queue. A queue still holding pending email is
// refused unless force is set, in which case the email no worker has taken
// yet is cancelled in the same transaction; email already being sent is
// left to finish, as CancelEmail would refuse to cancel it.
func (h *Handler) DeleteQueue(ctx context.Context, params oas.DeleteQueueParams) error {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return err
	}
	force := params.Force.Or(false)
	return h.store.Tx(ctx, func(tx *store.Store) error {
		q, err := tx.QueueLockForDelete(ctx, pr.appID, params.QueueId)
		if errors.Is(err, store.ErrNotFound) {
			return notFound("queue")
		}
		if err != nil {
			return err
		}
		if q.Name == store.DefaultQueueName {
			return conflict("invalid_state", "the %q queue cannot be deleted: email that names no queue is sent through it", store.DefaultQueueName)
		}
		holds, err := tx.QueueHolds(ctx, pr.appID, q.ID)
		if err != nil {
			return err
		}
		if holds.ScheduledJobs > 0 {
			// Force cancels email, not the schedules that would keep
			// creating it: those are for their owner to move or delete.
			return conflict("queue_not_empty", "queue %q is used by %d scheduled job(s); delete them or move them to another queue first", q.Name, holds.ScheduledJobs)
		}
		if holds.Pending > 0 {
			if !force {
				return conflict("queue_not_empty", "queue %q still holds %d pending email(s) (queued or being sent); delete with force=true to cancel them", q.Name, holds.Pending)
			}
			if _, err := tx.QueueCancelQueued(ctx, pr.appID, q.ID, map[string]any{"reason": "queue deleted"}); err != nil {
				return err
			}
		}
		if err := tx.QueueDelete(ctx, pr.appID, q.ID); err != nil {
			return err
		}
		return h.audit(ctx, tx, auditEntry{
			action: "queue.delete", resourceType: "queue", resourceID: q.ID, appID: pr.appID,
			before: queueAuditShape(q),
		})
	})
}

// GetQueueStats counts one queue's emails by state.
func (h *Handler) GetQueueStats(ctx context.Context, params oas.GetQueueStatsParams) (*oas.QueueStats, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	st, err := h.store.QueueStats(ctx, pr.appID, params.QueueId)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound("queue")
	}
	if err != nil {
		return nil, err
	}
	out := &oas.QueueStats{
		QueueID: params.QueueId, Pending: int(st.Pending), Scheduled: int(st.Scheduled),
		Processing: int(st.Processing), Sent: int(st.Sent), Failed: int(st.Failed), Cancelled: int(st.Cancelled),
	}
	if st.OldestPendingAgeSeconds != nil {
		out.OldestPendingAgeSeconds = oas.NewOptFloat64(max(*st.OldestPendingAgeSeconds, 0))
	}
	return out, nil
}

// PauseQueue stops the queue's email from being sent: it is still accepted
// and waits (the send worker snoozes jobs of a paused queue).
func (h *Handler) PauseQueue(ctx context.Context, params oas.PauseQueueParams) (*oas.Queue, error) {
	return h.setQueueState(ctx, params.QueueId, params.IdempotencyKey, "pauseQueue", "queue.pause", new(true), nil)
}

// ResumeQueue clears both paused and draining: the queue accepts and sends
// email again.
func (h *Handler) ResumeQueue(ctx context.Context, params oas.ResumeQueueParams) (*oas.Queue, error) {
	return h.setQueueState(ctx, params.QueueId, params.IdempotencyKey, "resumeQueue", "queue.resume", new(false), new(false))
}

// DrainQueue makes the queue refuse new email (409 queue_draining) while
// what it already holds is still sent.
func (h *Handler) DrainQueue(ctx context.Context, params oas.DrainQueueParams) (*oas.Queue, error) {
	return h.setQueueState(ctx, params.QueueId, params.IdempotencyKey, "drainQueue", "queue.drain", nil, new(true))
}

// setQueueState sets a queue's paused and draining flags (nil leaves one
// unchanged) and audits it as action. Setting a state twice leaves the same
// state, so the operations are idempotent by nature; Idempotency-Key is still
// honoured, so a replay returns the first response.
func (h *Handler) setQueueState(ctx context.Context, id uuid.UUID, key oas.OptString, operation, action string, paused, draining *bool) (*oas.Queue, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	return idempotent(ctx, h, pr.appID, key, operation, queueRef{id: id}, http.StatusOK,
		func(tx *store.Store) (*oas.Queue, error) {
			cur, err := tx.QueueLock(ctx, pr.appID, id)
			if errors.Is(err, store.ErrNotFound) {
				return nil, notFound("queue")
			}
			if err != nil {
				return nil, err
			}
			q, err := tx.QueueSetState(ctx, pr.appID, id, paused, draining)
			if err != nil {
				return nil, err
			}
			out := queueToAPI(q)
			err = h.audit(ctx, tx, auditEntry{
				action: action, resourceType: "queue", resourceID: q.ID, appID: pr.appID,
				before: queueAuditShape(cur), after: &out,
			})
			if err != nil {
				return nil, err
			}
			return &out, nil
		})
}

// queueRef is what a body-less POST on a queue asks for, for the
// Idempotency-Key fingerprint: the queue it names.
type queueRef struct{ id uuid.UUID }

// MarshalJSON encodes the path parameters, the whole of the request.
func (r queueRef) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{"queue_id": r.id.String()})
}

func checkQueueName(name string) error {
	if !queueNamePattern.MatchString(name) {
		return invalid("name", "name must be 1–64 lower-case letters, digits, '-' or '_', starting with a letter or digit")
	}
	return nil
}

func checkQueuePriority(v int) error {
	if v < 1 || v > 10 {
		return invalid("priority", "priority must be between 1 and 10")
	}
	return nil
}

func checkQueueMaxRetries(v int) error {
	if v < 0 || v > 25 {
		return invalid("max_retries", "max_retries must be between 0 and 25")
	}
	return nil
}

func queueRateLimit(v int) (*int32, error) {
	if v < 1 || v > 1<<31-1 {
		return nil, invalid("rate_limit", "rate_limit must be at least 1 email per minute (leave it out, or null, for no limit)")
	}
	n := int32(v)
	return &n, nil
}

func queueRetryDelay(in []int) ([]int32, error) {
	if len(in) < 1 || len(in) > 25 {
		return nil, invalid("retry_delay", "retry_delay must list 1 to 25 delays")
	}
	out := make([]int32, len(in))
	for i, d := range in {
		if d < 1 || d > 86400 {
			return nil, invalid(fieldIndex("retry_delay", i), "each retry delay must be between 1 and 86400 seconds")
		}
		out[i] = int32(d)
	}
	return out, nil
}

// queueSettingsFromAPI applies the settings present in s to cur: like the
// rest of a PATCH, an absent setting keeps its value.
func queueSettingsFromAPI(cur store.QueueSettings, s oas.QueueSettings) store.QueueSettings {
	if v, ok := s.ListUnsubscribe.Get(); ok {
		cur.ListUnsubscribe = v
	}
	if v, ok := s.StrictPersonalization.Get(); ok {
		cur.StrictPersonalization = v
	}
	if v, ok := s.UncertainPolicy.Get(); ok {
		cur.UncertainPolicy = string(v)
	}
	return cur
}

func unknownSMTPConfig() *apiError {
	return invalid("smtp_config_id", "smtp_config_id does not name one of your SMTP configs")
}

// queueAuditShape is a queue as the audit log records it: the API shape,
// by pointer, since the generated MarshalJSON that encodes it (leaving out
// absent optional fields) has a pointer receiver.
func queueAuditShape(q *store.Queue) *oas.Queue {
	out := queueToAPI(q)
	return &out
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
