package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	netmail "net/mail"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/mailqueue/mailqueue/mail"
	"github.com/mailqueue/mailqueue/ratelimit"
	"github.com/mailqueue/mailqueue/secret"
	"github.com/mailqueue/mailqueue/store"
)

// SendArgs are the arguments of the job that delivers one email.
type SendArgs struct {
	EmailID uuid.UUID `json:"email_id"`
	// RetryDelay is the queue's retry schedule in seconds, copied at accept
	// time so choosing the next attempt needs no database read.
	RetryDelay []int32 `json:"retry_delay,omitempty"`
}

// Kind is the stable job kind stored in river_job.
func (SendArgs) Kind() string { return "send_email" }

// Enqueuer inserts send jobs. It implements store.SendEnqueuer.
type Enqueuer struct {
	client *river.Client[pgx.Tx]
}

// NewEnqueuer returns an Enqueuer inserting with client, which may be an
// insert-only client (one with no queues or workers).
func NewEnqueuer(client *river.Client[pgx.Tx]) *Enqueuer { return &Enqueuer{client: client} }

// EnqueueSendTx inserts the send job of e in tx, in the lane of its priority.
func (q *Enqueuer) EnqueueSendTx(ctx context.Context, tx pgx.Tx, e *store.Email) (int64, error) {
	p := sendJob(e)
	res, err := q.client.InsertTx(ctx, tx, p.Args, p.InsertOpts)
	if err != nil {
		return 0, fmt.Errorf("inserting send job: %w", err)
	}
	return res.Job.ID, nil
}

// sendJob is the send job of e: its args, in the lane of its priority, with
// its attempts and schedule.
func sendJob(e *store.Email) river.InsertManyParams {
	lane, prio := Lane(int(e.Priority))
	opts := &river.InsertOpts{Queue: lane, Priority: prio, MaxAttempts: int(e.MaxRetries) + 1}
	if e.ScheduledAt != nil {
		opts.ScheduledAt = *e.ScheduledAt
	}
	return river.InsertManyParams{Args: SendArgs{EmailID: e.ID, RetryDelay: e.RetryDelay}, InsertOpts: opts}
}

// Sender delivers a message through an SMTP server. *mail.Pools satisfies
// it in production; the sandbox has its own.
type Sender interface {
	Send(ctx context.Context, srv mail.Server, m *mail.Message) error
}

// SendWorker delivers emails. It reads the email, marks it processing,
// sends it and records the outcome; every status change and its event are
// written together by store.EmailTransition.
type SendWorker struct {
	river.WorkerDefaults[SendArgs]

	Store         *store.Store
	Sender        Sender
	Box           *secret.Box // opens SMTP config passwords
	DefaultServer mail.Server
	Logger        *slog.Logger
	Now           func() time.Time

	// SMTP picks each email's server from its queue's SMTP config, with a
	// cache; when nil, configs are read per email with Box and DefaultServer.
	SMTP *SMTPResolver
	// Transitions batches status writes across workers, and Reader the
	// reads of the emails; when nil, each is done on its own.
	Transitions *TransitionWriter
	Reader      *EmailReader
	// JobTimeout limits one send (0 = 5 minutes).
	JobTimeout time.Duration
	// Unsubscribe makes List-Unsubscribe headers for queues that enable
	// them; when nil, none are added.
	Unsubscribe *mail.Unsubscribe
	// Breaker, when set, is the circuit breaker per SMTP host.
	Breaker *ratelimit.Breaker
	// Limits holds the global, app and queue send limits; nil = none.
	Limits *ratelimit.Limiter
}

func (w *SendWorker) transition(ctx context.Context, p *store.EmailTransitionParams) (bool, error) {
	if w.Transitions != nil {
		return w.Transitions.Transition(ctx, p)
	}
	return w.Store.EmailTransition(ctx, p)
}

func (w *SendWorker) read(ctx context.Context, id uuid.UUID) (*store.EmailForSend, error) {
	if w.Reader != nil {
		return w.Reader.Get(ctx, id)
	}
	return w.Store.EmailGetForSend(ctx, id)
}

// NextRetry follows the queue's retry schedule; past its end the last delay
// repeats. Without one, River's default backoff applies.
func (w *SendWorker) NextRetry(job *river.Job[SendArgs]) time.Time {
	d := job.Args.RetryDelay
	if len(d) == 0 {
		return time.Time{}
	}
	i := min(max(job.Attempt-1, 0), len(d)-1)
	return w.now().Add(time.Duration(d[i]) * time.Second)
}

// Work sends one email.
func (w *SendWorker) Work(ctx context.Context, job *river.Job[SendArgs]) error {
	log := w.Logger.With("email_id", job.Args.EmailID, "job_id", job.ID, "attempt", job.Attempt)
	e, err := w.read(ctx, job.Args.EmailID)
	if errors.Is(err, store.ErrNotFound) {
		// Deleted (GDPR) after it was queued: nothing to send, never retry.
		return river.JobCancel(err)
	}
	if err != nil {
		return err
	}
	switch e.Status {
	case store.StatusQueued, store.StatusProcessing:
	default:
		log.Debug("email no longer waiting to be sent", "status", e.Status)
		return nil
	}
	now := w.now()
	if e.ExpiresAt != nil && now.After(*e.ExpiresAt) {
		_, err := w.transition(ctx, &store.EmailTransitionParams{
			ID: e.ID, From: sending, Status: store.StatusExpired,
			Event: "expired", Data: map[string]any{"expires_at": e.ExpiresAt}, At: now,
		})
		return err
	}
	if e.QueueIsPaused {
		return w.wait(ctx, e, "queue "+e.QueueName+" is paused", pausedSnooze)
	}
	if !e.AppIsActive {
		// A deactivated app's email waits, unsent, in case it is reactivated.
		return w.wait(ctx, e, "the app is deactivated", inactiveSnooze)
	}
	// Rate limits before the breaker: a half-open breaker's single probe
	// must not be taken by an email that then waits for a token.
	if reason, d, limited := w.rateLimited(ctx, e, job); limited {
		return w.wait(ctx, e, reason, d)
	}
	// The server is resolved before the email moves to processing, so an
	// open circuit breaker leaves it queued (jobs/breaker.go).
	var srv mail.Server
	var srvErr error
	if !e.Sandbox {
		if srv, srvErr = w.server(ctx, e); srvErr == nil {
			if wait, err := w.breakerWait(ctx, e, srv); wait {
				return err
			}
		}
	}

	// No "processing" write: while this job runs the email reads as
	// processing (store.EmailGet derives it from River's job state), and a
	// cancel takes the job's lock and refuses a running job, so the email
	// read above cannot be cancelled under us (store.EmailCancel). That
	// saves a status update and an event per email, a quarter of the
	// database's work per send (bench/results/2026-11-28-summary.md).
	if done, err := w.dropSuppressed(ctx, e); done || err != nil {
		return err
	}

	if e.Sandbox {
		// Sandbox email runs the whole pipeline but never reaches SMTP
		// (DESIGN.md, decision 9).
		return w.simulate(ctx, e, job)
	}

	if srvErr != nil {
		log.Warn("no SMTP server for the email", "error", srvErr)
		return w.fail(ctx, e, job, srvErr, false)
	}
	msg, err := message(&e.Email)
	if err != nil {
		return w.fail(ctx, e, job, err, true)
	}
	w.listUnsubscribe(e, msg)
	started := w.now()
	err = w.Sender.Send(ctx, srv, msg)
	w.afterSend(ctx, srv, err)
	if err != nil {
		log.Warn("send failed", "error", err, "smtp_host", srv.Host)
		return w.fail(ctx, e, job, err, mail.IsPermanent(err))
	}
	sentAt := w.now()
	// The message is out: record it even if the job is being cancelled.
	_, err = w.transition(context.WithoutCancel(ctx), &store.EmailTransitionParams{
		ID: e.ID, From: sending, Status: store.StatusSent, Event: "sent",
		Data: map[string]any{
			"smtp_host": srv.Host, "attempt": job.Attempt,
			"duration_ms": sentAt.Sub(started).Milliseconds(),
		},
		SentAt: &sentAt, ClearError: true, RetryCount: ptr(int16(job.Attempt - 1)), At: sentAt,
	})
	if err != nil {
		// The message is out; failing the job now would send it twice.
		log.Error("email sent but its status could not be recorded", "error", err)
	}
	return nil
}

// sending are the statuses an email being sent is stored with: queued, or
// processing in rows written before the worker stopped storing it.
var sending = []string{store.StatusQueued, store.StatusProcessing}

// wait puts the job back for d without using up an attempt, and records
// reason on the email so that GET /v1/emails/{id} can explain the wait.
func (w *SendWorker) wait(ctx context.Context, e *store.EmailForSend, reason string, d time.Duration) error {
	if err := w.Store.EmailSetWaiting(ctx, e.ID, reason); err != nil {
		// The reason is only an explanation: the wait itself must still happen.
		w.Logger.Warn("could not record why an email waits", "email_id", e.ID, "error", err)
	}
	return river.JobSnooze(d)
}

// pausedSnooze is how long a job of a paused queue waits before looking again.
const pausedSnooze = 15 * time.Second

// recordTimeout bounds recording an outcome after the job's own context
// has ended.
const recordTimeout = 10 * time.Second

// jobTimeout is how long one send may take: longer than waiting for a pooled
// connection plus the SMTP timeouts, so River does not cancel a send that
// is still legitimately waiting for the server's answer.
const jobTimeout = 5 * time.Minute

// Timeout overrides River's one-minute job timeout for sends.
func (w *SendWorker) Timeout(*river.Job[SendArgs]) time.Duration {
	if w.JobTimeout > 0 {
		return w.JobTimeout
	}
	return jobTimeout
}

// inactiveSnooze is how long a job of a deactivated app waits before looking
// again; reactivation is rare, so this can be long.
const inactiveSnooze = time.Minute

// fail records a failed attempt: dead (status failed) if the error is
// permanent or this was the last attempt, otherwise back to queued for the
// next one.
func (w *SendWorker) fail(ctx context.Context, e *store.EmailForSend, job *river.Job[SendArgs], sendErr error, permanent bool) error {
	// The job's context may be what failed the send (a job timeout, a
	// forced shutdown): the outcome must still be recorded, or the email
	// stays "processing" and is resent blind.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	msg := sendErr.Error()
	data := map[string]any{"error": msg, "attempt": job.Attempt, "max_attempts": job.MaxAttempts}
	var se *mail.SendError
	if errors.As(sendErr, &se) {
		data["stage"], data["smtp_code"], data["enhanced_code"] = se.Stage, se.Code, se.EnhancedCode
	}
	last := permanent || job.Attempt >= job.MaxAttempts
	p := &store.EmailTransitionParams{
		ID: e.ID, From: sending, LastError: &msg,
		RetryCount: ptr(int16(job.Attempt)), Data: data, At: w.now(),
	}
	stop := permanent
	switch {
	case mail.IsUncertain(sendErr):
		// The whole message went out and no answer came back: the server
		// may have it. Resending blindly is how duplicates happen, so the
		// queue's policy decides: "fail" stops here, "retry" (the default)
		// allows one more attempt, flagged, and stops after that.
		earlier, err := w.Store.EventCount(rctx, e.ID, "uncertain")
		if err != nil {
			return errors.Join(sendErr, err)
		}
		retry := e.QueueSettings.UncertainPolicy != "fail" && earlier == 0 && !last
		p.Event, data["will_retry"] = "uncertain", retry
		if retry {
			p.Status = store.StatusQueued
		} else {
			p.Status, stop = store.StatusUncertain, true
		}
	case last:
		p.Status, p.Event = store.StatusFailed, "failed"
		data["permanent"] = permanent
	default:
		p.Status, p.Event = store.StatusQueued, "deferred"
	}
	if _, err := w.transition(rctx, p); err != nil {
		return errors.Join(sendErr, err)
	}
	if stop {
		return river.JobCancel(sendErr)
	}
	return sendErr
}

// message turns a stored email into the message to send.
func message(e *store.Email) (*mail.Message, error) {
	m := &mail.Message{
		MessageID: e.MessageID,
		From:      mail.Address{Email: e.FromAddress},
		Subject:   e.Subject,
		Headers:   e.Headers,
	}
	if e.FromName != nil {
		m.From.Name = *e.FromName
	}
	for _, list := range []struct {
		src []store.Address
		dst *[]mail.Address
	}{{e.To, &m.To}, {e.Cc, &m.Cc}, {e.Bcc, &m.Bcc}} {
		for _, a := range list.src {
			*list.dst = append(*list.dst, mail.Address{Email: a.Email, Name: a.Name})
		}
	}
	if e.ReplyTo != nil {
		a, err := netmail.ParseAddress(*e.ReplyTo)
		if err != nil {
			return nil, fmt.Errorf("stored reply_to %q: %w", *e.ReplyTo, err)
		}
		m.ReplyTo = &mail.Address{Email: a.Address, Name: a.Name}
	}
	if e.HTML != nil {
		m.HTML = *e.HTML
	}
	if e.Text != nil {
		m.Text = *e.Text
	}
	return m, nil
}

func (w *SendWorker) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

func ptr[T any](v T) *T { return &v }

// PoolSender sends through pooled SMTP connections, one pool per server.
type PoolSender struct {
	Pools *mail.Pools
}

// Send delivers m through srv's pool.
func (s PoolSender) Send(ctx context.Context, srv mail.Server, m *mail.Message) error {
	return s.Pools.Get(srv).Send(ctx, m)
}
