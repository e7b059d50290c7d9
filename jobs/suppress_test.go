package jobs_test

import (
	"crypto/rand"
	netmail "net/mail"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/jobs"
	"github.com/mailqueue/mailqueue/mail"
	"github.com/mailqueue/mailqueue/store"
)

func (h *harness) suppress(t *testing.T, email, reason string) {
	t.Helper()
	_, err := h.st.SuppressionInsert(t.Context(), &store.SuppressionInsertParams{
		AppID: &h.app.ID, Entries: []store.SuppressionEntry{{Email: email, Reason: reason}},
	})
	if err != nil {
		t.Fatalf("SuppressionInsert: %v", err)
	}
}

// suppressionRows returns reason and source email of the app's entry for email, if any.
func (h *harness) suppressionRow(t *testing.T, email string) (reason string, source *uuid.UUID, expires *time.Time, ok bool) {
	t.Helper()
	err := h.pool.QueryRow(t.Context(), `SELECT reason::text, source_email_id, expires_at FROM suppression_list WHERE app_id = $1 AND email_address = $2`,
		h.app.ID, email).Scan(&reason, &source, &expires)
	if err != nil {
		return "", nil, nil, false
	}
	return reason, source, expires, true
}

// An address suppressed after the email was accepted is dropped just
// before sending; the rest still get it.
func TestSendDropsRecipientsSuppressedSinceAccept(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	p := h.params("keep@example.com")
	p.Cc = []store.Address{{Email: "Gone@Example.com"}}
	at := time.Now().Add(1500 * time.Millisecond)
	p.ScheduledAt = &at
	e := h.insert(t, p)
	h.suppress(t, "gone@example.com", store.ReasonUnsubscribe)

	got := h.waitStatus(t, e.ID, store.StatusSent)
	if len(got.Cc) != 0 || len(got.To) != 1 || got.To[0].Email != "keep@example.com" {
		t.Errorf("stored recipients to %v cc %v, want to [keep@example.com] and no cc", got.To, got.Cc)
	}
	evs := h.events(t, e.ID)
	if types := eventTypes(evs); !slices.Equal(types, []string{"queued", "suppressed", "sent"}) {
		t.Errorf("events = %v", types)
	}
	d := eventData(t, lastEvent(t, evs, "suppressed"))
	rs, _ := d["recipients"].([]any)
	if len(rs) != 1 || rs[0].(map[string]any)["email"] != "Gone@Example.com" || rs[0].(map[string]any)["reason"] != "unsubscribe" {
		t.Errorf("suppressed event data = %v", d)
	}
	msgs := h.sink.Messages()
	if len(msgs) != 1 || !slices.Equal(msgs[0].To, []string{"keep@example.com"}) {
		t.Fatalf("sink got %d messages (%v), want one to keep@example.com only", len(msgs), msgs)
	}
	if strings.Contains(strings.ToLower(string(msgs[0].Data)), "gone@example.com") {
		t.Error("the suppressed address is still in the message headers")
	}
}

// With every recipient suppressed since accept, the email is cancelled
// and nothing is sent. The non-ASCII case: the list holds the address
// lower-cased by Go, which a C-locale SQL lower() does not match, so the
// worker must still find it.
func TestSendCancelsEmailWhoseRecipientsAreAllSuppressed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ rcpt, listed string }{
		{"only@example.com", "only@example.com"},
		{"ÉLODIE@example.com", "élodie@example.com"},
	} {
		t.Run(tc.rcpt, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, harnessOptions{})
			p := h.params(tc.rcpt)
			at := time.Now().Add(time.Second)
			p.ScheduledAt = &at
			e := h.insert(t, p)
			h.suppress(t, tc.listed, store.ReasonManual)

			h.waitStatus(t, e.ID, store.StatusCancelled)
			if types := eventTypes(h.events(t, e.ID)); !slices.Equal(types, []string{"queued", "suppressed"}) {
				t.Errorf("events = %v, want [queued suppressed]", types)
			}
			if n := len(h.sink.Messages()); n != 0 {
				t.Errorf("sink got %d messages, want 0", n)
			}
		})
	}
}

// Accept-time: EmailInsert drops suppressed recipients, and stores an
// email with none left as cancelled, without a job.
func TestEmailInsertDropsSuppressedRecipients(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	h.suppress(t, "blocked@example.com", store.ReasonHardBounce)
	// An expired entry does not suppress.
	if _, err := h.pool.Exec(t.Context(), `INSERT INTO suppression_list (id, app_id, email_address, reason, expires_at)
		VALUES ($1, $2, 'expired@example.com', 'soft_bounce', now() - interval '1 minute')`, uuid.Must(uuid.NewV7()), h.app.ID); err != nil {
		t.Fatal(err)
	}

	p := h.params("BLOCKED@example.com")
	p.Bcc = []store.Address{{Email: "expired@example.com"}}
	e := h.insert(t, p)
	if len(e.Suppressed) != 1 || e.Suppressed[0].Email != "BLOCKED@example.com" || e.Suppressed[0].Reason != store.ReasonHardBounce {
		t.Errorf("Suppressed = %+v", e.Suppressed)
	}
	got := h.waitStatus(t, e.ID, store.StatusSent)
	if len(got.To) != 0 || len(got.Bcc) != 1 {
		t.Errorf("stored to %v bcc %v, want only the bcc", got.To, got.Bcc)
	}

	all, err := h.st.EmailInsert(t.Context(), h.params("blocked@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	if all.Status != store.StatusCancelled || all.JobID != nil {
		t.Errorf("all suppressed: status %s job %v, want cancelled and no job", all.Status, all.JobID)
	}
	stored, err := h.st.EmailGet(t.Context(), h.app.ID, all.ID)
	if err != nil {
		t.Fatal(err)
	}
	if stored.Status != store.StatusCancelled || len(stored.To) != 1 {
		t.Errorf("stored status %s to %v, want cancelled with its recipient kept", stored.Status, stored.To)
	}
	if types := eventTypes(h.events(t, all.ID)); !slices.Equal(types, []string{"suppressed"}) {
		t.Errorf("events = %v, want [suppressed]", types)
	}
}

func TestSandboxSimulator(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	sandbox := func(rcpt string) *store.Email {
		p := h.params(rcpt)
		p.Sandbox = true
		return h.insert(t, p)
	}
	plain := sandbox("someone@example.com")
	hard := sandbox("bounce@" + jobs.SimulatorDomain)
	soft := sandbox("softbounce@" + jobs.SimulatorDomain)
	complaint := sandbox("complaint@" + jobs.SimulatorDomain)

	t.Run("delivered", func(t *testing.T) {
		got := h.waitStatus(t, plain.ID, store.StatusDelivered)
		if got.DeliveredAt == nil || got.SentAt == nil {
			t.Errorf("sent_at %v delivered_at %v, want both", got.SentAt, got.DeliveredAt)
		}
		if types := eventTypes(h.events(t, plain.ID)); !slices.Equal(types, []string{"queued", "sent", "delivered"}) {
			t.Errorf("events = %v", types)
		}
	})
	t.Run("hard bounce", func(t *testing.T) {
		h.waitStatus(t, hard.ID, store.StatusBounced)
		evs := h.events(t, hard.ID)
		if types := eventTypes(evs); !slices.Equal(types, []string{"queued", "sent", "bounced"}) {
			t.Errorf("events = %v", types)
		}
		d := eventData(t, lastEvent(t, evs, "bounced"))
		if d["bounce_type"] != "hard" || d["smtp_code"] != float64(550) || d["enhanced_code"] != "5.1.1" || d["sandbox"] != true {
			t.Errorf("bounced event data = %v", d)
		}
		reason, src, exp, ok := h.suppressionRow(t, "bounce@"+jobs.SimulatorDomain)
		if !ok || reason != store.ReasonHardBounce || src == nil || *src != hard.ID || exp != nil {
			t.Errorf("suppression = %v %v %v %v, want permanent hard_bounce from %s", ok, reason, src, exp, hard.ID)
		}
	})
	t.Run("soft bounce", func(t *testing.T) {
		h.waitStatus(t, soft.ID, store.StatusDelivered)
		evs := h.events(t, soft.ID)
		want := []string{"queued", "deferred", "sent", "delivered"}
		if types := eventTypes(evs); !slices.Equal(types, want) {
			t.Errorf("events = %v, want %v", types, want)
		}
		if d := eventData(t, lastEvent(t, evs, "deferred")); d["bounce_type"] != "soft" || d["smtp_code"] != float64(452) {
			t.Errorf("deferred event data = %v", d)
		}
		if _, _, _, ok := h.suppressionRow(t, "softbounce@"+jobs.SimulatorDomain); ok {
			t.Error("a soft bounce that was retried and delivered left a suppression entry")
		}
	})
	t.Run("complaint", func(t *testing.T) {
		h.waitEmail(t, complaint.ID, "complained", func(e *store.Email) bool {
			return e.Status == store.StatusDelivered && slices.Contains(eventTypes(h.events(t, e.ID)), "complained")
		})
		evs := h.events(t, complaint.ID)
		if types := eventTypes(evs); !slices.Equal(types, []string{"queued", "sent", "delivered", "complained"}) {
			t.Errorf("events = %v", types)
		}
		reason, src, _, ok := h.suppressionRow(t, "complaint@"+jobs.SimulatorDomain)
		if !ok || reason != store.ReasonComplaint || src == nil || *src != complaint.ID {
			t.Errorf("suppression = %v %v %v, want complaint from %s", ok, reason, src, complaint.ID)
		}
	})
	// The suppression a simulated bounce made applies to the next email.
	t.Run("next email suppressed", func(t *testing.T) {
		p := h.params("bounce@" + jobs.SimulatorDomain)
		p.Sandbox = true
		again, err := h.st.EmailInsert(t.Context(), p)
		if err != nil {
			t.Fatal(err)
		}
		if again.Status != store.StatusCancelled {
			t.Errorf("status = %s, want cancelled", again.Status)
		}
	})
	if n := len(h.sink.Messages()); n != 0 {
		t.Errorf("sandbox emails reached SMTP: %d messages", n)
	}
}

func TestListUnsubscribeHeaders(t *testing.T) {
	t.Parallel()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	u := mail.NewUnsubscribe("https://mq.example.com/", "in.example.com", key)
	h := newHarness(t, harnessOptions{settings: store.QueueSettings{ListUnsubscribe: true}, unsubscribe: u})

	one := h.insert(t, h.params("Reader@example.com"))
	p := h.params("a@example.com")
	p.Cc = []store.Address{{Email: "b@example.com"}}
	two := h.insert(t, p)
	h.waitStatus(t, one.ID, store.StatusSent)
	h.waitStatus(t, two.ID, store.StatusSent)

	headers := map[string]netmail.Header{}
	for _, m := range h.sink.Messages() {
		parsed, err := netmail.ReadMessage(strings.NewReader(string(m.Data)))
		if err != nil {
			t.Fatal(err)
		}
		headers[m.To[0]] = parsed.Header
	}
	hdr := headers["Reader@example.com"]
	if hdr == nil {
		t.Fatalf("no message to Reader@example.com among %v", headers)
	}
	if got := hdr.Get("List-Unsubscribe-Post"); got != "List-Unsubscribe=One-Click" {
		t.Errorf("List-Unsubscribe-Post = %q", got)
	}
	lu := hdr.Get("List-Unsubscribe")
	token := u.Token(one.ID, "reader@example.com")
	want := "<https://mq.example.com/u/" + token + ">, <mailto:unsubscribe+" + token + "@in.example.com>"
	if lu != want {
		t.Errorf("List-Unsubscribe = %q, want %q", lu, want)
	}
	if !u.Verify(token, "Reader@example.com") || u.Verify(token, "other@example.com") {
		t.Error("token does not verify for its recipient only")
	}
	if len("unsubscribe+"+token) > 64 {
		t.Errorf("mailto local part is %d characters, over RFC 5321's 64", len("unsubscribe+"+token))
	}
	// One header cannot name several recipients: none is added.
	if hdr := headers["a@example.com"]; hdr == nil || hdr.Get("List-Unsubscribe") != "" {
		t.Errorf("message to two recipients: List-Unsubscribe %q", hdr.Get("List-Unsubscribe"))
	}
}
