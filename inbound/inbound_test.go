package inbound_test

import (
	"context"
	"errors"
	"net/smtp"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailqueue/mailqueue/inbound"
	"github.com/mailqueue/mailqueue/testenv"
)

const dsn = "From: MAILER-DAEMON@mx.example.net\r\n" +
	"To: bounces@mq.example.com\r\n" +
	"Subject: Delivery Status Notification (Failure)\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n" +
	"\r\n" +
	"--b1\r\n" +
	"Content-Type: text/plain\r\n" +
	"\r\n" +
	"Your message could not be delivered.\r\n" +
	"--b1\r\n" +
	"Content-Type: message/delivery-status\r\n" +
	"\r\n" +
	"Reporting-MTA: dns; mx.example.net\r\n" +
	"\r\n" +
	"Final-Recipient: rfc822; nobody@example.org\r\n" +
	"Action: failed\r\n" +
	"Status: 5.1.1\r\n" +
	"--b1--\r\n"

// recorder is a Handler keeping what it got and answering with err.
type recorder struct {
	mu  sync.Mutex
	got []*inbound.Message
	err error
}

func (r *recorder) HandleInbound(ctx context.Context, m *inbound.Message) error {
	if _, ok := ctx.Deadline(); !ok {
		return errors.New("handler context has no deadline")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, m)
	return r.err
}

func (r *recorder) messages() []*inbound.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*inbound.Message(nil), r.got...)
}

// stopWithin calls Stop and fails the test if it does not return in time,
// instead of hanging the test binary.
func stopWithin(t *testing.T, s *inbound.Server, d time.Duration) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Stop(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Stop: %v", err)
		}
		return true
	case <-time.After(d + time.Second):
		t.Errorf("Stop(ctx with a %s deadline) did not return within %s", d, d+time.Second)
		return false
	}
}

// start starts a server on a free port and waits until it answers, so the
// test does not depend on how fast Serve gets going.
func start(t *testing.T, h inbound.Handler) *inbound.Server {
	t.Helper()
	s := inbound.New("127.0.0.1:0", h, testenv.Logger(t))
	if err := s.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { stopWithin(t, s, 5*time.Second) })
	c, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatalf("dialling the inbound server: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatalf("QUIT: %v", err)
	}
	return s
}

func TestInboundHandsMessageToHandler(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	s := start(t, rec)

	err := smtp.SendMail(s.Addr(), nil, "", []string{"bounces@mq.example.com", "fbl@mq.example.com"}, []byte(dsn))
	if err != nil {
		t.Fatalf("SendMail: %v", err)
	}
	got := rec.messages()
	if len(got) != 1 {
		t.Fatalf("handler got %d messages, want 1", len(got))
	}
	m := got[0]
	// DSNs come with the null reverse path.
	if m.From != "" {
		t.Errorf("From = %q, want the null sender", m.From)
	}
	if len(m.To) != 2 || m.To[0] != "bounces@mq.example.com" || m.To[1] != "fbl@mq.example.com" {
		t.Errorf("To = %v", m.To)
	}
	if string(m.Data) != dsn {
		t.Errorf("Data differs from what was sent:\n%q\nwant\n%q", m.Data, dsn)
	}
	if !strings.HasPrefix(m.RemoteAddr, "127.0.0.1:") {
		t.Errorf("RemoteAddr = %q", m.RemoteAddr)
	}
	if time.Since(m.Received) > time.Minute || m.Received.IsZero() {
		t.Errorf("Received = %s", m.Received)
	}
}

// Two messages on one session must not share recipients.
func TestInboundSessionResetsBetweenMessages(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	s := start(t, rec)

	c, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i, rcpt := range []string{"one@mq.example.com", "two@mq.example.com"} {
		if err := c.Mail("sender" + string(rune('a'+i)) + "@example.net"); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt(rcpt); err != nil {
			t.Fatal(err)
		}
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte("Subject: n\r\n\r\nbody\r\n")); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	got := rec.messages()
	if len(got) != 2 {
		t.Fatalf("handler got %d messages, want 2", len(got))
	}
	if got[0].From != "sendera@example.net" || len(got[0].To) != 1 || got[0].To[0] != "one@mq.example.com" {
		t.Errorf("first message from %q to %v", got[0].From, got[0].To)
	}
	if got[1].From != "senderb@example.net" || len(got[1].To) != 1 || got[1].To[0] != "two@mq.example.com" {
		t.Errorf("second message from %q to %v, want only its own recipient", got[1].From, got[1].To)
	}
}

func TestInboundHandlerErrorIsTemporary(t *testing.T) {
	t.Parallel()
	rec := &recorder{err: errors.New("database down")}
	s := start(t, rec)

	err := smtp.SendMail(s.Addr(), nil, "mailer@example.net", []string{"bounces@mq.example.com"}, []byte(dsn))
	var tpErr *textproto.Error
	if !errors.As(err, &tpErr) || tpErr.Code != 451 {
		t.Fatalf("SendMail error %v, want a 451 reply", err)
	}
	if len(rec.messages()) != 1 {
		t.Errorf("handler called %d times, want 1", len(rec.messages()))
	}
}

func TestInboundStopReturns(t *testing.T) {
	t.Parallel()
	noop := inbound.HandlerFunc(func(context.Context, *inbound.Message) error { return nil })

	t.Run("while serving", func(t *testing.T) {
		t.Parallel()
		s := inbound.New("127.0.0.1:0", noop, testenv.Logger(t))
		if err := s.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		addr := s.Addr()
		c, err := smtp.Dial(addr)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Quit(); err != nil {
			t.Fatal(err)
		}
		if !stopWithin(t, s, 5*time.Second) {
			return
		}
		if c, err := smtp.Dial(addr); err == nil {
			_ = c.Close()
			t.Error("server still accepts connections after Stop")
		}
	})

	// Stop right after Start (a failed start-up of another part of the
	// process, or a signal during start-up) must return too.
	t.Run("right after Start", func(t *testing.T) {
		t.Parallel()
		for i := range 50 {
			s := inbound.New("127.0.0.1:0", noop, testenv.Logger(t))
			if err := s.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			if !stopWithin(t, s, time.Second) {
				t.Errorf("run %d: Stop hung although nothing was connected", i)
				return
			}
		}
	})
}

func TestInboundStartFailsOnBusyAddress(t *testing.T) {
	t.Parallel()
	first := start(t, &recorder{})
	second := inbound.New(first.Addr(), &recorder{}, testenv.Logger(t))
	if err := second.Start(t.Context()); err == nil {
		t.Error("Start on an address in use succeeded")
	}
}
