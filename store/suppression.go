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

// suppressionQueries are the statements of sql/queries/suppression.sql.
type suppressionQueries struct {
	SuppressionInsertMany string
	SuppressionRecord     string
	SuppressionCheck      string
	SuppressionList       string
	SuppressionExport     string
	SuppressionDelete     string
}

// Suppression reasons, as the suppression_reason enum holds them.
const (
	ReasonHardBounce  = "hard_bounce"
	ReasonSoftBounce  = "soft_bounce"
	ReasonComplaint   = "complaint"
	ReasonUnsubscribe = "unsubscribe"
	ReasonManual      = "manual"
)

// Suppression is one entry of a suppression list.
type Suppression struct {
	ID uuid.UUID `db:"id"`
	// AppID is the app whose list holds the entry; nil for the global list.
	AppID         *uuid.UUID `db:"app_id"`
	Email         string     `db:"email_address"`
	Reason        string     `db:"reason"`
	SourceEmailID *uuid.UUID `db:"source_email_id"`
	ExpiresAt     *time.Time `db:"expires_at"`
	CreatedAt     time.Time  `db:"created_at"`
}

// Position is s's place in a list of suppression entries.
func (s *Suppression) Position() Cursor { return Cursor{CreatedAt: s.CreatedAt, ID: s.ID} }

// NormalizeAddress is the form in which addresses are stored and compared
// on suppression lists.
func NormalizeAddress(email string) string { return strings.ToLower(strings.TrimSpace(email)) }

// SuppressionEntry is one address to add.
type SuppressionEntry struct {
	Email     string
	Reason    string
	ExpiresAt *time.Time
}

// SuppressionInsertParams add entries to one list.
type SuppressionInsertParams struct {
	// AppID is the app whose list to add to; nil for the global list.
	AppID         *uuid.UUID
	Entries       []SuppressionEntry
	SourceEmailID *uuid.UUID
}

// SuppressionInsert adds entries and returns those written; an address the
// list already holds (and whose entry has not expired) is skipped. Entries
// must not repeat an address.
func (s *Store) SuppressionInsert(ctx context.Context, p *SuppressionInsertParams) ([]*Suppression, error) {
	n := len(p.Entries)
	ids, emails, reasons := make([]uuid.UUID, n), make([]string, n), make([]string, n)
	expires := make([]*time.Time, n)
	for i, e := range p.Entries {
		ids[i], _ = NewID()
		emails[i], reasons[i], expires[i] = NormalizeAddress(e.Email), e.Reason, e.ExpiresAt
	}
	rows, err := s.db.Query(ctx, s.q.SuppressionInsertMany, pgx.NamedArgs{
		"app_id": p.AppID, "source_email_id": p.SourceEmailID, "at": time.Now().UTC(),
		"ids": ids, "emails": emails, "reasons": reasons, "expires": expires,
	})
	if err != nil {
		return nil, fmt.Errorf("adding suppression entries: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToAddrOfStructByName[Suppression])
	if err != nil {
		return nil, fmt.Errorf("adding suppression entries: %w", err)
	}
	return out, nil
}

// SuppressionRecordParams are one entry the system adds because of what
// happened to an email (bounce, complaint, unsubscribe).
type SuppressionRecordParams struct {
	AppID         uuid.UUID
	Email         string
	Reason        string
	SourceEmailID *uuid.UUID
	ExpiresAt     *time.Time
	At            time.Time
}

// SuppressionRecord adds an entry to an app's list, or strengthens the
// one there (an expiring entry gives way to a permanent or longer one). It
// reports whether anything was written.
func (s *Store) SuppressionRecord(ctx context.Context, p *SuppressionRecordParams) (bool, error) {
	id, _ := NewID()
	at := p.At
	if at.IsZero() {
		at = time.Now()
	}
	tag, err := s.db.Exec(ctx, s.q.SuppressionRecord, pgx.NamedArgs{
		"id": id, "app_id": p.AppID, "email_address": NormalizeAddress(p.Email), "reason": p.Reason,
		"source_email_id": p.SourceEmailID, "expires_at": p.ExpiresAt, "at": at,
	})
	if err != nil {
		return false, fmt.Errorf("suppressing an address for app %s: %w", p.AppID, err)
	}
	return tag.RowsAffected() == 1, nil
}

// Suppressed is a recipient found on a suppression list.
type Suppressed struct {
	Email  string `json:"email"`
	Reason string `json:"reason"`
	// Global is true when the entry is on the list shared by all apps.
	Global bool `json:"global,omitempty"`
}

// SuppressionCheck returns which of emails are suppressed for appID (by its
// list or the global one), keyed by normalised address. Expired entries do
// not count. Its cost grows with len(emails), not with the lists' size.
func (s *Store) SuppressionCheck(ctx context.Context, appID uuid.UUID, emails []string) (map[string]Suppressed, error) {
	norm := make([]string, len(emails))
	for i, e := range emails {
		norm[i] = NormalizeAddress(e)
	}
	rows, err := s.db.Query(ctx, s.q.SuppressionCheck, pgx.NamedArgs{"app_id": appID, "emails": norm})
	if err != nil {
		return nil, fmt.Errorf("checking suppression lists: %w", err)
	}
	return suppressionHits(rows)
}

// suppressionHits reads the rows of a SuppressionCheck statement.
func suppressionHits(rows pgx.Rows) (map[string]Suppressed, error) {
	defer rows.Close()
	var out map[string]Suppressed
	for rows.Next() {
		var hit Suppressed
		if err := rows.Scan(&hit.Email, &hit.Reason, &hit.Global); err != nil {
			return nil, fmt.Errorf("checking suppression lists: %w", err)
		}
		if out == nil {
			out = map[string]Suppressed{}
		}
		if _, seen := out[hit.Email]; !seen { // the app's own entry first
			out[hit.Email] = hit
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("checking suppression lists: %w", err)
	}
	return out, nil
}

// SplitSuppressed removes from lists every address in hits (keys are
// normalised addresses), returning what remains of each list and the
// removed recipients in order.
func SplitSuppressed(hits map[string]Suppressed, lists ...[]Address) ([][]Address, []Suppressed) {
	kept := make([][]Address, len(lists))
	var dropped []Suppressed
	for i, list := range lists {
		for _, a := range list {
			if hit, ok := hits[NormalizeAddress(a.Email)]; ok {
				hit.Email = a.Email
				dropped = append(dropped, hit)
				continue
			}
			kept[i] = append(kept[i], a)
		}
	}
	return kept, dropped
}

// recipientEmails lists every address of to, cc and bcc.
func recipientEmails(lists ...[]Address) []string {
	var out []string
	for _, l := range lists {
		for _, a := range l {
			out = append(out, a.Email)
		}
	}
	return out
}

// SuppressionListParams page through the entries visible to an app.
type SuppressionListParams struct {
	AppID  uuid.UUID
	Reason *string
	After  *Cursor
	Limit  int
}

// SuppressionList returns up to Limit entries of the app's list and the
// global one, newest first, and whether more follow.
func (s *Store) SuppressionList(ctx context.Context, p *SuppressionListParams) ([]*Suppression, bool, error) {
	args := pgx.NamedArgs{
		"app_id": p.AppID, "reason": p.Reason, "cursor_created_at": nil, "cursor_id": nil, "limit": p.Limit + 1,
	}
	if p.After != nil {
		args["cursor_created_at"], args["cursor_id"] = p.After.CreatedAt, p.After.ID
	}
	rows, err := s.db.Query(ctx, s.q.SuppressionList, args)
	if err != nil {
		return nil, false, fmt.Errorf("listing suppression entries: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToAddrOfStructByName[Suppression])
	if err != nil {
		return nil, false, fmt.Errorf("listing suppression entries: %w", err)
	}
	more := len(list) > p.Limit
	if more {
		list = list[:p.Limit]
	}
	return list, more, nil
}

// SuppressionExport calls fn for every entry visible to an app, oldest
// first, streaming rows from the server rather than loading them all.
func (s *Store) SuppressionExport(ctx context.Context, appID uuid.UUID, fn func(*Suppression) error) error {
	rows, err := s.db.Query(ctx, s.q.SuppressionExport, pgx.NamedArgs{"app_id": appID})
	if err != nil {
		return fmt.Errorf("exporting suppression entries: %w", err)
	}
	defer rows.Close()
	scan := pgx.RowToAddrOfStructByName[Suppression]
	for rows.Next() {
		e, err := scan(rows)
		if err != nil {
			return fmt.Errorf("exporting suppression entries: %w", err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("exporting suppression entries: %w", err)
	}
	return nil
}

// SuppressionDelete removes an address from an app's list, or from the
// global list when appID is nil, and returns the removed entry;
// ErrNotFound if the list does not hold it.
func (s *Store) SuppressionDelete(ctx context.Context, appID *uuid.UUID, email string) (*Suppression, error) {
	rows, err := s.db.Query(ctx, s.q.SuppressionDelete, pgx.NamedArgs{"app_id": appID, "email_address": NormalizeAddress(email)})
	if err != nil {
		return nil, notFound(err, "removing suppression entry")
	}
	e, err := pgx.CollectExactlyOneRow(rows, pgx.RowToAddrOfStructByName[Suppression])
	if err != nil {
		return nil, notFound(err, "removing suppression entry")
	}
	return e, nil
}

// EmailSetRecipients replaces the recipients of an email that is not sent
// yet and records eventType with data; it reports false, writing nothing,
// when the email is no longer queued or processing.
func (s *Store) EmailSetRecipients(ctx context.Context, id uuid.UUID, to, cc, bcc []Address, eventType string, data any, at time.Time) (bool, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return false, fmt.Errorf("encoding %s event: %w", eventType, err)
	}
	if to == nil {
		to = []Address{}
	}
	eventID, _ := NewID()
	tag, err := s.db.Exec(ctx, s.q.EmailSetRecipients, pgx.NamedArgs{
		"id": id, "created_at": IDTime(id), "to_addresses": to, "cc": nilIfEmpty(cc), "bcc": nilIfEmpty(bcc),
		"at": at, "event_id": eventID, "event_type": eventType, "event_data": json.RawMessage(raw),
	})
	if err != nil {
		return false, fmt.Errorf("changing recipients of email %s: %w", id, err)
	}
	return tag.RowsAffected() == 1, nil
}

// EventInsertForApp records an event of one of an app's emails, if the
// email still exists, and reports whether it did.
func (s *Store) EventInsertForApp(ctx context.Context, appID, emailID uuid.UUID, eventType string, data any, at time.Time) (bool, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return false, fmt.Errorf("encoding %s event: %w", eventType, err)
	}
	id, idAt := NewID()
	if at.IsZero() {
		at = idAt
	}
	tag, err := s.db.Exec(ctx, s.q.EventInsertForApp, pgx.NamedArgs{
		"id": id, "at": at, "email_id": emailID, "email_created_at": IDTime(emailID), "app_id": appID,
		"event_type": eventType, "event_data": json.RawMessage(raw),
	})
	if err != nil {
		return false, fmt.Errorf("recording %s event of email %s: %w", eventType, emailID, err)
	}
	return tag.RowsAffected() == 1, nil
}

// firstEvent is the event an email is stored with.
type firstEvent struct {
	Type string
	Data any
}

// emailSuppress drops e's suppressed recipients (see EmailInsert) and
// returns the event to store e with.
func (s *Store) emailSuppress(ctx context.Context, e *Email) (firstEvent, error) {
	hits, err := s.SuppressionCheck(ctx, e.AppID, recipientEmails(e.To, e.Cc, e.Bcc))
	if err != nil {
		return firstEvent{Type: "queued"}, err
	}
	return applySuppression(e, hits), nil
}

// applySuppression drops from e the recipients in hits (SuppressionCheck's
// answer for e's app, which may also hold other emails' addresses) and
// returns the event to store e with.
func applySuppression(e *Email, hits map[string]Suppressed) firstEvent {
	first := firstEvent{Type: "queued"}
	if len(hits) == 0 {
		return first
	}
	kept, dropped := SplitSuppressed(hits, e.To, e.Cc, e.Bcc)
	e.Suppressed = dropped
	if len(kept[0])+len(kept[1])+len(kept[2]) == 0 {
		// Kept whole, so the history shows whom it was for.
		e.Status = StatusCancelled
		return firstEvent{Type: "suppressed", Data: SuppressedData(dropped)}
	}
	e.To, e.Cc, e.Bcc = kept[0], kept[1], kept[2]
	if e.To == nil {
		e.To = []Address{} // to_addresses is NOT NULL; the email goes to cc/bcc only
	}
	return first
}

// SuppressedData is the data of a "suppressed" event for dropped recipients.
func SuppressedData(dropped []Suppressed) map[string]any {
	return map[string]any{"recipients": dropped}
}
