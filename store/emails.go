package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// emailQueries are the statements of sql/queries/emails.sql.
type emailQueries struct {
	EmailInsert         string
	EmailGet            string
	EmailGetForSend     string
	EmailList           string
	EmailTransition     string
	EmailTransitionMany string
	EmailSetWaiting     string
	EmailSetRecipients  string
}

// eventQueries are the statements of sql/queries/email_events.sql.
type eventQueries struct {
	EventInsert       string
	EventList         string
	EventCount        string
	EventInsertForApp string
}

// Email statuses, as the email_status enum holds them.
const (
	StatusQueued     = "queued"
	StatusProcessing = "processing"
	StatusSent       = "sent"
	StatusDelivered  = "delivered"
	StatusBounced    = "bounced"
	StatusFailed     = "failed"
	StatusCancelled  = "cancelled"
	StatusExpired    = "expired"
	StatusUncertain  = "uncertain"
)

// Address is a mailbox: an address and an optional display name.
type Address struct {
	Email string `json:"email"`
	Name  string `json:"name,omitempty"`
}

// Email is one accepted message and where it stands.
type Email struct {
	ID          uuid.UUID         `db:"id"`
	CreatedAt   time.Time         `db:"created_at"`
	AppID       uuid.UUID         `db:"app_id"`
	QueueID     uuid.UUID         `db:"queue_id"`
	QueueName   string            `db:"queue_name"`
	BatchID     *uuid.UUID        `db:"batch_id"`
	MessageID   string            `db:"message_id"`
	FromAddress string            `db:"from_address"`
	FromName    *string           `db:"from_name"`
	To          []Address         `db:"to_addresses"`
	Cc          []Address         `db:"cc"`
	Bcc         []Address         `db:"bcc"`
	ReplyTo     *string           `db:"reply_to"`
	Subject     string            `db:"subject"`
	HTML        *string           `db:"html_body"`
	Text        *string           `db:"text_body"`
	Headers     map[string]string `db:"headers"`
	Metadata    json.RawMessage   `db:"metadata"`
	Status      string            `db:"status"`
	Sandbox     bool              `db:"sandbox"`
	Priority    int16             `db:"priority"`
	RetryCount  int16             `db:"retry_count"`
	MaxRetries  int16             `db:"max_retries"`
	LastError   *string           `db:"last_error"`
	// WaitingReason says why a queued email is not moving; see EmailSetWaiting.
	WaitingReason *string    `db:"waiting_reason"`
	JobID         *int64     `db:"job_id"`
	ScheduledAt   *time.Time `db:"scheduled_at"`
	ExpiresAt     *time.Time `db:"expires_at"`
	SentAt        *time.Time `db:"sent_at"`
	DeliveredAt   *time.Time `db:"delivered_at"`
	UpdatedAt     time.Time  `db:"updated_at"`
	// NextAttemptAt is when the send job will next run, while it is waiting.
	NextAttemptAt *time.Time `db:"job_scheduled_at"`
	// Attempt is how many times the current job has been tried.
	Attempt *int16 `db:"job_attempt"`
	// RetryDelay is the queue's retry schedule, known only at insert time.
	RetryDelay []int32 `db:"-"`
	// Suppressed are the recipients EmailInsert dropped because they are on
	// a suppression list, known only at insert time.
	Suppressed []Suppressed `db:"-"`
}

// EmailInsertParams are the fields of a newly accepted email.
type EmailInsertParams struct {
	AppID            uuid.UUID
	Queue            *Queue
	BatchID          *uuid.UUID
	IdempotencyKey   *string
	MessageIDDomain  string
	From             Address
	To, Cc, Bcc      []Address
	ReplyTo          *string
	Subject          string
	HTML, Text       *string
	Headers          map[string]string
	Personalizations json.RawMessage
	Metadata         json.RawMessage
	Priority         int16
	Sandbox          bool
	ScheduledAt      *time.Time
	ExpiresAt        *time.Time
	// QueueVersion, when not 0, is the version of Queue the caller read
	// (QueueGetByNameVersion): EmailAccept and EmailAcceptGroup refuse the
	// email with ErrQueueChanged if the queue has changed since.
	QueueVersion int64
}

// EmailInsert stores an accepted email, its "queued" event and the River job
// that will send it, all in one transaction: once this returns, the email is
// durable and will be delivered (DESIGN.md, decision 1). Call it on a Store
// from Tx when other writes must share the transaction.
//
// Recipients on the app's or the global suppression list are dropped (and
// listed in the returned Email's Suppressed, with a "suppressed" event). If
// none remain, the email is stored "cancelled", with its original
// recipients, and no send job.
func (s *Store) EmailInsert(ctx context.Context, p *EmailInsertParams) (*Email, error) {
	var out *Email
	err := s.Tx(ctx, func(tx *Store) error {
		if err := tx.queueHold(ctx, p.Queue.ID, p.QueueVersion); err != nil {
			return err
		}
		var err error
		out, err = tx.emailInsertHeld(ctx, p)
		return err
	})
	return out, err
}

// emailInsertHeld is EmailInsert in a transaction that already holds the
// email's queue (queueHold).
func (tx *Store) emailInsertHeld(ctx context.Context, p *EmailInsertParams) (*Email, error) {
	if tx.enqueue == nil {
		return nil, fmt.Errorf("inserting email: store has no job enqueuer")
	}
	e := newEmail(p)
	first, err := tx.emailSuppress(ctx, e)
	if err != nil {
		return nil, err
	}
	if e.Status == StatusQueued {
		// The job first, so the row is written once, with its job id. Nothing
		// is visible to workers before the transaction commits.
		id, err := tx.enqueue.EnqueueSendTx(ctx, tx.tx, e)
		if err != nil {
			return nil, fmt.Errorf("enqueueing email %s: %w", e.ID, err)
		}
		e.JobID = &id
	}
	if _, err := tx.db.Exec(ctx, tx.q.EmailInsert, emailInsertArgs(e, p, first)); err != nil {
		return nil, fmt.Errorf("inserting email: %w", err)
	}
	if e.Status == StatusQueued && len(e.Suppressed) > 0 {
		if err := tx.EventInsert(ctx, e, "suppressed", SuppressedData(e.Suppressed), e.CreatedAt); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// newEmail is the email p describes, with a new id, before suppression.
func newEmail(p *EmailInsertParams) *Email {
	id, createdAt := NewID()
	e := &Email{
		ID: id, CreatedAt: createdAt, AppID: p.AppID, QueueID: p.Queue.ID, QueueName: p.Queue.Name,
		BatchID: p.BatchID, MessageID: id.String() + "@" + p.MessageIDDomain,
		FromAddress: p.From.Email, To: p.To, Cc: p.Cc, Bcc: p.Bcc, ReplyTo: p.ReplyTo,
		Subject: p.Subject, HTML: p.HTML, Text: p.Text, Headers: p.Headers, Metadata: p.Metadata,
		Status: StatusQueued, Sandbox: p.Sandbox, Priority: p.Priority, MaxRetries: p.Queue.MaxRetries,
		ScheduledAt: p.ScheduledAt, ExpiresAt: p.ExpiresAt, UpdatedAt: createdAt,
		RetryDelay: p.Queue.RetryDelay,
	}
	if p.From.Name != "" {
		e.FromName = &p.From.Name
	}
	return e
}

// emailInsertArgs are the arguments of the EmailInsert statement for e,
// made from p, stored with its first event.
func emailInsertArgs(e *Email, p *EmailInsertParams, first firstEvent) pgx.NamedArgs {
	eventID, _ := NewID()
	return pgx.NamedArgs{
		"id": e.ID, "created_at": e.CreatedAt, "app_id": e.AppID, "queue_id": e.QueueID,
		"batch_id": e.BatchID, "idempotency_key": p.IdempotencyKey, "message_id": e.MessageID,
		"from_address": e.FromAddress, "from_name": e.FromName, "to_addresses": e.To,
		"cc": nilIfEmpty(e.Cc), "bcc": nilIfEmpty(e.Bcc), "reply_to": e.ReplyTo,
		"subject": e.Subject, "html_body": e.HTML, "text_body": e.Text,
		"headers": nilIfEmptyMap(e.Headers), "personalization_data": rawOrNil(p.Personalizations),
		"metadata": rawOrNil(e.Metadata), "sandbox": e.Sandbox, "priority": e.Priority,
		"max_retries": e.MaxRetries, "job_id": e.JobID, "scheduled_at": e.ScheduledAt,
		"expires_at": e.ExpiresAt, "event_id": eventID, "status": e.Status,
		"event_type": first.Type, "event_data": first.Data,
	}
}

// EmailGet returns one of an app's emails. The partition is found from the
// id, so this reads one partition only.
func (s *Store) EmailGet(ctx context.Context, appID, id uuid.UUID) (*Email, error) {
	rows, err := s.db.Query(ctx, s.q.EmailGet, pgx.NamedArgs{"app_id": appID, "id": id, "created_at": IDTime(id)})
	if err != nil {
		return nil, notFound(err, "getting email")
	}
	e, err := pgx.CollectExactlyOneRow(rows, pgx.RowToAddrOfStructByName[Email])
	if err != nil {
		return nil, notFound(err, "getting email")
	}
	return e, nil
}

// EmailForSend is an email as the send worker needs it.
type EmailForSend struct {
	Email
	QueueSMTPConfigID *uuid.UUID    `db:"queue_smtp_config_id"`
	QueueIsPaused     bool          `db:"queue_is_paused"`
	QueueSettings     QueueSettings `db:"queue_settings"`
	AppIsActive       bool          `db:"app_is_active"`
	// QueueRateLimit and AppRateLimit are the send limits in emails/minute
	// (queues.rate_limit, apps.settings.rate_limit); nil means none.
	QueueRateLimit *int32 `db:"queue_rate_limit"`
	AppRateLimit   *int32 `db:"app_rate_limit"`
	// AnySuppressed says some recipient is on the app's or the global
	// suppression list; SuppressionCheck tells which.
	AnySuppressed bool `db:"any_suppressed"`
}

// EmailGetForSend returns an email for the worker sending it, with no app
// filter: the job was created for this email by the API.
func (s *Store) EmailGetForSend(ctx context.Context, id uuid.UUID) (*EmailForSend, error) {
	es, err := s.EmailGetForSendMany(ctx, []uuid.UUID{id})
	if err != nil {
		return nil, err
	}
	if es[0] == nil {
		return nil, fmt.Errorf("getting email to send: %w", ErrNotFound)
	}
	return es[0], nil
}

// EmailGetForSendMany reads many emails for their workers in one query.
// The result is in the order of ids, nil where an email does not exist.
func (s *Store) EmailGetForSendMany(ctx context.Context, ids []uuid.UUID) ([]*EmailForSend, error) {
	times := make([]time.Time, len(ids))
	for i, id := range ids {
		times[i] = IDTime(id)
	}
	rows, err := s.db.Query(ctx, s.q.EmailGetForSend, pgx.NamedArgs{"ids": ids, "created_ats": times})
	if err != nil {
		return nil, fmt.Errorf("getting emails to send: %w", err)
	}
	found, err := pgx.CollectRows(rows, pgx.RowToAddrOfStructByName[EmailForSend])
	if err != nil {
		return nil, fmt.Errorf("getting emails to send: %w", err)
	}
	out := make([]*EmailForSend, len(ids))
	for _, e := range found {
		shared := false
		for i, id := range ids {
			if id == e.ID && out[i] == nil {
				if shared { // asked for twice: each caller gets its own copy to change
					c := *e
					out[i] = &c
					continue
				}
				out[i], shared = e, true
			}
		}
	}
	return out, nil
}

// EmailListParams filter and page an app's emails, newest first.
type EmailListParams struct {
	AppID   uuid.UUID
	Status  *string
	Queue   *string
	BatchID *uuid.UUID
	Since   *time.Time
	After   *Cursor
	Limit   int
}

// Cursor is a position in a keyset-paginated list: every list is ordered
// by (created_at, id), and its rows report their place with Position.
type Cursor struct {
	CreatedAt time.Time `json:"t"`
	ID        uuid.UUID `json:"i"`
}

// Position is e's place in a list of emails.
func (e *Email) Position() Cursor { return Cursor{CreatedAt: e.CreatedAt, ID: e.ID} }

// Position is e's place in a list of events.
func (e *Event) Position() Cursor { return Cursor{CreatedAt: e.CreatedAt, ID: e.ID} }

// EmailList returns up to Limit emails (without bodies) and whether more
// follow.
func (s *Store) EmailList(ctx context.Context, p *EmailListParams) ([]*Email, bool, error) {
	args := pgx.NamedArgs{
		"app_id": p.AppID, "status": p.Status, "queue_name": p.Queue, "batch_id": p.BatchID,
		"since": p.Since, "cursor_created_at": nil, "cursor_id": nil, "limit": p.Limit + 1,
	}
	if p.After != nil {
		args["cursor_created_at"], args["cursor_id"] = p.After.CreatedAt, p.After.ID
	}
	rows, err := s.db.Query(ctx, s.q.EmailList, args)
	if err != nil {
		return nil, false, fmt.Errorf("listing emails: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToAddrOfStructByName[Email])
	if err != nil {
		return nil, false, fmt.Errorf("listing emails: %w", err)
	}
	more := len(list) > p.Limit
	if more {
		list = list[:p.Limit]
	}
	return list, more, nil
}

// EmailTransitionParams move an email from one of From to Status and record
// Event with Data. Optional fields are left unchanged when nil.
type EmailTransitionParams struct {
	ID         uuid.UUID
	From       []string
	Status     string
	Event      string
	Data       any
	LastError  *string
	ClearError bool
	RetryCount *int16
	SentAt     *time.Time
	// DeliveredAt sets delivered_at (a delivery report or the sandbox).
	DeliveredAt *time.Time
	At          time.Time
}

// EmailTransition applies p atomically. It reports false, and writes
// nothing, when the email is not in one of p.From (cancelled, already sent,
// or taken by another worker).
func (s *Store) EmailTransition(ctx context.Context, p *EmailTransitionParams) (bool, error) {
	args, err := transitionArgs(p)
	if err != nil {
		return false, err
	}
	tag, err := s.db.Exec(ctx, s.q.EmailTransition, args)
	if err != nil {
		return false, fmt.Errorf("moving email %s to %s: %w", p.ID, p.Status, err)
	}
	return tag.RowsAffected() == 1, nil
}

// EmailTransitionBatch applies many transitions in one statement: one
// round trip and one commit for all of them. It reports, per transition,
// whether it applied. Any error fails the whole batch (nothing is applied),
// so callers can retry them one by one. An email may appear only once.
func (s *Store) EmailTransitionBatch(ctx context.Context, ps []*EmailTransitionParams) ([]bool, error) {
	n := len(ps)
	var (
		ords      = make([]int32, n)
		ids       = make([]uuid.UUID, n)
		times     = make([]time.Time, n)
		froms     = make([]string, n)
		statuses  = make([]string, n)
		setErrs   = make([]bool, n)
		lastErrs  = make([]*string, n)
		retries   = make([]*int16, n)
		sentAts   = make([]*time.Time, n)
		delivAts  = make([]*time.Time, n)
		ats       = make([]time.Time, n)
		eventIDs  = make([]uuid.UUID, n)
		events    = make([]string, n)
		eventData = make([]json.RawMessage, n)
	)
	seen := make(map[uuid.UUID]bool, n)
	for i, p := range ps {
		if seen[p.ID] {
			return nil, fmt.Errorf("moving email %s: twice in one batch", p.ID)
		}
		seen[p.ID] = true
		data, err := json.Marshal(p.Data)
		if err != nil {
			return nil, fmt.Errorf("encoding %s event: %w", p.Event, err)
		}
		ords[i], ids[i], times[i] = int32(i), p.ID, IDTime(p.ID)
		froms[i], statuses[i] = strings.Join(p.From, ","), p.Status
		setErrs[i], lastErrs[i], retries[i] = p.LastError != nil || p.ClearError, p.LastError, p.RetryCount
		sentAts[i], delivAts[i], ats[i] = p.SentAt, p.DeliveredAt, p.At
		if ats[i].IsZero() {
			ats[i] = time.Now()
		}
		eventIDs[i], _ = NewID()
		events[i], eventData[i] = p.Event, data
	}
	rows, err := s.db.Query(ctx, s.q.EmailTransitionMany, pgx.NamedArgs{
		"ords": ords, "ids": ids, "created_ats": times, "from_statuses": froms, "statuses": statuses,
		"set_last_errors": setErrs, "last_errors": lastErrs, "retry_counts": retries, "sent_ats": sentAts,
		"delivered_ats": delivAts, "ats": ats, "event_ids": eventIDs, "event_types": events, "event_datas": eventData,
	})
	if err != nil {
		return nil, fmt.Errorf("moving %d emails: %w", n, err)
	}
	moved, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil, fmt.Errorf("moving %d emails: %w", n, err)
	}
	out := make([]bool, n)
	for _, i := range moved {
		out[i] = true
	}
	return out, nil
}

func transitionArgs(p *EmailTransitionParams) (pgx.NamedArgs, error) {
	data, err := json.Marshal(p.Data)
	if err != nil {
		return nil, fmt.Errorf("encoding %s event: %w", p.Event, err)
	}
	eventID, _ := NewID()
	at := p.At
	if at.IsZero() {
		at = time.Now()
	}
	return pgx.NamedArgs{
		"id": p.ID, "created_at": IDTime(p.ID), "from_statuses": p.From, "status": p.Status,
		"set_last_error": p.LastError != nil || p.ClearError, "last_error": p.LastError,
		"retry_count": p.RetryCount, "sent_at": p.SentAt, "delivered_at": p.DeliveredAt, "at": at,
		"event_id": eventID, "event_type": p.Event, "event_data": json.RawMessage(data),
	}, nil
}

// Event is one step in an email's history.
type Event struct {
	ID        uuid.UUID       `db:"id"`
	CreatedAt time.Time       `db:"created_at"`
	EmailID   uuid.UUID       `db:"email_id"`
	Type      string          `db:"event_type"`
	Data      json.RawMessage `db:"event_data"`
}

// EventInsert records an event of e at time at.
func (s *Store) EventInsert(ctx context.Context, e *Email, eventType string, data any, at time.Time) error {
	var raw json.RawMessage
	if data != nil {
		b, err := json.Marshal(data)
		if err != nil {
			return fmt.Errorf("encoding %s event: %w", eventType, err)
		}
		raw = b
	}
	id, idAt := NewID()
	if at.IsZero() || at.Before(e.CreatedAt) {
		at = idAt
	}
	_, err := s.db.Exec(ctx, s.q.EventInsert, pgx.NamedArgs{
		"id": id, "created_at": at, "email_id": e.ID, "app_id": e.AppID,
		"event_type": eventType, "event_data": raw,
	})
	if err != nil {
		return fmt.Errorf("recording %s event of email %s: %w", eventType, e.ID, err)
	}
	return nil
}

// EventListParams page through one email's events, oldest first.
type EventListParams struct {
	AppID   uuid.UUID
	EmailID uuid.UUID
	After   *Cursor
	Limit   int
}

// EventList returns up to Limit events of an app's email and whether more
// follow. An unknown email or one of another app yields an empty list; call
// EmailGet first to tell those apart.
func (s *Store) EventList(ctx context.Context, p *EventListParams) ([]*Event, bool, error) {
	args := pgx.NamedArgs{
		"app_id": p.AppID, "email_id": p.EmailID, "email_created_at": IDTime(p.EmailID),
		"cursor_created_at": nil, "cursor_id": nil, "limit": p.Limit + 1,
	}
	if p.After != nil {
		args["cursor_created_at"], args["cursor_id"] = p.After.CreatedAt, p.After.ID
	}
	rows, err := s.db.Query(ctx, s.q.EventList, args)
	if err != nil {
		return nil, false, fmt.Errorf("listing events: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToAddrOfStructByName[Event])
	if err != nil {
		return nil, false, fmt.Errorf("listing events: %w", err)
	}
	more := len(list) > p.Limit
	if more {
		list = list[:p.Limit]
	}
	return list, more, nil
}

func nilIfEmpty(a []Address) any {
	if len(a) == 0 {
		return nil
	}
	return a
}

func nilIfEmptyMap(m map[string]string) any {
	if len(m) == 0 {
		return nil
	}
	return m
}

func rawOrNil(r json.RawMessage) any {
	if len(r) == 0 || string(r) == "null" {
		return nil
	}
	return r
}

// EventCount counts an email's events of one type.
func (s *Store) EventCount(ctx context.Context, emailID uuid.UUID, eventType string) (int64, error) {
	var n int64
	err := s.db.QueryRow(ctx, s.q.EventCount, pgx.NamedArgs{
		"email_id": emailID, "email_created_at": IDTime(emailID), "event_type": eventType,
	}).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("counting %s events of email %s: %w", eventType, emailID, err)
	}
	return n, nil
}

// EmailSetWaiting records why a queued email is waiting (rate limited, circuit
// open, queue paused), for GET /v1/emails/{id} to explain. The next status
// change clears it. Nothing is written when the reason is unchanged.
func (s *Store) EmailSetWaiting(ctx context.Context, id uuid.UUID, reason string) error {
	_, err := s.db.Exec(ctx, s.q.EmailSetWaiting, pgx.NamedArgs{"id": id, "created_at": IDTime(id), "reason": reason})
	if err != nil {
		return fmt.Errorf("recording why email %s waits: %w", id, err)
	}
	return nil
}
