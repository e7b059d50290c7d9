package jobs

import (
	"context"
	"unicode/utf8"

	"github.com/mailqueue/mailqueue/mail"
	"github.com/mailqueue/mailqueue/store"
)

// dropSuppressed checks the email's recipients against the suppression
// lists once more just before sending: an address may have bounced,
// complained or unsubscribed since the email was accepted. Newly suppressed
// recipients are dropped from the email (event "suppressed"); if none
// remain, the email is cancelled. It reports whether the email is done.
func (w *SendWorker) dropSuppressed(ctx context.Context, e *store.EmailForSend) (bool, error) {
	var emails []string
	ascii := true
	for _, l := range [][]store.Address{e.To, e.Cc, e.Bcc} {
		for _, a := range l {
			emails = append(emails, a.Email)
			ascii = ascii && isASCII(a.Email)
		}
	}
	// The read's hint lower-cases in SQL, which under a C locale leaves
	// non-ASCII letters alone; such addresses are always checked here, the
	// way the list stores them (store.NormalizeAddress).
	if !e.AnySuppressed && ascii {
		return false, nil // the read found none: the common case costs no query
	}
	hits, err := w.Store.SuppressionCheck(ctx, e.AppID, emails)
	if err != nil || len(hits) == 0 {
		return false, err
	}
	kept, dropped := store.SplitSuppressed(hits, e.To, e.Cc, e.Bcc)
	data := store.SuppressedData(dropped)
	now := w.now()
	if len(kept[0])+len(kept[1])+len(kept[2]) == 0 {
		_, err := w.transition(ctx, &store.EmailTransitionParams{
			ID: e.ID, From: []string{store.StatusQueued, store.StatusProcessing}, Status: store.StatusCancelled,
			Event: "suppressed", Data: data, At: now,
		})
		return true, err
	}
	changed, err := w.Store.EmailSetRecipients(ctx, e.ID, kept[0], kept[1], kept[2], "suppressed", data, now)
	if err != nil || !changed {
		return !changed, err // not changed: cancelled or taken meanwhile
	}
	e.To, e.Cc, e.Bcc = kept[0], kept[1], kept[2]
	return false, nil
}

// listUnsubscribe adds the List-Unsubscribe headers to the message of an
// email whose queue asks for them. The link names one recipient, so a
// message to several people gets none: one of them must not be able to
// unsubscribe another.
func (w *SendWorker) listUnsubscribe(e *store.EmailForSend, m *mail.Message) {
	if !e.QueueSettings.ListUnsubscribe || w.Unsubscribe == nil {
		return
	}
	if len(m.To)+len(m.Cc)+len(m.Bcc) != 1 {
		w.Logger.Debug("no List-Unsubscribe for an email to several recipients", "email_id", e.ID)
		return
	}
	rcpt := append(append(append([]mail.Address{}, m.To...), m.Cc...), m.Bcc...)[0]
	w.Unsubscribe.Headers(m, e.ID, rcpt.Email)
}

func isASCII(s string) bool {
	for i := range len(s) {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
