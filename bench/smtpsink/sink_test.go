package smtpsink_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"testing"
	"time"

	"github.com/wneessen/go-mail/smtp"

	"github.com/mailqueue/mailqueue/bench/smtpsink"
)

func start(t *testing.T, opts smtpsink.Options) *smtpsink.Sink {
	t.Helper()
	s := smtpsink.New(opts)
	if err := s.Start(t.Context()); err != nil {
		t.Fatalf("starting sink: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Stop(ctx)
	})
	return s
}

func connect(t *testing.T, s *smtpsink.Sink) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatalf("dialling sink: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Hello("client.test"); err != nil {
		t.Fatalf("EHLO: %v", err)
	}
	return c
}

// send runs one transaction, returning the first error.
func send(c *smtp.Client, from, to, body string) error {
	if err := c.Mail(from); err != nil {
		return err
	}
	if err := c.Rcpt(to); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := fmt.Fprint(w, body); err != nil {
		return err
	}
	return w.Close()
}

func replyCode(err error) int {
	var tp *textproto.Error
	if errors.As(err, &tp) {
		return tp.Code
	}
	return 0
}

func TestRecordsMessages(t *testing.T) {
	t.Parallel()
	s := start(t, smtpsink.Options{Record: true})
	c := connect(t, s)
	for _, ext := range []string{"PIPELINING", "8BITMIME", "SMTPUTF8", "SIZE", "AUTH"} {
		if ok, _ := c.Extension(ext); !ok {
			t.Errorf("extension %s not advertised", ext)
		}
	}
	body := "Subject: hi\r\n\r\nhello\r\n"
	if err := send(c, "a@example.org", "b@example.org", body); err != nil {
		t.Fatalf("send: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if err := s.WaitForMessages(ctx, 1); err != nil {
		t.Fatal(err)
	}
	msgs := s.Messages()
	if len(msgs) != 1 || msgs[0].From != "a@example.org" || len(msgs[0].To) != 1 ||
		msgs[0].To[0] != "b@example.org" || string(msgs[0].Data) != body {
		t.Fatalf("recorded %+v", msgs)
	}
	msgs[0].Data[0] = 'X'
	if s.Messages()[0].Data[0] != 'S' {
		t.Fatal("Messages must return copies")
	}
}

func TestDeterministicTriggers(t *testing.T) {
	t.Parallel()
	s := start(t, smtpsink.Options{})
	c := connect(t, s)

	if err := send(c, "a@example.org", "tempfail@example.org", "x\r\n"); replyCode(err) != 451 {
		t.Fatalf("tempfail: %v", err)
	}
	_ = c.Reset()
	if err := send(c, "a@example.org", "PermFail@example.org", "x\r\n"); replyCode(err) != 550 {
		t.Fatalf("permfail: %v", err)
	}
	_ = c.Reset()
	if err := send(c, "a@example.org", "datafail@example.org", "x\r\n"); replyCode(err) != 554 {
		t.Fatalf("datafail: %v", err)
	}
	if err := send(c, "a@example.org", "drop@example.org", "x\r\n"); err == nil || replyCode(err) != 0 {
		t.Fatalf("drop: want a connection error without reply, got %v", err)
	}
	if st := s.Stats(); st.Rejected != 3 || st.Dropped != 1 || st.Messages != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	s := start(t, smtpsink.Options{Username: "user", Password: "secret"})

	c := connect(t, s)
	err := c.Auth(smtp.PlainAuth("", "user", "wrong", "127.0.0.1", true))
	if replyCode(err) != 535 {
		t.Fatalf("wrong password: got %v, want 535", err)
	}

	c = connect(t, s)
	if err := send(c, "a@example.org", "b@example.org", "x\r\n"); replyCode(err) != 502 {
		t.Fatalf("MAIL without AUTH: got %v, want 502", err)
	}

	c = connect(t, s)
	if err := c.Auth(smtp.PlainAuth("", "user", "secret", "127.0.0.1", true)); err != nil {
		t.Fatalf("right password: %v", err)
	}
	if err := send(c, "a@example.org", "b@example.org", "x\r\n"); err != nil {
		t.Fatalf("send after AUTH: %v", err)
	}
}

func TestAuthAcceptsAnythingWithoutUsername(t *testing.T) {
	t.Parallel()
	s := start(t, smtpsink.Options{})
	c := connect(t, s)
	if err := c.Auth(smtp.PlainAuth("", "any", "thing", "127.0.0.1", true)); err != nil {
		t.Fatalf("AUTH: %v", err)
	}
}

func TestStopClosesListener(t *testing.T) {
	t.Parallel()
	s := smtpsink.New(smtpsink.Options{})
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	c, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if conn, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		conn.Close()
		t.Fatal("listener still accepts after Stop")
	}
	if err := c.Noop(); err == nil {
		t.Fatal("open session survived Stop")
	}
}

func TestRatesRoughlyRespected(t *testing.T) {
	t.Parallel()
	s := start(t, smtpsink.Options{PermFailRate: 0.5})
	c := connect(t, s)
	const total = 1000
	for range total {
		if err := send(c, "a@example.org", "b@example.org", "x\r\n"); err != nil {
			if replyCode(err) != 550 {
				t.Fatalf("unexpected error: %v", err)
			}
			if err := c.Reset(); err != nil {
				t.Fatal(err)
			}
		}
	}
	st := s.Stats()
	if st.Rejected < 400 || st.Rejected > 600 || st.Rejected+st.Messages != total {
		t.Fatalf("stats %+v, want ~500 of %d rejected", st, total)
	}
}

func TestWaitForMessagesHonoursCtx(t *testing.T) {
	t.Parallel()
	s := start(t, smtpsink.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := s.WaitForMessages(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want deadline exceeded", err)
	}
}

func TestManyConnections(t *testing.T) {
	t.Parallel()
	s := start(t, smtpsink.Options{})
	const clients, each = 32, 20
	errs := make(chan error, clients)
	for range clients {
		go func() {
			c, err := smtp.Dial(s.Addr())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			for range each {
				if err := send(c, "a@example.org", "b@example.org", "x\r\n"); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if err := s.WaitForMessages(ctx, clients*each); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Connections != clients {
		t.Fatalf("stats %+v, want %d connections", st, clients)
	}
}
