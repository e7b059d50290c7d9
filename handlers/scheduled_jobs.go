package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/oas"
	"github.com/mailqueue/mailqueue/store"
)

// CreateScheduledJob creates a recurring email: email_template is queued at
// every tick of cron_expression in timezone, by the due scan
// (jobs/schedule.go). The template is checked exactly as POST /v1/emails
// checks an email.
func (h *Handler) CreateScheduledJob(ctx context.Context, req *oas.ScheduledJobCreate, params oas.CreateScheduledJobParams) (*oas.ScheduledJob, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	name := strings.TrimSpace(req.Name)
	if name == "" {
		return nil, invalid("name", "name must not be blank")
	}
	now := time.Now()
	tz := req.Timezone.Or("UTC")
	sched, err := parseSchedule(req.CronExpression, tz)
	if err != nil {
		return nil, err
	}
	tmpl := req.EmailTemplate
	q, err := h.scheduledJobQueue(ctx, pr, req.Queue.Or(tmpl.Queue.Or(store.DefaultQueueName)))
	if err != nil {
		return nil, err
	}
	raw, err := checkTemplate(pr, q, &tmpl, now)
	if err != nil {
		return nil, err
	}
	p := &store.ScheduledJobInsertParams{
		AppID: pr.appID, QueueID: q.ID, Name: name, CronExpression: req.CronExpression, Timezone: tz,
		EmailTemplate: raw, IsActive: req.IsActive.Or(true), Sandbox: pr.sandbox, Now: now,
	}
	if p.IsActive {
		next := sched.Next(now)
		p.NextRunAt = &next
	}
	return idempotent(ctx, h, pr.appID, params.IdempotencyKey, "createScheduledJob", req, http.StatusCreated,
		func(tx *store.Store) (*oas.ScheduledJob, error) {
			j, err := tx.ScheduledJobInsert(ctx, p)
			if errors.Is(err, store.ErrNotFound) {
				return nil, unknownQueue(q.Name)
			}
			if err != nil {
				return nil, err
			}
			out := scheduledJobToAPI(j)
			err = h.audit(ctx, tx, auditEntry{
				action: "scheduled_job.create", resourceType: "scheduled_job", resourceID: j.ID, appID: pr.appID, after: &out,
			})
			if err != nil {
				return nil, err
			}
			return &out, nil
		})
}

// ListScheduledJobs lists the calling app's scheduled jobs, newest first.
func (h *Handler) ListScheduledJobs(ctx context.Context, params oas.ListScheduledJobsParams) (*oas.ScheduledJobList, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	p := &store.ScheduledJobListParams{AppID: pr.appID, Limit: params.Limit.Or(50)}
	if p.After, err = h.cursorParam(params.Cursor); err != nil {
		return nil, err
	}
	list, more, err := h.store.ScheduledJobList(ctx, p)
	if err != nil {
		return nil, err
	}
	out := &oas.ScheduledJobList{HasMore: more}
	out.Data, out.Cursor = page(h, list, more, scheduledJobToAPI)
	return out, nil
}

// GetScheduledJob returns one of the calling app's scheduled jobs.
func (h *Handler) GetScheduledJob(ctx context.Context, params oas.GetScheduledJobParams) (*oas.ScheduledJob, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	j, err := h.store.ScheduledJobGet(ctx, pr.appID, params.ScheduledJobId)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound("scheduled job")
	}
	if err != nil {
		return nil, err
	}
	out := scheduledJobToAPI(j)
	return &out, nil
}

// UpdateScheduledJob changes the fields present. next_run_at is recomputed
// from now when the schedule changes or the job is switched on, and cleared
// when it is switched off.
func (h *Handler) UpdateScheduledJob(ctx context.Context, req *oas.ScheduledJobUpdate, params oas.UpdateScheduledJobParams) (*oas.ScheduledJob, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	if v, ok := req.Name.Get(); ok && strings.TrimSpace(v) == "" {
		return nil, invalid("name", "name must not be blank")
	}
	now := time.Now()
	var out oas.ScheduledJob
	err = h.store.Tx(ctx, func(tx *store.Store) error {
		j, err := tx.ScheduledJobLock(ctx, pr.appID, params.ScheduledJobId)
		if errors.Is(err, store.ErrNotFound) {
			return notFound("scheduled job")
		}
		if err != nil {
			return err
		}
		before := scheduledJobToAPI(j)
		if v, ok := req.Name.Get(); ok {
			j.Name = strings.TrimSpace(v)
		}
		rescheduled := false
		if v, ok := req.CronExpression.Get(); ok && v != j.CronExpression {
			j.CronExpression, rescheduled = v, true
		}
		if v, ok := req.Timezone.Get(); ok && v != j.Timezone {
			j.Timezone, rescheduled = v, true
		}
		if v, ok := req.IsActive.Get(); ok && v != j.IsActive {
			j.IsActive, rescheduled = v, true
		}
		sched, err := parseSchedule(j.CronExpression, j.Timezone)
		if err != nil {
			return err
		}
		switch {
		case !j.IsActive:
			j.NextRunAt = nil
		case rescheduled || j.NextRunAt == nil:
			next := sched.Next(now)
			j.NextRunAt = &next
		}
		queueName := req.Queue.Or(j.QueueName)
		tmpl, hasTmpl := req.EmailTemplate.Get()
		if hasTmpl || queueName != j.QueueName {
			q, err := h.scheduledJobQueue(ctx, pr, queueName)
			if err != nil {
				return err
			}
			if !hasTmpl {
				// The stored template names the old queue: rewrite it.
				if err := tmpl.UnmarshalJSON(j.EmailTemplate); err != nil {
					return err
				}
			}
			if j.EmailTemplate, err = checkTemplate(pr, q, &tmpl, now); err != nil {
				return err
			}
			j.QueueID, j.QueueName = q.ID, q.Name
		}
		if err := tx.ScheduledJobUpdate(ctx, j, now); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return unknownQueue(j.QueueName)
			}
			return err
		}
		out = scheduledJobToAPI(j)
		return h.audit(ctx, tx, auditEntry{
			action: "scheduled_job.update", resourceType: "scheduled_job", resourceID: j.ID, appID: pr.appID,
			before: &before, after: &out,
		})
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteScheduledJob deletes a scheduled job; emails it already queued are
// not touched.
func (h *Handler) DeleteScheduledJob(ctx context.Context, params oas.DeleteScheduledJobParams) error {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return err
	}
	return h.store.Tx(ctx, func(tx *store.Store) error {
		j, err := tx.ScheduledJobLock(ctx, pr.appID, params.ScheduledJobId)
		if errors.Is(err, store.ErrNotFound) {
			return notFound("scheduled job")
		}
		if err != nil {
			return err
		}
		if err := tx.ScheduledJobDelete(ctx, pr.appID, j.ID); err != nil {
			return err
		}
		before := scheduledJobToAPI(j)
		return h.audit(ctx, tx, auditEntry{
			action: "scheduled_job.delete", resourceType: "scheduled_job", resourceID: j.ID, appID: pr.appID, before: &before,
		})
	})
}

// RunScheduledJob queues the job's email now, outside its schedule (an
// inactive job too), exactly as the due scan would; next_run_at does not
// move.
func (h *Handler) RunScheduledJob(ctx context.Context, params oas.RunScheduledJobParams) (*oas.EmailAccepted, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	j, err := h.store.ScheduledJobGet(ctx, pr.appID, params.ScheduledJobId)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound("scheduled job")
	}
	if err != nil {
		return nil, err
	}
	q, err := h.store.QueueGet(ctx, pr.appID, j.QueueID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, unknownQueue(j.QueueName)
	}
	if err != nil {
		return nil, err
	}
	if q.IsDraining {
		return nil, conflict("queue_draining", "queue %q is draining and accepts no new email", q.Name)
	}
	p, err := j.EmailParams(q)
	if err != nil {
		return nil, err
	}
	return idempotent(ctx, h, pr.appID, params.IdempotencyKey, "runScheduledJob", scheduledJobRef{id: j.ID}, http.StatusAccepted,
		func(tx *store.Store) (*oas.EmailAccepted, error) {
			if err := tx.AppUsageTake(ctx, pr.appID, 1, time.Now()); err != nil {
				return nil, quotaExceeded(err)
			}
			e, err := tx.EmailInsert(ctx, p)
			if err != nil {
				return nil, err
			}
			out := emailAcceptedToAPI(e)
			err = h.audit(ctx, tx, auditEntry{
				action: "scheduled_job.run", resourceType: "scheduled_job", resourceID: j.ID, appID: pr.appID, after: out,
			})
			if err != nil {
				return nil, err
			}
			return out, nil
		})
}

// parseSchedule checks a cron expression and time zone, answering 422 on
// the field at fault.
func parseSchedule(expr, tz string) (*store.Schedule, error) {
	s, err := store.ParseSchedule(expr, tz)
	var se *store.ScheduleError
	if errors.As(err, &se) {
		return nil, invalid(se.Field, "%s", se.Reason)
	}
	if err != nil {
		return nil, err
	}
	if s.Next(time.Now()).IsZero() {
		return nil, invalid("cron_expression", "cron expression %q never fires", expr)
	}
	return s, nil
}

// scheduledJobQueue finds the queue a scheduled job sends into (422 on
// field queue when the app has none of that name).
func (h *Handler) scheduledJobQueue(ctx context.Context, pr *principal, name string) (*store.Queue, error) {
	q, err := h.store.QueueGetByName(ctx, pr.appID, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, unknownQueue(name)
	}
	return q, err
}

func unknownQueue(name string) error {
	return invalid("queue", "queue %q does not exist; create it with POST /v1/queues", name)
}

// checkTemplate validates a template as POST /v1/emails validates an email,
// reporting fields under email_template, and returns it encoded for storage
// with its queue set to q. scheduled_at and expires_at are instants, which
// a recurring email cannot carry.
func checkTemplate(pr *principal, q *store.Queue, tmpl *oas.EmailRequest, now time.Time) (json.RawMessage, error) {
	const prefix = "email_template."
	if tmpl.ScheduledAt.Set {
		return nil, invalid(prefix+"scheduled_at", "a scheduled job's email_template cannot have scheduled_at: the cron expression says when it is sent")
	}
	if tmpl.ExpiresAt.Set {
		return nil, invalid(prefix+"expires_at", "a scheduled job's email_template cannot have expires_at: it is an instant, and the job recurs")
	}
	err := validateEmailRequest(tmpl, now)
	if err == nil {
		_, err = emailInsertParams(pr, q, tmpl)
	}
	var ae *apiError
	if errors.As(err, &ae) && ae.field != "" {
		ae.field = prefix + ae.field
		ae.message = prefix + strings.TrimPrefix(ae.message, prefix)
	}
	if err != nil {
		return nil, err
	}
	tmpl.Queue = oas.NewOptString(q.Name)
	return tmpl.MarshalJSON()
}

func scheduledJobToAPI(j *store.ScheduledJob) oas.ScheduledJob {
	out := oas.ScheduledJob{
		ID: j.ID, Name: j.Name, Queue: j.QueueName, CronExpression: j.CronExpression, Timezone: j.Timezone,
		IsActive: j.IsActive, CreatedAt: j.CreatedAt, UpdatedAt: j.UpdatedAt,
	}
	// Stored from a validated request; a template that no longer decodes
	// is shown empty rather than failing the whole list.
	_ = out.EmailTemplate.UnmarshalJSON(j.EmailTemplate)
	if j.LastRunAt != nil {
		out.LastRunAt = oas.NewOptDateTime(*j.LastRunAt)
	}
	if j.NextRunAt != nil {
		out.NextRunAt = oas.NewOptDateTime(*j.NextRunAt)
	}
	return out
}

// scheduledJobRef is the request of an operation whose only input is the
// job id.
type scheduledJobRef struct{ id uuid.UUID }

// MarshalJSON encodes the path parameters, the whole of the request.
func (r scheduledJobRef) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{"scheduled_job_id": r.id.String()})
}
