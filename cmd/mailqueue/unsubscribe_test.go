package main_test

import (
	"context"
	"net/http"
	netmail "net/mail"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mailqueue/mailqueue/bench/smtpsink"
	"github.com/mailqueue/mailqueue/oas"
)

// TestListUnsubscribeEndToEnd follows a one-click unsubscribe through the
// real binary: the worker puts the link in the message, the API honours it,
// and the next email to that address is not sent.
func TestListUnsubscribeEndToEnd(t *testing.T) {
	t.Parallel()
	sink := startSink(t, smtpsink.Options{})
	e := newEnv(t, sink.Addr())
	p := e.start("all")
	c := newApp(t, p.url)
	ctx := context.Background()

	q, err := c.CreateQueue(ctx, &oas.QueueCreate{
		Name: "newsletter", Settings: oas.NewOptQueueSettings(oas.QueueSettings{ListUnsubscribe: oas.NewOptBool(true)}),
	}, oas.CreateQueueParams{})
	if err != nil {
		t.Fatalf("creating queue: %v", err)
	}
	req := emailTo("reader@example.com", "News")
	req.Queue = oas.NewOptString(q.Name)
	a, err := c.CreateEmail(ctx, req, oas.CreateEmailParams{})
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, c, a.ID, oas.EmailStatusSent, 15*time.Second)
	msgs := sink.Messages()
	if len(msgs) != 1 {
		t.Fatalf("sink got %d messages, want 1", len(msgs))
	}
	m, err := netmail.ReadMessage(strings.NewReader(string(msgs[0].Data)))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get("List-Unsubscribe-Post"); got != "List-Unsubscribe=One-Click" {
		t.Errorf("List-Unsubscribe-Post = %q", got)
	}
	lu := m.Header.Get("List-Unsubscribe")
	start, end := strings.Index(lu, "<http"), strings.Index(lu, ">")
	if start != 0 || end < 0 || !strings.Contains(lu, "<mailto:unsubscribe+") {
		t.Fatalf("List-Unsubscribe = %q, want an https and a mailto link", lu)
	}
	link, err := url.Parse(lu[1:end])
	if err != nil || !strings.HasPrefix(link.Path, "/u/") {
		t.Fatalf("List-Unsubscribe link %q: %v", lu[1:end], err)
	}

	// What a mail client does for one-click (RFC 8058), against this server.
	resp, err := http.Post(p.url+link.Path, "application/x-www-form-urlencoded", strings.NewReader("List-Unsubscribe=One-Click"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("one-click POST answered %d", resp.StatusCode)
	}

	list, err := c.ListSuppressions(ctx, oas.ListSuppressionsParams{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Data) != 1 || list.Data[0].Email != "reader@example.com" || list.Data[0].Reason != oas.SuppressionReasonUnsubscribe {
		t.Errorf("suppression list = %+v", list.Data)
	}
	again, err := c.CreateEmail(ctx, req, oas.CreateEmailParams{})
	if err != nil {
		t.Fatal(err)
	}
	if again.Status != oas.EmailStatusCancelled || len(again.Recipients) != 1 ||
		again.Recipients[0].Result != oas.RecipientResultResultSuppressed {
		t.Errorf("email after unsubscribing = %+v", again)
	}
}
