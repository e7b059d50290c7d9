package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Outcomes reported after an email left: the one place that records a
// bounce, a complaint or an unsubscribe, with its event, its status change
// and its suppression entry in one transaction. The sandbox simulator calls
// these today; the inbound DSN/ARF parser and the tracking endpoints call
// the same functions, so simulated and real outcomes cannot drift apart.

// Bounce types.
const (
	BounceHard = "hard"
	BounceSoft = "soft"
)

// SoftBounceSuppression is how long a soft bounce reported after sending
// (a DSN giving up on a temporary failure, e.g. a full mailbox) keeps the
// address suppressed: long enough not to hammer a mailbox that cannot take
// mail, short enough that it recovers on its own.
const SoftBounceSuppression = 24 * time.Hour

// Outcome is what happened to one recipient of an email, as recorded.
type Outcome struct {
	AppID     uuid.UUID
	EmailID   uuid.UUID
	Recipient string
	// Event is the email event recorded: bounced, deferred, complained or
	// unsubscribed.
	Event string
	Data  map[string]any
	At    time.Time
}

// notifyOutcome is the webhook seam: it runs inside the transaction that
// records an outcome, so a webhook delivery enqueued here commits (or not)
// with the outcome itself. Webhooks are not built yet; when they are, this
// is where their delivery job is inserted.
func (s *Store) notifyOutcome(context.Context, *Outcome) error { return nil }

// BounceParams report that a recipient's mail bounced.
type BounceParams struct {
	AppID     uuid.UUID
	EmailID   uuid.UUID
	Recipient string
	// Type is BounceHard (the address does not exist: suppressed for good)
	// or BounceSoft (a temporary failure that was given up on: suppressed
	// for SoftBounceSuppression).
	Type         string
	SMTPCode     int
	EnhancedCode string
	Message      string
	// Extra is merged into the event's data (e.g. sandbox: true).
	Extra map[string]any
	At    time.Time
}

// RecordBounce records a bounce. A hard bounce moves the email to
// "bounced" with a "bounced" event; a soft one records a "deferred" event
// and leaves the status alone (the email did leave). Either way the
// recipient goes on the app's suppression list, citing the email.
func (s *Store) RecordBounce(ctx context.Context, p *BounceParams) error {
	at := orNow(p.At)
	data := map[string]any{
		"recipient": p.Recipient, "bounce_type": p.Type, "smtp_code": p.SMTPCode,
		"enhanced_code": p.EnhancedCode, "message": p.Message,
	}
	for k, v := range p.Extra {
		data[k] = v
	}
	o := &Outcome{AppID: p.AppID, EmailID: p.EmailID, Recipient: p.Recipient, Data: data, At: at}
	sup := &SuppressionRecordParams{
		AppID: p.AppID, Email: p.Recipient, Reason: ReasonHardBounce, SourceEmailID: &p.EmailID, At: at,
	}
	return s.Tx(ctx, func(tx *Store) error {
		var err error
		switch p.Type {
		case BounceHard:
			o.Event = "bounced"
			_, err = tx.EmailTransition(ctx, &EmailTransitionParams{
				ID: p.EmailID, Status: StatusBounced, Event: o.Event, Data: data, At: at,
				From: []string{StatusProcessing, StatusSent, StatusDelivered, StatusUncertain, StatusBounced},
			})
		case BounceSoft:
			o.Event = "deferred"
			until := at.Add(SoftBounceSuppression)
			sup.Reason, sup.ExpiresAt = ReasonSoftBounce, &until
			_, err = tx.EventInsertForApp(ctx, p.AppID, p.EmailID, o.Event, data, at)
		default:
			return fmt.Errorf("recording bounce of email %s: unknown bounce type %q", p.EmailID, p.Type)
		}
		if err != nil {
			return err
		}
		if _, err := tx.SuppressionRecord(ctx, sup); err != nil {
			return err
		}
		return tx.notifyOutcome(ctx, o)
	})
}

// ComplaintParams report that a recipient marked an email as spam.
type ComplaintParams struct {
	AppID     uuid.UUID
	EmailID   uuid.UUID
	Recipient string
	// FeedbackType is the ARF feedback type ("abuse" when unknown).
	FeedbackType string
	Extra        map[string]any
	At           time.Time
}

// RecordComplaint records a "complained" event (the status stays: the
// email was delivered) and suppresses the recipient for the app for good.
func (s *Store) RecordComplaint(ctx context.Context, p *ComplaintParams) error {
	at := orNow(p.At)
	ft := p.FeedbackType
	if ft == "" {
		ft = "abuse"
	}
	data := map[string]any{"recipient": p.Recipient, "feedback_type": ft}
	for k, v := range p.Extra {
		data[k] = v
	}
	o := &Outcome{AppID: p.AppID, EmailID: p.EmailID, Recipient: p.Recipient, Event: "complained", Data: data, At: at}
	return s.Tx(ctx, func(tx *Store) error {
		if _, err := tx.EventInsertForApp(ctx, p.AppID, p.EmailID, o.Event, data, at); err != nil {
			return err
		}
		_, err := tx.SuppressionRecord(ctx, &SuppressionRecordParams{
			AppID: p.AppID, Email: p.Recipient, Reason: ReasonComplaint, SourceEmailID: &p.EmailID, At: at,
		})
		if err != nil {
			return err
		}
		return tx.notifyOutcome(ctx, o)
	})
}

// UnsubscribeParams report that a recipient unsubscribed from an email.
type UnsubscribeParams struct {
	AppID     uuid.UUID
	EmailID   uuid.UUID
	Recipient string
	// Method is how: "one_click" (RFC 8058 POST), "page" or "mailto".
	Method string
	At     time.Time
}

// RecordUnsubscribe suppresses the recipient for the app (reason
// unsubscribe) and records an "unsubscribed" event. It is idempotent: when
// the address is already suppressed for good, nothing is written, and it
// reports false.
func (s *Store) RecordUnsubscribe(ctx context.Context, p *UnsubscribeParams) (bool, error) {
	at := orNow(p.At)
	data := map[string]any{"recipient": p.Recipient, "method": p.Method}
	o := &Outcome{AppID: p.AppID, EmailID: p.EmailID, Recipient: p.Recipient, Event: "unsubscribed", Data: data, At: at}
	var wrote bool
	err := s.Tx(ctx, func(tx *Store) error {
		var err error
		wrote, err = tx.SuppressionRecord(ctx, &SuppressionRecordParams{
			AppID: p.AppID, Email: p.Recipient, Reason: ReasonUnsubscribe, SourceEmailID: &p.EmailID, At: at,
		})
		if err != nil || !wrote {
			return err
		}
		// The email may be gone (retention); the suppression stands anyway.
		if _, err := tx.EventInsertForApp(ctx, p.AppID, p.EmailID, o.Event, data, at); err != nil {
			return err
		}
		return tx.notifyOutcome(ctx, o)
	})
	return wrote, err
}

func orNow(t time.Time) time.Time {
	if t.IsZero() {
		return time.Now().UTC()
	}
	return t
}
