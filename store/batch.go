package store

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// batchQueries are the statements of sql/queries/email_batches.sql.
type batchQueries struct {
	EmailBatchCounts   string
	SendJobIDNext      string
	SendJobIDRange     string
	SendJobIDsInserted string
}

// SendManyEnqueuer inserts the send jobs of many emails at once, in tx and
// on its connection (job ids come from river_job's sequence, read back by
// the store). The jobs package's Enqueuer implements it; an enqueuer
// without it is called once per email.
type SendManyEnqueuer interface {
	EnqueueSendManyTx(ctx context.Context, tx pgx.Tx, emails []*Email) error
}

// EmailBatchInsertParams are a batch's shared fields and its emails.
type EmailBatchInsertParams struct {
	AppID           uuid.UUID
	Queue           *Queue
	BatchID         uuid.UUID
	MessageIDDomain string
	From            Address
	ReplyTo         *string
	Headers         map[string]string
	Priority        int16
	Sandbox         bool
	ScheduledAt     *time.Time
	ExpiresAt       *time.Time
	Emails          []BatchEmail
}

// BatchEmail is one email of a batch: its recipients and its rendered
// subject and bodies.
type BatchEmail struct {
	To               Address
	Cc, Bcc          []Address
	Subject          string
	HTML, Text       *string
	Personalizations json.RawMessage
	Metadata         json.RawMessage
}

// emailColumns are the columns EmailInsertBatch copies; status, retry_count
// and the rest take their defaults.
var emailColumns = []string{
	"id", "created_at", "app_id", "queue_id", "batch_id", "message_id", "from_address", "from_name",
	"to_addresses", "cc", "bcc", "reply_to", "subject", "html_body", "text_body", "headers",
	"personalization_data", "metadata", "sandbox", "priority", "max_retries", "job_id",
	"scheduled_at", "expires_at", "updated_at",
}

// emailJobIDColumn is the index of job_id in emailColumns.
var emailJobIDColumn = slices.Index(emailColumns, "job_id")

// eventColumns are the columns of the "queued" events EmailInsertBatch copies.
var eventColumns = []string{"id", "created_at", "email_id", "app_id", "event_type"}

// batchRows are the COPY rows of a batch's emails, without their job ids,
// and of their "queued" events.
type batchRows struct {
	emails, events [][]any
	err            error
}

// buildBatchRows encodes the rows of emails, the batch p's. Values are
// given to pgx in the forms it encodes most directly: uuids as
// pgtype.UUID, JSON as bytes, the shared headers marshalled once.
func buildBatchRows(p *EmailBatchInsertParams, emails []*Email) batchRows {
	var out batchRows
	var headers any
	if len(p.Headers) > 0 {
		h, err := json.Marshal(p.Headers)
		if err != nil {
			out.err = fmt.Errorf("encoding batch headers: %w", err)
			return out
		}
		headers = h
	}
	appID, queueID, batchID := pgUUID(p.AppID), pgUUID(p.Queue.ID), pgUUID(p.BatchID)
	out.emails = make([][]any, len(emails))
	out.events = make([][]any, len(emails))
	for i, e := range emails {
		to, err := json.Marshal(e.To)
		if err != nil {
			out.err = fmt.Errorf("encoding the recipient of email %s: %w", e.ID, err)
			return out
		}
		id := pgUUID(e.ID)
		out.emails[i] = []any{
			id, e.CreatedAt, appID, queueID, batchID, e.MessageID, e.FromAddress, e.FromName,
			to, nilIfEmpty(e.Cc), nilIfEmpty(e.Bcc), e.ReplyTo, e.Subject, e.HTML, e.Text, headers,
			rawOrNil(p.Emails[i].Personalizations), rawOrNil(e.Metadata), e.Sandbox, e.Priority,
			e.MaxRetries, nil, e.ScheduledAt, e.ExpiresAt, e.CreatedAt,
		}
		eventID, _ := NewID()
		out.events[i] = []any{pgUUID(eventID), e.CreatedAt, id, appID, "queued"}
	}
	return out
}

// EmailInsertBatch stores a batch of accepted emails, their "queued" events
// and their send jobs in one transaction, and returns the emails' ids in
// the order of p.Emails. Jobs go in first, through the enqueuer's COPY,
// since each email row holds its job's id; then the emails and events with
// COPY. Like EmailInsert, nothing is visible to workers before the
// transaction commits.
func (s *Store) EmailInsertBatch(ctx context.Context, p *EmailBatchInsertParams) ([]uuid.UUID, error) {
	if s.enqueue == nil {
		return nil, fmt.Errorf("inserting email batch: store has no job enqueuer")
	}
	if len(p.Emails) == 0 {
		return []uuid.UUID{}, nil
	}
	emails := batchEmailsOf(p)
	err := s.Tx(ctx, func(tx *Store) error {
		if err := tx.queueHold(ctx, p.Queue.ID, 0); err != nil {
			return err
		}
		// The rows are built while PostgreSQL takes the jobs; only their
		// job ids wait for the jobs.
		built := make(chan batchRows, 1)
		go func() { built <- buildBatchRows(p, emails) }()
		jobIDs, err := tx.enqueueMany(ctx, emails)
		rows := <-built
		if err != nil {
			return err
		}
		if rows.err != nil {
			return rows.err
		}
		for i, e := range emails {
			e.JobID = &jobIDs[i]
			rows.emails[i][emailJobIDColumn] = jobIDs[i]
		}
		if _, err := tx.tx.CopyFrom(ctx, pgx.Identifier{"emails"}, emailColumns, pgx.CopyFromRows(rows.emails)); err != nil {
			return fmt.Errorf("copying batch emails: %w", err)
		}
		_, err = tx.tx.CopyFrom(ctx, pgx.Identifier{"email_events"}, eventColumns, pgx.CopyFromRows(rows.events))
		if err != nil {
			return fmt.Errorf("copying batch events: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	ids := make([]uuid.UUID, len(emails))
	for i, e := range emails {
		ids[i] = e.ID
	}
	return ids, nil
}

// buildParallelMin is the batch size from which the emails' structs are
// built on every core at once (10,000 take ~7 ms on one).
const buildParallelMin = 1000

// batchEmailsOf makes the emails of the batch p, each with a new id. The
// ids are UUIDv7s, increasing within each run of emails built on one core.
func batchEmailsOf(p *EmailBatchInsertParams) []*Email {
	n := len(p.Emails)
	emails := make([]*Email, n)
	rows := make([]Email, n)
	var fromName *string
	if p.From.Name != "" {
		fromName = &p.From.Name
	}
	runs := 1
	if n >= buildParallelMin {
		runs = runtime.GOMAXPROCS(0)
	}
	var wg sync.WaitGroup
	for w := range runs {
		wg.Go(func() {
			for i := n * w / runs; i < n*(w+1)/runs; i++ {
				b := &p.Emails[i]
				id, createdAt := NewID()
				rows[i] = Email{
					ID: id, CreatedAt: createdAt, AppID: p.AppID, QueueID: p.Queue.ID, QueueName: p.Queue.Name,
					BatchID: &p.BatchID, MessageID: id.String() + "@" + p.MessageIDDomain,
					FromAddress: p.From.Email, FromName: fromName, To: []Address{b.To}, Cc: b.Cc, Bcc: b.Bcc,
					ReplyTo: p.ReplyTo, Subject: b.Subject, HTML: b.HTML, Text: b.Text, Headers: p.Headers,
					Metadata: b.Metadata, Status: StatusQueued, Sandbox: p.Sandbox, Priority: p.Priority,
					MaxRetries: p.Queue.MaxRetries, ScheduledAt: p.ScheduledAt, ExpiresAt: p.ExpiresAt,
					UpdatedAt: createdAt, RetryDelay: p.Queue.RetryDelay,
				}
				emails[i] = &rows[i]
			}
		})
	}
	wg.Wait()
	return emails
}

// enqueueMany inserts the send jobs of emails and returns their ids in
// order.
//
// River's InsertManyFastTx streams jobs with COPY but returns only a count,
// while emails.job_id needs each job's id (GET /v1/emails/{id} reads the
// next attempt from the job, and cancelling an email cancels its job). The
// ids come from river_job's sequence, on this transaction's connection: one
// nextval taken before the insert is below all of them, and currval after
// it is the last of them. When nothing else took an id in between (the
// range holds exactly one id per email, and its two ends are the first and
// last emails' jobs), the jobs hold the range's ids in order. Otherwise one
// primary-key range scan reads the jobs in between; jobs that other
// sessions committed inside that range meanwhile carry other emails' ids
// and are skipped. This replaced a one-off mark in each job's metadata
// found through River's GIN index, whose pending list made the read-back
// cost up to 150 ms after a few batches.
func (s *Store) enqueueMany(ctx context.Context, emails []*Email) ([]int64, error) {
	m, ok := s.enqueue.(SendManyEnqueuer)
	if !ok {
		return s.enqueueEach(ctx, emails)
	}
	var after int64
	if err := s.tx.QueryRow(ctx, s.q.SendJobIDNext).Scan(&after); err != nil {
		return nil, fmt.Errorf("enqueueing batch: reading the job id sequence: %w", err)
	}
	if err := m.EnqueueSendManyTx(ctx, s.tx, emails); err != nil {
		return nil, fmt.Errorf("enqueueing batch: %w", err)
	}
	var (
		last        int64
		first, tail pgtype.UUID
	)
	if err := s.tx.QueryRow(ctx, s.q.SendJobIDRange, pgx.NamedArgs{"after": after}).Scan(&last, &first, &tail); err != nil {
		return nil, fmt.Errorf("enqueueing batch: reading the job id sequence: %w", err)
	}
	n := len(emails)
	if last-after == int64(n) && first == pgUUID(emails[0].ID) && tail == pgUUID(emails[n-1].ID) {
		ids := make([]int64, n)
		for i := range ids {
			ids[i] = after + 1 + int64(i)
		}
		return ids, nil
	}
	return s.sendJobIDs(ctx, emails, after)
}

// sendJobIDs reads back the ids of the send jobs of emails, inserted on
// this transaction's connection after job id after, in the order of emails.
func (s *Store) sendJobIDs(ctx context.Context, emails []*Email, after int64) ([]int64, error) {
	index := make(map[uuid.UUID]int, len(emails))
	for i, e := range emails {
		index[e.ID] = i
	}
	rows, err := s.tx.Query(ctx, s.q.SendJobIDsInserted, pgx.NamedArgs{"after": after})
	if err != nil {
		return nil, fmt.Errorf("reading send job ids: %w", err)
	}
	ids := make([]int64, len(emails))
	found := 0
	var (
		jobID   int64
		emailID pgtype.UUID
	)
	_, err = pgx.ForEachRow(rows, []any{&jobID, &emailID}, func() error {
		i, ok := index[emailID.Bytes]
		if !ok || !emailID.Valid {
			return nil // another session's job
		}
		if ids[i] != 0 {
			return fmt.Errorf("email %s has two send jobs, %d and %d", uuid.UUID(emailID.Bytes), ids[i], jobID)
		}
		ids[i] = jobID
		found++
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading send job ids: %w", err)
	}
	if found != len(emails) {
		return nil, fmt.Errorf("reading send job ids: found %d of %d", found, len(emails))
	}
	return ids, nil
}

// EmailBatchCounts returns how many of an app's emails in a batch are in
// each status. An unknown batch, or another app's, has no counts.
func (s *Store) EmailBatchCounts(ctx context.Context, appID, batchID uuid.UUID) (map[string]int64, error) {
	rows, err := s.db.Query(ctx, s.q.EmailBatchCounts, pgx.NamedArgs{
		"app_id": appID, "batch_id": batchID, "created_at": IDTime(batchID),
	})
	if err != nil {
		return nil, fmt.Errorf("counting batch %s: %w", batchID, err)
	}
	out := map[string]int64{}
	var (
		status string
		n      int64
	)
	_, err = pgx.ForEachRow(rows, []any{&status, &n}, func() error {
		out[status] = n
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("counting batch %s: %w", batchID, err)
	}
	return out, nil
}

// pgUUID is id as pgx encodes it directly. A uuid.UUID goes through its
// driver.Valuer instead: formatted as text, refused by the binary encoder
// (with a formatted error) and parsed back, which on the 20,000 uuids of a
// 10,000-email COPY cost more CPU than all the rest of the encoding.
func pgUUID(id uuid.UUID) pgtype.UUID { return pgtype.UUID{Bytes: id, Valid: true} }
