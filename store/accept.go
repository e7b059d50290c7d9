package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/mailqueue/mailqueue/groupcommit"
)

// SendGroupEnqueuer inserts the send jobs of several emails in one
// statement and returns their ids in the order of emails. The jobs
// package's Enqueuer implements it; an enqueuer without it is called once
// per email.
type SendGroupEnqueuer interface {
	EnqueueSendGroupTx(ctx context.Context, tx pgx.Tx, emails []*Email) ([]int64, error)
}

// ErrQueueChanged refuses an email whose EmailInsertParams.QueueVersion is
// no longer its queue's: the queue was updated or deleted since the caller
// read it. Nothing is stored; read the queue again and retry.
var ErrQueueChanged = errors.New("queue changed since it was read")

// EmailAccept accepts one email the way POST /v1/emails does: it counts it
// against the app's quota (AppUsageTake; a refusal is a *QuotaError) and
// stores it with EmailInsert, in one transaction (the caller's, if any).
// The queue must still be live (and, with p.QueueVersion set, unchanged).
func (s *Store) EmailAccept(ctx context.Context, p *EmailInsertParams) (*Email, error) {
	var out *Email
	err := s.Tx(ctx, func(tx *Store) error {
		// The queue first, so a changed queue costs no quota.
		if err := tx.queueHold(ctx, p.Queue.ID, p.QueueVersion); err != nil {
			return err
		}
		if err := tx.AppUsageTake(ctx, p.AppID, 1, time.Now()); err != nil {
			return err
		}
		var err error
		out, err = tx.emailInsertHeld(ctx, p)
		return err
	})
	return out, err
}

// AcceptResult is the outcome of one email of EmailAcceptGroup: the stored
// email, or why it was refused (a *QuotaError or ErrQueueChanged).
type AcceptResult struct {
	Email *Email
	Err   error
}

// groupRolledBack is an EmailAcceptGroup failure that rolled the whole
// transaction back: nothing of the group is stored, so each email may be
// tried again on its own.
type groupRolledBack struct{ err error }

func (e *groupRolledBack) Error() string { return "accept group rolled back: " + e.err.Error() }
func (e *groupRolledBack) Unwrap() error { return e.err }

// EmailAcceptGroup accepts several emails in one transaction, each exactly
// as EmailAccept would on its own, in order: quota is taken per email (one
// statement per app when the app's limit allows them all), suppressed
// recipients are dropped, and the emails, events and send jobs are written
// with a few statements for the whole group. An email its app's quota
// refuses gets its *QuotaError in its result, one whose queue changed
// ErrQueueChanged; the others are stored.
//
// An error means nothing was stored when it is a *groupRolledBack (see
// AcceptWriter); otherwise the commit itself failed and its outcome is
// unknown.
func (s *Store) EmailAcceptGroup(ctx context.Context, ps []*EmailInsertParams) ([]AcceptResult, error) {
	if s.enqueue == nil {
		return nil, fmt.Errorf("accepting emails: store has no job enqueuer")
	}
	out := make([]AcceptResult, len(ps))
	var inner error
	err := s.Tx(ctx, func(tx *Store) error {
		inner = tx.acceptGroup(ctx, ps, out)
		return inner
	})
	if inner != nil {
		return nil, &groupRolledBack{inner}
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// acceptGroup is EmailAcceptGroup inside its transaction. It fills out.
func (tx *Store) acceptGroup(ctx context.Context, ps []*EmailInsertParams, out []AcceptResult) error {
	// Group by app. Apps are visited in id order, so two groups in flight
	// lock app_usage rows in the same order and cannot deadlock.
	byApp := map[uuid.UUID][]int{}
	var apps, queues []uuid.UUID
	for i, p := range ps {
		if _, ok := byApp[p.AppID]; !ok {
			apps = append(apps, p.AppID)
		}
		byApp[p.AppID] = append(byApp[p.AppID], i)
		// Every queue is held (locked FOR KEY SHARE), versioned or not.
		if !slices.Contains(queues, p.Queue.ID) {
			queues = append(queues, p.Queue.ID)
		}
	}
	slices.SortFunc(apps, func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })

	r, err := tx.acceptReads(ctx, ps, apps, byApp, queues)
	if err != nil {
		return err
	}
	for i, p := range ps {
		if v, ok := r.versions[p.Queue.ID]; !ok || (p.QueueVersion != 0 && v != p.QueueVersion) {
			out[i].Err = ErrQueueChanged
		}
	}

	now := time.Now()
	emails := make([]*Email, len(ps))
	firsts := make([]firstEvent, len(ps))
	for _, app := range apps {
		var idx []int
		for _, i := range byApp[app] {
			if out[i].Err == nil {
				idx = append(idx, i)
			}
		}
		if len(idx) == 0 {
			continue
		}
		if r.limited[app] {
			if err := tx.takeQuota(ctx, app, idx, out, now); err != nil {
				return err
			}
		}
		for _, i := range idx {
			if out[i].Err != nil {
				continue
			}
			emails[i] = newEmail(ps[i])
			firsts[i] = applySuppression(emails[i], r.hits[app])
		}
	}

	var queued []*Email
	for _, e := range emails {
		if e != nil && e.Status == StatusQueued {
			queued = append(queued, e)
		}
	}
	if len(queued) > 0 {
		ids, err := tx.enqueueGroup(ctx, queued)
		if err != nil {
			return err
		}
		for i, e := range queued {
			e.JobID = &ids[i]
		}
	}

	if err := tx.copyEmails(ctx, ps, emails, firsts); err != nil {
		return err
	}
	for i, e := range emails {
		if e != nil {
			out[i].Email = e
		}
	}
	return nil
}

// acceptRead is what a group accept reads before it writes.
type acceptRead struct {
	versions map[uuid.UUID]int64 // QueueVersions of the group's live queues, now held
	limited  map[uuid.UUID]bool  // apps with a daily or monthly limit
	hits     map[uuid.UUID]map[string]Suppressed
}

// acceptReads reads, in one round trip, the versions of queues (locking
// them as EmailAccept does), which apps have limits, and the suppression
// hits of each app's recipients, in one look-up per app: each email later
// keeps only the hits on its own addresses.
func (tx *Store) acceptReads(ctx context.Context, ps []*EmailInsertParams, apps []uuid.UUID, byApp map[uuid.UUID][]int, queues []uuid.UUID) (*acceptRead, error) {
	b := &pgx.Batch{}
	if len(queues) > 0 {
		b.Queue(tx.q.QueueVersions, pgx.NamedArgs{"ids": queues})
	}
	b.Queue(tx.q.AppUsageLimited, pgx.NamedArgs{"app_ids": apps})
	for _, app := range apps {
		var addrs []string
		for _, i := range byApp[app] {
			for _, l := range [][]Address{ps[i].To, ps[i].Cc, ps[i].Bcc} {
				for _, a := range l {
					addrs = append(addrs, NormalizeAddress(a.Email))
				}
			}
		}
		b.Queue(tx.q.SuppressionCheck, pgx.NamedArgs{"app_id": app, "emails": addrs})
	}
	br := tx.tx.SendBatch(ctx, b)
	defer br.Close()
	r := &acceptRead{versions: map[uuid.UUID]int64{}, limited: map[uuid.UUID]bool{}, hits: map[uuid.UUID]map[string]Suppressed{}}
	var (
		id      uuid.UUID
		version int64
	)
	if len(queues) > 0 {
		rows, err := br.Query()
		if err != nil {
			return nil, fmt.Errorf("checking queue versions: %w", err)
		}
		if _, err := pgx.ForEachRow(rows, []any{&id, &version}, func() error {
			r.versions[id] = version
			return nil
		}); err != nil {
			return nil, fmt.Errorf("checking queue versions: %w", err)
		}
	}
	rows, err := br.Query()
	if err != nil {
		return nil, fmt.Errorf("reading app limits: %w", err)
	}
	if _, err := pgx.ForEachRow(rows, []any{&id}, func() error {
		r.limited[id] = true
		return nil
	}); err != nil {
		return nil, fmt.Errorf("reading app limits: %w", err)
	}
	for _, app := range apps {
		rows, err := br.Query()
		if err != nil {
			return nil, fmt.Errorf("checking suppression lists: %w", err)
		}
		if r.hits[app], err = suppressionHits(rows); err != nil {
			return nil, err
		}
	}
	return r, br.Close()
}

// acceptColumns are the columns of emails that copyEmails writes; the
// rest take their defaults.
var acceptColumns = []string{
	"id", "created_at", "app_id", "queue_id", "batch_id", "idempotency_key", "message_id",
	"from_address", "from_name", "to_addresses", "cc", "bcc", "reply_to", "subject", "html_body",
	"text_body", "headers", "personalization_data", "metadata", "status", "sandbox", "priority",
	"max_retries", "job_id", "scheduled_at", "expires_at", "updated_at",
}

var acceptEventColumns = []string{"id", "created_at", "email_id", "app_id", "event_type", "event_data"}

// copyEmails writes the emails of a group (nil entries are skipped) with
// their first events, and a "suppressed" event for each queued email that
// lost recipients, with COPY: the same rows EmailInsert writes, at a
// fraction of the cost of a statement per email.
func (tx *Store) copyEmails(ctx context.Context, ps []*EmailInsertParams, emails []*Email, firsts []firstEvent) error {
	n := 0
	for _, e := range emails {
		if e != nil {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	if n < copyMin {
		return tx.insertEmails(ctx, ps, emails, firsts)
	}
	rows := make([][]any, 0, n)
	events := make([][]any, 0, len(emails))
	for i, e := range emails {
		if e == nil {
			continue
		}
		p := ps[i]
		rows = append(rows, []any{
			e.ID, e.CreatedAt, e.AppID, e.QueueID, e.BatchID, p.IdempotencyKey, e.MessageID,
			e.FromAddress, e.FromName, e.To, nilIfEmpty(e.Cc), nilIfEmpty(e.Bcc), e.ReplyTo, e.Subject, e.HTML,
			e.Text, nilIfEmptyMap(e.Headers), rawOrNil(p.Personalizations), rawOrNil(e.Metadata), e.Status,
			e.Sandbox, e.Priority, e.MaxRetries, e.JobID, e.ScheduledAt, e.ExpiresAt, e.CreatedAt,
		})
		first, err := eventInsertArgs(e, firsts[i].Type, firsts[i].Data, e.CreatedAt)
		if err != nil {
			return err
		}
		events = append(events, eventRow(first))
		if e.Status == StatusQueued && len(e.Suppressed) > 0 {
			args, err := eventInsertArgs(e, "suppressed", SuppressedData(e.Suppressed), e.CreatedAt)
			if err != nil {
				return err
			}
			events = append(events, eventRow(args))
		}
	}
	if _, err := tx.tx.CopyFrom(ctx, pgx.Identifier{"emails"}, acceptColumns, pgx.CopyFromRows(rows)); err != nil {
		return fmt.Errorf("inserting emails: %w", err)
	}
	if _, err := tx.tx.CopyFrom(ctx, pgx.Identifier{"email_events"}, acceptEventColumns, pgx.CopyFromRows(events)); err != nil {
		return fmt.Errorf("inserting email events: %w", err)
	}
	return nil
}

// copyMin is the smallest group copyEmails writes with COPY, which costs
// two round trips per table; smaller ones go as one pipelined batch of
// EmailInsert statements.
const copyMin = 4

// insertEmails is copyEmails for a small group: the EmailInsert statement
// of each email (and EventInsert for its "suppressed" event), pipelined.
func (tx *Store) insertEmails(ctx context.Context, ps []*EmailInsertParams, emails []*Email, firsts []firstEvent) error {
	b := &pgx.Batch{}
	for i, e := range emails {
		if e == nil {
			continue
		}
		b.Queue(tx.q.EmailInsert, emailInsertArgs(e, ps[i], firsts[i]))
		if e.Status == StatusQueued && len(e.Suppressed) > 0 {
			args, err := eventInsertArgs(e, "suppressed", SuppressedData(e.Suppressed), e.CreatedAt)
			if err != nil {
				return err
			}
			b.Queue(tx.q.EventInsert, args)
		}
	}
	if err := tx.tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("inserting emails: %w", err)
	}
	return nil
}

func eventRow(a pgx.NamedArgs) []any {
	return []any{a["id"], a["created_at"], a["email_id"], a["app_id"], a["event_type"], a["event_data"]}
}

// takeQuota counts the emails idx of out against app's quota: all at once
// when the limit allows them all, else one by one, in order, recording a
// refusal in out. Each take runs in a savepoint, so a month refused after
// the day was counted leaves the day as it was.
func (tx *Store) takeQuota(ctx context.Context, app uuid.UUID, idx []int, out []AcceptResult, now time.Time) error {
	take := func(n int) error {
		return tx.savepoint(ctx, func(sp *Store) error { return sp.AppUsageTake(ctx, app, n, now) })
	}
	var quota *QuotaError
	err := take(len(idx))
	if err == nil {
		return nil
	}
	if !errors.As(err, &quota) {
		return err
	}
	if len(idx) == 1 {
		out[idx[0]].Err = err
		return nil
	}
	for _, i := range idx {
		err := take(1)
		switch {
		case errors.As(err, &quota):
			out[i].Err = err
		case err != nil:
			return err
		}
	}
	return nil
}

// savepoint runs fn in a savepoint of tx's transaction, rolling back to it
// when fn fails.
func (s *Store) savepoint(ctx context.Context, fn func(sp *Store) error) error {
	return pgx.BeginFunc(ctx, s.tx, func(sp pgx.Tx) error {
		bound := *s
		bound.db, bound.tx = sp, sp
		return fn(&bound)
	})
}

// enqueueGroup inserts the send jobs of emails and returns their ids in
// order.
func (s *Store) enqueueGroup(ctx context.Context, emails []*Email) ([]int64, error) {
	if g, ok := s.enqueue.(SendGroupEnqueuer); ok && len(emails) > 1 {
		ids, err := g.EnqueueSendGroupTx(ctx, s.tx, emails)
		if err != nil {
			return nil, fmt.Errorf("enqueueing emails: %w", err)
		}
		return ids, nil
	}
	return s.enqueueEach(ctx, emails)
}

// enqueueEach inserts the send jobs of emails one by one, for an enqueuer
// that cannot do many at once.
func (s *Store) enqueueEach(ctx context.Context, emails []*Email) ([]int64, error) {
	ids := make([]int64, len(emails))
	for i, e := range emails {
		id, err := s.enqueue.EnqueueSendTx(ctx, s.tx, e)
		if err != nil {
			return nil, fmt.Errorf("enqueueing email %s: %w", e.ID, err)
		}
		ids[i] = id
	}
	return ids, nil
}

// eventInsertArgs are the arguments of EventInsert's statement.
func eventInsertArgs(e *Email, eventType string, data any, at time.Time) (pgx.NamedArgs, error) {
	var raw json.RawMessage
	if data != nil {
		b, err := json.Marshal(data)
		if err != nil {
			return nil, fmt.Errorf("encoding %s event: %w", eventType, err)
		}
		raw = b
	}
	id, idAt := NewID()
	if at.IsZero() || at.Before(e.CreatedAt) {
		at = idAt
	}
	return pgx.NamedArgs{
		"id": id, "created_at": at, "email_id": e.ID, "app_id": e.AppID,
		"event_type": eventType, "event_data": raw,
	}, nil
}

// AcceptWriter accepts emails for many concurrent requests at once
// (groupcommit, like the send workers' status writes): a request hands over
// its email and waits until it is committed, while the writer stores every
// email waiting at that moment in one transaction (EmailAcceptGroup).
//
// A request is answered only after the transaction holding its email has
// committed, so an accepted email is as durable as with EmailAccept. If the
// group fails before its commit (one email breaks a constraint, say),
// nothing of it is stored and each email is accepted again on its own, so
// only the bad one reports an error. If the commit itself fails, whether it
// happened is unknown, so storing the emails again could store them twice:
// each request gets the error, as it would have from its own failed commit.
type AcceptWriter struct {
	b *groupcommit.Batcher[*EmailInsertParams, *Email]
}

// acceptFlushers is how many groups may be in flight at once: while some
// commit, another collects. Four were measured no better (bench/results/
// 2026-11-28-summary.md).
const acceptFlushers = 2

// NewAcceptWriter returns a writer storing up to maxBatch emails per
// transaction. Start it before use.
func NewAcceptWriter(s *Store, logger *slog.Logger, maxBatch int) *AcceptWriter {
	return &AcceptWriter{b: groupcommit.New(groupcommit.Config[*EmailInsertParams, *Email]{
		Name: "group accept", Logger: logger, MaxBatch: maxBatch, Flushers: acceptFlushers,
		Many: func(ctx context.Context, ps []*EmailInsertParams) ([]groupcommit.Result[*Email], error) {
			res, err := s.EmailAcceptGroup(ctx, ps)
			if err != nil {
				return nil, err
			}
			out := make([]groupcommit.Result[*Email], len(res))
			for i, r := range res {
				out[i] = groupcommit.Result[*Email]{Value: r.Email, Err: r.Err}
			}
			return out, nil
		},
		Single: s.EmailAccept,
		Retry: func(err error) bool {
			var rolledBack *groupRolledBack
			return errors.As(err, &rolledBack)
		},
	})}
}

// Start runs the writer until Stop.
func (w *AcceptWriter) Start() { w.b.Start() }

// Stop stores the emails already handed over and stops the writer. Accept
// still works afterwards, one email per transaction.
func (w *AcceptWriter) Stop() { w.b.Stop() }

// Accept stores p as EmailAccept does, sharing the transaction with
// whatever else is waiting. A refusal by quota is a *QuotaError.
func (w *AcceptWriter) Accept(ctx context.Context, p *EmailInsertParams) (*Email, error) {
	return w.b.Do(ctx, p)
}
