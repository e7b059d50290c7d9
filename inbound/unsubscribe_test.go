package inbound_test

import (
	"crypto/rand"
	"net/smtp"
	"testing"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/mailqueue/mailqueue/inbound"
	"github.com/mailqueue/mailqueue/jobs"
	"github.com/mailqueue/mailqueue/mail"
	"github.com/mailqueue/mailqueue/store"
	"github.com/mailqueue/mailqueue/testenv"
)

func TestUnsubscribeByMail(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := testenv.DB(t)
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: testenv.Logger(t), TestOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(pool, jobs.NewEnqueuer(rc))
	app, err := st.AppInsert(ctx, &store.AppInsertParams{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	q, err := st.QueueInsert(ctx, &store.QueueInsertParams{AppID: app.ID, Name: "default", Priority: 5, MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	text := "hi"
	e, err := st.EmailInsert(ctx, &store.EmailInsertParams{
		AppID: app.ID, Queue: q, MessageIDDomain: "example.com", From: store.Address{Email: "s@example.com"},
		To: []store.Address{{Email: "Reader@example.com"}}, Subject: "s", Text: &text, Priority: 5,
	})
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	u := mail.NewUnsubscribe("https://mq.example.com", "in.example.com", key)
	rec := &recorder{}
	s := start(t, inbound.Unsubscribes(st, u, testenv.Logger(t), rec))

	token := u.Token(e.ID, "reader@example.com")
	forged := u.Token(e.ID, "someone-else@example.com")
	body := []byte("From: reader@example.com\r\nSubject: unsubscribe\r\n\r\nplease\r\n")
	for _, rcpts := range [][]string{
		{"unsubscribe+" + forged + "@in.example.com"},
		{"unsubscribe+" + token + "@in.example.com"},
		{"UNSUBSCRIBE+" + token + "@in.example.com"}, // again, and upper-cased by some relay
	} {
		if err := smtp.SendMail(s.Addr(), nil, "reader@example.com", rcpts, body); err != nil {
			t.Fatalf("SendMail to %v: %v", rcpts, err)
		}
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM suppression_list WHERE app_id = $1 AND email_address = 'reader@example.com' AND reason = 'unsubscribe'`, app.ID).Scan(&n); err != nil || n != 1 {
		t.Errorf("unsubscribe entries = %d (%v), want 1", n, err)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM email_events WHERE email_id = $1 AND event_type = 'unsubscribed' AND event_data->>'method' = 'mailto'`, e.ID).Scan(&n); err != nil || n != 1 {
		t.Errorf("unsubscribed events = %d (%v), want 1", n, err)
	}
	if got := rec.messages(); len(got) != 0 {
		t.Errorf("unsubscribe mail reached the next handler: %d messages", len(got))
	}
	// Anything else still goes on.
	if err := smtp.SendMail(s.Addr(), nil, "", []string{"bounces@in.example.com"}, []byte(dsn)); err != nil {
		t.Fatal(err)
	}
	if got := rec.messages(); len(got) != 1 {
		t.Errorf("next handler got %d messages, want the DSN", len(got))
	}
}
