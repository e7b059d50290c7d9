package store

import (
	"context"
	"encoding/json"
	"fmt"
	netmail "net/mail"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/robfig/cron/v3"
)

// scheduledJobQueries are the statements of sql/queries/scheduled_jobs.sql.
type scheduledJobQueries struct {
	ScheduledJobInsert    string
	ScheduledJobGet       string
	ScheduledJobLock      string
	ScheduledJobList      string
	ScheduledJobUpdate    string
	ScheduledJobDelete    string
	ScheduledJobClaimDue  string
	ScheduledJobAdvance   string
	ScheduledJobRunInsert string
	ScheduledJobRunFinish string
	ScheduledJobRunPrune  string
}

// ScheduledJob is a recurring email: EmailTemplate is queued at every tick
// of CronExpression, evaluated in Timezone.
type ScheduledJob struct {
	ID             uuid.UUID       `db:"id"`
	AppID          uuid.UUID       `db:"app_id"`
	QueueID        uuid.UUID       `db:"queue_id"`
	QueueName      string          `db:"queue_name"`
	Name           string          `db:"name"`
	CronExpression string          `db:"cron_expression"`
	Timezone       string          `db:"timezone"`
	EmailTemplate  json.RawMessage `db:"email_template"`
	IsActive       bool            `db:"is_active"`
	Sandbox        bool            `db:"sandbox"`
	LastRunAt      *time.Time      `db:"last_run_at"`
	// NextRunAt is the next occurrence (UTC); nil when the job is inactive.
	NextRunAt *time.Time `db:"next_run_at"`
	CreatedAt time.Time  `db:"created_at"`
	UpdatedAt time.Time  `db:"updated_at"`
}

// Position is j's place in a list of scheduled jobs.
func (j *ScheduledJob) Position() Cursor { return Cursor{CreatedAt: j.CreatedAt, ID: j.ID} }

// Schedule is a parsed cron expression in its time zone.
type Schedule struct {
	cron cron.Schedule
	loc  *time.Location
}

// ScheduleError names the part of a schedule that is invalid.
type ScheduleError struct {
	Field  string // "cron_expression" or "timezone"
	Reason string
}

func (e *ScheduleError) Error() string { return e.Field + ": " + e.Reason }

// ParseSchedule parses a standard 5-field cron expression (minute hour
// day-of-month month day-of-week; no descriptors such as @daily, no
// CRON_TZ prefix) to be evaluated in the IANA zone tz. "Local" and "" are
// refused: a schedule must not depend on the server's zone.
func ParseSchedule(expr, tz string) (*Schedule, error) {
	if n := len(strings.Fields(expr)); n != 5 {
		return nil, &ScheduleError{"cron_expression", fmt.Sprintf("a cron expression has 5 fields (minute hour day-of-month month day-of-week), got %d", n)}
	}
	c, err := cron.ParseStandard(expr)
	if err != nil {
		return nil, &ScheduleError{"cron_expression", err.Error()}
	}
	if tz == "" || tz == "Local" {
		return nil, &ScheduleError{"timezone", "timezone must be an IANA time zone name such as Europe/Berlin or UTC"}
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, &ScheduleError{"timezone", fmt.Sprintf("unknown time zone %q", tz)}
	}
	return &Schedule{cron: c, loc: loc}, nil
}

// Next returns the first occurrence strictly after t, in UTC, or the zero
// time if there is none within five years (an expression such as "0 0 30 2
// *"). It is computed in the schedule's zone, so a 09:00 Europe/Berlin job
// fires at 09:00 local time on both sides of a daylight saving change.
func (s *Schedule) Next(t time.Time) time.Time {
	n := s.cron.Next(t.In(s.loc))
	if n.IsZero() {
		return n
	}
	return n.UTC()
}

// ScheduledJobInsertParams are the fields of a new scheduled job.
type ScheduledJobInsertParams struct {
	AppID          uuid.UUID
	QueueID        uuid.UUID
	Name           string
	CronExpression string
	Timezone       string
	EmailTemplate  json.RawMessage
	IsActive       bool
	Sandbox        bool
	NextRunAt      *time.Time
	Now            time.Time
}

// ScheduledJobInsert creates a scheduled job; ErrNotFound when the queue is
// not one of the app's.
func (s *Store) ScheduledJobInsert(ctx context.Context, p *ScheduledJobInsertParams) (*ScheduledJob, error) {
	id, _ := NewID()
	return s.scheduledJobOne(ctx, s.q.ScheduledJobInsert, "inserting scheduled job", pgx.NamedArgs{
		"id": id, "app_id": p.AppID, "queue_id": p.QueueID, "name": p.Name,
		"cron_expression": p.CronExpression, "timezone": p.Timezone, "email_template": p.EmailTemplate,
		"is_active": p.IsActive, "sandbox": p.Sandbox, "next_run_at": p.NextRunAt, "now": p.Now,
	})
}

// ScheduledJobGet returns one of an app's scheduled jobs.
func (s *Store) ScheduledJobGet(ctx context.Context, appID, id uuid.UUID) (*ScheduledJob, error) {
	return s.scheduledJobOne(ctx, s.q.ScheduledJobGet, "getting scheduled job", pgx.NamedArgs{"app_id": appID, "id": id})
}

// ScheduledJobLock returns one of an app's scheduled jobs, locked until the
// transaction ends. Call it on a Store from Tx.
func (s *Store) ScheduledJobLock(ctx context.Context, appID, id uuid.UUID) (*ScheduledJob, error) {
	return s.scheduledJobOne(ctx, s.q.ScheduledJobLock, "locking scheduled job", pgx.NamedArgs{"app_id": appID, "id": id})
}

func (s *Store) scheduledJobOne(ctx context.Context, query, what string, args pgx.NamedArgs) (*ScheduledJob, error) {
	rows, err := s.db.Query(ctx, query, args)
	if err != nil {
		return nil, notFound(err, what)
	}
	j, err := pgx.CollectExactlyOneRow(rows, pgx.RowToAddrOfStructByName[ScheduledJob])
	if err != nil {
		return nil, notFound(err, what)
	}
	return j, nil
}

// ScheduledJobListParams page through an app's scheduled jobs, newest first.
type ScheduledJobListParams struct {
	AppID uuid.UUID
	After *Cursor
	Limit int
}

// ScheduledJobList returns up to Limit scheduled jobs and whether more follow.
func (s *Store) ScheduledJobList(ctx context.Context, p *ScheduledJobListParams) ([]*ScheduledJob, bool, error) {
	args := pgx.NamedArgs{"app_id": p.AppID, "cursor_created_at": nil, "cursor_id": nil, "limit": p.Limit + 1}
	if p.After != nil {
		args["cursor_created_at"], args["cursor_id"] = p.After.CreatedAt, p.After.ID
	}
	rows, err := s.db.Query(ctx, s.q.ScheduledJobList, args)
	if err != nil {
		return nil, false, fmt.Errorf("listing scheduled jobs: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToAddrOfStructByName[ScheduledJob])
	if err != nil {
		return nil, false, fmt.Errorf("listing scheduled jobs: %w", err)
	}
	more := len(list) > p.Limit
	if more {
		list = list[:p.Limit]
	}
	return list, more, nil
}

// ScheduledJobUpdate writes every editable field of j (read with
// ScheduledJobLock and changed by the caller); ErrNotFound when j.QueueID
// is not one of the app's live queues.
func (s *Store) ScheduledJobUpdate(ctx context.Context, j *ScheduledJob, now time.Time) error {
	tag, err := s.db.Exec(ctx, s.q.ScheduledJobUpdate, pgx.NamedArgs{
		"app_id": j.AppID, "id": j.ID, "name": j.Name, "queue_id": j.QueueID,
		"cron_expression": j.CronExpression, "timezone": j.Timezone, "email_template": j.EmailTemplate,
		"is_active": j.IsActive, "next_run_at": j.NextRunAt, "now": now,
	})
	if err != nil {
		return fmt.Errorf("updating scheduled job %s: %w", j.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("updating scheduled job %s: queue %s: %w", j.ID, j.QueueID, ErrNotFound)
	}
	j.UpdatedAt = now
	return nil
}

// ScheduledJobDelete deletes one of an app's scheduled jobs; emails it
// already queued are not touched.
func (s *Store) ScheduledJobDelete(ctx context.Context, appID, id uuid.UUID) error {
	tag, err := s.db.Exec(ctx, s.q.ScheduledJobDelete, pgx.NamedArgs{"app_id": appID, "id": id})
	if err != nil {
		return fmt.Errorf("deleting scheduled job %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("deleting scheduled job %s: %w", id, ErrNotFound)
	}
	return nil
}

// ScheduledJobClaimDue locks one active job whose next_run_at is at or
// before now, skipping jobs another transaction holds; ErrNotFound when
// none is due. With id (and occurrence) set, only that job at that
// occurrence is claimed. Call it on a Store from Tx.
func (s *Store) ScheduledJobClaimDue(ctx context.Context, now time.Time, id *uuid.UUID, occurrence *time.Time) (*ScheduledJob, error) {
	return s.scheduledJobOne(ctx, s.q.ScheduledJobClaimDue, "claiming a due scheduled job",
		pgx.NamedArgs{"now": now, "id": id, "occurrence_at": occurrence})
}

// ScheduledJobAdvance records that the occurrence lastRun fired and moves
// the job to next (nil deactivates it: its schedule has no next occurrence).
// It also forgets runs far behind, which can never be claimed again.
func (s *Store) ScheduledJobAdvance(ctx context.Context, id uuid.UUID, lastRun time.Time, next *time.Time, now time.Time) error {
	_, err := s.db.Exec(ctx, s.q.ScheduledJobAdvance, pgx.NamedArgs{
		"id": id, "last_run_at": lastRun, "next_run_at": next, "now": now,
	})
	if err != nil {
		return fmt.Errorf("advancing scheduled job %s: %w", id, err)
	}
	_, err = s.db.Exec(ctx, s.q.ScheduledJobRunPrune, pgx.NamedArgs{
		"scheduled_job_id": id, "before": lastRun.Add(-runHistory),
	})
	if err != nil {
		return fmt.Errorf("pruning runs of scheduled job %s: %w", id, err)
	}
	return nil
}

// runHistory is how long fired occurrences are remembered. The scan only
// ever claims next_run_at, which moves forward, so a week is ample.
const runHistory = 7 * 24 * time.Hour

// ScheduledJobRunInsert claims one occurrence of a job. It reports false,
// writing nothing, when that occurrence was already claimed: this primary
// key is what makes each occurrence fire exactly once.
func (s *Store) ScheduledJobRunInsert(ctx context.Context, jobID uuid.UUID, occurrence time.Time) (bool, error) {
	tag, err := s.db.Exec(ctx, s.q.ScheduledJobRunInsert, pgx.NamedArgs{
		"scheduled_job_id": jobID, "occurrence_at": occurrence,
	})
	if err != nil {
		return false, fmt.Errorf("recording run of scheduled job %s: %w", jobID, err)
	}
	return tag.RowsAffected() == 1, nil
}

// ScheduledJobRunFinish records what a claimed occurrence did: the email it
// queued, or why it queued none.
func (s *Store) ScheduledJobRunFinish(ctx context.Context, jobID uuid.UUID, occurrence time.Time, emailID *uuid.UUID, skipped *string) error {
	_, err := s.db.Exec(ctx, s.q.ScheduledJobRunFinish, pgx.NamedArgs{
		"scheduled_job_id": jobID, "occurrence_at": occurrence, "email_id": emailID, "skipped_reason": skipped,
	})
	if err != nil {
		return fmt.Errorf("recording run of scheduled job %s: %w", jobID, err)
	}
	return nil
}

// EmailTemplate is the stored email_template of a scheduled job: the JSON
// of POST /v1/emails' request body, already validated by the API when the
// job was saved. Only the fields an email is built from are read.
type EmailTemplate struct {
	Queue            *string           `json:"queue"`
	From             Address           `json:"from"`
	To               []Address         `json:"to"`
	Cc               []Address         `json:"cc"`
	Bcc              []Address         `json:"bcc"`
	ReplyTo          *Address          `json:"reply_to"`
	Subject          string            `json:"subject"`
	HTML             *string           `json:"html"`
	Text             *string           `json:"text"`
	Headers          map[string]string `json:"headers"`
	Personalizations json.RawMessage   `json:"personalizations"`
	Metadata         json.RawMessage   `json:"metadata"`
	Priority         *int16            `json:"priority"`
}

// EmailParams builds the email one run of j queues into q: the same
// insert parameters POST /v1/emails builds from the same request. The
// template's scheduled_at and expires_at are absolute times and are not
// part of a recurring email; the API refuses them in a template.
func (j *ScheduledJob) EmailParams(q *Queue) (*EmailInsertParams, error) {
	var t EmailTemplate
	if err := json.Unmarshal(j.EmailTemplate, &t); err != nil {
		return nil, fmt.Errorf("decoding template of scheduled job %s: %w", j.ID, err)
	}
	if t.From.Email == "" || len(t.To) == 0 {
		return nil, fmt.Errorf("template of scheduled job %s has no sender or no recipient", j.ID)
	}
	p := &EmailInsertParams{
		AppID: j.AppID, Queue: q, Subject: t.Subject, From: t.From, To: t.To,
		Cc: noAddresses(t.Cc), Bcc: noAddresses(t.Bcc), HTML: t.HTML, Text: t.Text, Headers: t.Headers,
		MessageIDDomain: "mailqueue.invalid", Priority: q.Priority, Sandbox: j.Sandbox,
		Personalizations: rawObject(t.Personalizations), Metadata: rawObject(t.Metadata),
	}
	if i := strings.LastIndexByte(t.From.Email, '@'); i >= 0 {
		p.MessageIDDomain = strings.ToLower(t.From.Email[i+1:])
	}
	if t.ReplyTo != nil {
		s := (&netmail.Address{Name: t.ReplyTo.Name, Address: t.ReplyTo.Email}).String()
		p.ReplyTo = &s
	}
	if t.Priority != nil {
		p.Priority = *t.Priority
	}
	return p, nil
}

func noAddresses(a []Address) []Address {
	if len(a) == 0 {
		return nil
	}
	return a
}

func rawObject(r json.RawMessage) json.RawMessage {
	if len(r) == 0 || string(r) == "null" {
		return nil
	}
	return r
}
