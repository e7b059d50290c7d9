package mail_test

import (
	"net"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/mailqueue/mailqueue/bench/smtpsink"
	"github.com/mailqueue/mailqueue/mail"
	"github.com/mailqueue/mailqueue/testenv"
)

func messageTo(rcpts ...string) *mail.Message {
	m := testMessage(rcpts[0])
	for _, r := range rcpts[1:] {
		m.To = append(m.To, mail.Address{Email: r})
	}
	return m
}

// go-smtp offers PIPELINING and CHUNKING: a message to several recipients
// sends its envelope in one write and its body only once every recipient
// is accepted, so one refusal delivers to no one, and the session is kept.
func TestPipelinedRecipientsAllOrNothing(t *testing.T) {
	t.Parallel()
	sink := testenv.SMTPSink(t, smtpsink.Options{Record: true})
	pool := newPool(t, serverFor(sink, 1))

	if err := pool.Send(t.Context(), messageTo("a@example.org", "b@example.org")); err != nil {
		t.Fatal(err)
	}
	msgs := sink.Messages()
	if len(msgs) != 1 || !slices.Equal(msgs[0].To, []string{"a@example.org", "b@example.org"}) {
		t.Fatalf("sink has %d messages (%v), want one to both recipients", len(msgs), msgs)
	}

	tests := []struct {
		rcpts     []string
		permanent bool
		code      int
	}{
		{rcpts: []string{"a@example.org", "permfail@example.org"}, permanent: true, code: 550},
		{rcpts: []string{"tempfail@example.org", "b@example.org"}, code: 451},
		// The worst reply wins: retrying cannot fix a 5xx.
		{rcpts: []string{"tempfail@example.org", "permfail@example.org"}, permanent: true, code: 550},
	}
	for _, tt := range tests {
		se := asSendError(t, pool.Send(t.Context(), messageTo(tt.rcpts...)))
		if se.Stage != mail.StageRcpt || se.Permanent != tt.permanent || se.Code != tt.code || se.Uncertain {
			t.Errorf("%v: got %+v, want rcpt stage, code %d, permanent %v", tt.rcpts, se, tt.code, tt.permanent)
		}
	}
	if n := len(sink.Messages()); n != 1 {
		t.Fatalf("sink accepted %d messages, want only the first: a refused recipient must stop the body", n)
	}

	// A drop after the body, with several recipients, is uncertain.
	se := asSendError(t, pool.Send(t.Context(), messageTo("a@example.org", "drop@example.org")))
	if se.Stage != mail.StageDataSent || !se.Uncertain {
		t.Fatalf("drop: got %+v, want uncertain data_sent", se)
	}
	if err := pool.Send(t.Context(), messageTo("c@example.org")); err != nil {
		t.Fatal(err)
	}
	// The refusals kept the session; only the drop cost a new one.
	if d := pool.Stats().Dials; d != 2 {
		t.Fatalf("dials = %d, want 2", d)
	}
}

// Mailpit offers neither PIPELINING nor CHUNKING: the classic exchange,
// one command per round trip and the body dot-stuffed after DATA.
func TestSendWithoutPipelining(t *testing.T) {
	t.Parallel()
	addr := os.Getenv("MQ_TEST_MAILPIT_SMTP")
	if addr == "" {
		addr = "127.0.0.1:1025"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p, err := net.LookupPort("tcp", port)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err != nil {
		t.Fatalf("Mailpit is not running at %s (start it with `make up`): %v", addr, err)
	} else {
		_ = c.Close()
	}
	pool := newPool(t, mail.Server{Host: host, Port: p, TLS: mail.TLSNone, PoolSize: 1, Timeout: 5 * time.Second, HeloName: "test.local"})
	for _, m := range []*mail.Message{messageTo("one@example.org"), messageTo("a@example.org", "b@example.org")} {
		if err := pool.Send(t.Context(), m); err != nil {
			t.Fatalf("send to Mailpit: %v", err)
		}
	}
	if d := pool.Stats().Dials; d != 1 {
		t.Fatalf("dials = %d, want 1", d)
	}
}
