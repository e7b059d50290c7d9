package mail_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net"
	netmail "net/mail"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailqueue/mailqueue/bench/smtpsink"
	"github.com/mailqueue/mailqueue/mail"
	"github.com/mailqueue/mailqueue/testenv"
)

func serverFor(sink *smtpsink.Sink, poolSize int) mail.Server {
	return mail.Server{
		Host:     sink.Host(),
		Port:     sink.Port(),
		TLS:      mail.TLSNone,
		PoolSize: poolSize,
		Timeout:  5 * time.Second,
		HeloName: "test.local",
	}
}

func newPool(t testing.TB, srv mail.Server) *mail.Pool {
	t.Helper()
	p := mail.NewPool(srv, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { _ = p.Close() })
	return p
}

var msgSeq atomic.Int64

func testMessage(to string) *mail.Message {
	n := msgSeq.Add(1)
	return &mail.Message{
		MessageID: fmt.Sprintf("%d.test@mailqueue.test", n),
		From:      mail.Address{Email: "sender@mailqueue.test", Name: "Zoë Sender"},
		To:        []mail.Address{{Email: to, Name: "Ünïcode Rcpt"}},
		Subject:   fmt.Sprintf("Grüße #%d", n),
		Text:      fmt.Sprintf("plain body %d", n),
		HTML:      fmt.Sprintf("<p>html body %d</p>", n),
		Headers:   map[string]string{"X-Campaign": "spring", "subject": "must be ignored"},
	}
}

func asSendError(t *testing.T, err error) *mail.SendError {
	t.Helper()
	var se *mail.SendError
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T) is not a *mail.SendError", err, err)
	}
	return se
}

func TestPoolReusesConnections(t *testing.T) {
	t.Parallel()
	sink := testenv.SMTPSink(t, smtpsink.Options{Record: true})
	pool := newPool(t, serverFor(sink, 4))

	const total = 200
	sent := make(map[string]*mail.Message, total)
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, total)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < total; i += 8 {
				m := testMessage(fmt.Sprintf("rcpt%d@example.org", i))
				m.Bcc = []mail.Address{{Email: "hidden@example.org"}}
				mu.Lock()
				sent[m.MessageID] = m
				mu.Unlock()
				if err := pool.Send(t.Context(), m); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("send: %v", err)
	}

	st := sink.Stats()
	if st.Messages != total {
		t.Fatalf("sink accepted %d messages, want %d", st.Messages, total)
	}
	if st.Connections > 4 {
		t.Fatalf("sink saw %d connections, want <= 4 (connections are not reused)", st.Connections)
	}
	if ps := pool.Stats(); ps.Dials > 4 || ps.Open > 4 {
		t.Fatalf("pool stats %+v: want at most 4 dials and open connections", ps)
	}

	dec := new(mime.WordDecoder)
	for _, got := range sink.Messages() {
		parsed, err := netmail.ReadMessage(bytes.NewReader(got.Data))
		if err != nil {
			t.Fatalf("parsing received message: %v", err)
		}
		id := strings.Trim(parsed.Header.Get("Message-Id"), "<>")
		want, ok := sent[id]
		if !ok {
			t.Fatalf("received unknown Message-ID %q", id)
		}
		subject, err := dec.DecodeHeader(parsed.Header.Get("Subject"))
		if err != nil || subject != want.Subject {
			t.Fatalf("subject = %q (%v), want %q", subject, err, want.Subject)
		}
		if parsed.Header.Get("Bcc") != "" {
			t.Fatalf("Bcc header leaked: %q", parsed.Header.Get("Bcc"))
		}
		if len(got.To) != 2 || got.To[1] != "hidden@example.org" {
			t.Fatalf("envelope recipients = %v, want To and Bcc", got.To)
		}
		from, err := netmail.ParseAddress(parsed.Header.Get("From"))
		if err != nil || from.Name != "Zoë Sender" {
			t.Fatalf("From = %q (%v), want decoded name Zoë Sender", parsed.Header.Get("From"), err)
		}
		if parsed.Header.Get("X-Campaign") != "spring" {
			t.Fatalf("custom header missing: %v", parsed.Header)
		}
		if n := len(parsed.Header["Subject"]); n != 1 {
			t.Fatalf("%d Subject headers, reserved custom header must be skipped", n)
		}
		mediaType, params, err := mime.ParseMediaType(parsed.Header.Get("Content-Type"))
		if err != nil || mediaType != "multipart/alternative" {
			t.Fatalf("Content-Type = %q (%v), want multipart/alternative", parsed.Header.Get("Content-Type"), err)
		}
		mr := multipart.NewReader(parsed.Body, params["boundary"])
		var types []string
		var bodies []string
		for {
			part, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("reading part: %v", err)
			}
			body, _ := io.ReadAll(part)
			ct, _, _ := mime.ParseMediaType(part.Header.Get("Content-Type"))
			types = append(types, ct)
			bodies = append(bodies, string(body))
		}
		if strings.Join(types, ",") != "text/plain,text/html" {
			t.Fatalf("parts = %v, want text/plain then text/html", types)
		}
		if bodies[0] != want.Text || bodies[1] != want.HTML {
			t.Fatalf("bodies = %q, want %q and %q", bodies, want.Text, want.HTML)
		}
	}
}

func TestPoolConcurrentSends(t *testing.T) {
	t.Parallel()
	sink := testenv.SMTPSink(t, smtpsink.Options{})
	pool := newPool(t, serverFor(sink, 4))

	const goroutines, each = 16, 25
	var wg sync.WaitGroup
	var failures atomic.Int64
	for range goroutines {
		wg.Go(func() {
			for range each {
				if err := pool.Send(t.Context(), testMessage("rcpt@example.org")); err != nil {
					failures.Add(1)
					t.Errorf("send: %v", err)
				}
				if st := pool.Stats(); st.Open > 4 {
					t.Errorf("pool has %d open connections, limit 4", st.Open)
				}
			}
		})
	}
	wg.Wait()
	if st := sink.Stats(); st.Messages != goroutines*each || st.Connections > 4 {
		t.Fatalf("sink stats %+v, want %d messages over <= 4 connections", st, goroutines*each)
	}
}

func TestSendErrorClassification(t *testing.T) {
	t.Parallel()
	sink := testenv.SMTPSink(t, smtpsink.Options{})
	pool := newPool(t, serverFor(sink, 2))

	tests := []struct {
		rcpt      string
		stage     string
		code      int
		enhanced  string
		permanent bool
		uncertain bool
	}{
		{rcpt: "tempfail@example.org", stage: mail.StageRcpt, code: 451, enhanced: "4.3.0"},
		{rcpt: "permfail@example.org", stage: mail.StageRcpt, code: 550, enhanced: "5.1.1", permanent: true},
		{rcpt: "datafail@example.org", stage: mail.StageData, code: 554, enhanced: "5.6.0", permanent: true},
		{rcpt: "drop@example.org", stage: mail.StageDataSent, uncertain: true},
	}
	for _, tt := range tests {
		err := pool.Send(t.Context(), testMessage(tt.rcpt))
		se := asSendError(t, err)
		if se.Stage != tt.stage || se.Code != tt.code || se.EnhancedCode != tt.enhanced ||
			se.Permanent != tt.permanent || se.Uncertain != tt.uncertain {
			t.Errorf("%s: got %+v, want stage %s code %d enhanced %q permanent %v uncertain %v",
				tt.rcpt, se, tt.stage, tt.code, tt.enhanced, tt.permanent, tt.uncertain)
		}
		if mail.IsPermanent(err) != tt.permanent || mail.IsUncertain(err) != tt.uncertain {
			t.Errorf("%s: IsPermanent/IsUncertain disagree with fields: %v", tt.rcpt, err)
		}

		// The pool must still deliver: the broken connection is discarded and
		// a rejected-but-clean one is reused.
		if err := pool.Send(t.Context(), testMessage("ok@example.org")); err != nil {
			t.Fatalf("send after %s: %v", tt.rcpt, err)
		}
	}

	st := sink.Stats()
	if st.Messages != 4 || st.Rejected != 3 || st.Dropped != 1 {
		t.Fatalf("sink stats %+v, want 4 accepted, 3 rejected, 1 dropped", st)
	}
	// Only the dropped connection had to be replaced.
	if ps := pool.Stats(); ps.Dials != 2 {
		t.Fatalf("pool stats %+v, want 2 dials (initial + after drop)", ps)
	}
}

func TestSendConnectionRefused(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	_ = ln.Close()

	pool := newPool(t, mail.Server{Host: "127.0.0.1", Port: addr.Port, Timeout: 2 * time.Second})
	se := asSendError(t, pool.Send(t.Context(), testMessage("a@example.org")))
	if se.Stage != mail.StageConnect || se.Permanent || se.Uncertain || se.Code != 0 {
		t.Fatalf("got %+v, want non-permanent connect error", se)
	}
	if st := pool.Stats(); st.Open != 0 {
		t.Fatalf("pool stats %+v after failed dial, want nothing open", st)
	}
}

func TestPoolIdleExpiry(t *testing.T) {
	t.Parallel()
	sink := testenv.SMTPSink(t, smtpsink.Options{})
	srv := serverFor(sink, 2)
	srv.IdleTimeout = 50 * time.Millisecond
	pool := newPool(t, srv)

	if err := pool.Send(t.Context(), testMessage("a@example.org")); err != nil {
		t.Fatal(err)
	}
	if err := pool.Send(t.Context(), testMessage("a@example.org")); err != nil {
		t.Fatal(err)
	}
	if d := pool.Stats().Dials; d != 1 {
		t.Fatalf("dials = %d after quick reuse, want 1", d)
	}
	time.Sleep(150 * time.Millisecond)
	if err := pool.Send(t.Context(), testMessage("a@example.org")); err != nil {
		t.Fatal(err)
	}
	if d := pool.Stats().Dials; d != 2 {
		t.Fatalf("dials = %d after idle expiry, want 2", d)
	}
	if c := sink.Stats().Connections; c != 2 {
		t.Fatalf("sink connections = %d, want 2", c)
	}

	// With no traffic the reaper closes idle connections on its own.
	deadline := time.Now().Add(2 * time.Second)
	for pool.Stats().Open != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("idle connection not reaped: %+v", pool.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPoolRedialsStaleConnection(t *testing.T) {
	t.Parallel()
	sink := smtpsink.New(smtpsink.Options{})
	if err := sink.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	addr := sink.Addr()
	pool := newPool(t, serverFor(sink, 1))
	if err := pool.Send(t.Context(), testMessage("a@example.org")); err != nil {
		t.Fatal(err)
	}

	// The server goes away and comes back: the idle session is dead.
	if err := sink.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	sink2 := testenv.SMTPSink(t, smtpsink.Options{Addr: addr})
	if err := pool.Send(t.Context(), testMessage("a@example.org")); err != nil {
		t.Fatalf("send over a stale pooled connection should redial transparently: %v", err)
	}
	if st := sink2.Stats(); st.Messages != 1 {
		t.Fatalf("restarted sink stats %+v, want 1 message", st)
	}
	if d := pool.Stats().Dials; d != 2 {
		t.Fatalf("dials = %d, want 2", d)
	}
}

func TestSendCtxCancelWhileWaiting(t *testing.T) {
	t.Parallel()
	sink := testenv.SMTPSink(t, smtpsink.Options{})
	pool := newPool(t, serverFor(sink, 1))

	// Occupy the only connection for ~2 s.
	busy := make(chan error, 1)
	go func() { busy <- pool.Send(context.Background(), testMessage("slow@example.org")) }()
	for pool.Stats().Open == 0 {
		time.Sleep(time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := pool.Send(ctx, testMessage("a@example.org"))
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Fatalf("Send took %v to notice ctx expiry", elapsed)
	}
	se := asSendError(t, err)
	if se.Stage != mail.StageConnect || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %+v, want connect-stage deadline error", se)
	}
	if err := <-busy; err != nil {
		t.Fatalf("slow send: %v", err)
	}
}

func TestSendCtxCancelAfterDataIsUncertain(t *testing.T) {
	t.Parallel()
	sink := testenv.SMTPSink(t, smtpsink.Options{})
	pool := newPool(t, serverFor(sink, 1))

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	err := pool.Send(ctx, testMessage("slow@example.org"))
	se := asSendError(t, err)
	if se.Stage != mail.StageDataSent || !se.Uncertain || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %+v, want uncertain data_sent with deadline error", se)
	}
	if err := pool.Send(t.Context(), testMessage("a@example.org")); err != nil {
		t.Fatalf("send after abort: %v", err)
	}
}

func TestPoolClose(t *testing.T) {
	t.Parallel()
	sink := testenv.SMTPSink(t, smtpsink.Options{})
	pool := mail.NewPool(serverFor(sink, 2), nil)
	if err := pool.Send(t.Context(), testMessage("a@example.org")); err != nil {
		t.Fatal(err)
	}
	if err := pool.Close(); err != nil {
		t.Fatal(err)
	}
	if st := pool.Stats(); st.Open != 0 || st.Idle != 0 {
		t.Fatalf("stats after Close = %+v, want nothing open", st)
	}
	err := pool.Send(t.Context(), testMessage("a@example.org"))
	if !errors.Is(err, mail.ErrPoolClosed) {
		t.Fatalf("Send after Close = %v, want ErrPoolClosed", err)
	}
}

func TestPoolAuth(t *testing.T) {
	t.Parallel()
	sink := testenv.SMTPSink(t, smtpsink.Options{Username: "user", Password: "secret"})

	good := serverFor(sink, 1)
	good.Username, good.Password = "user", "secret"
	if err := newPool(t, good).Send(t.Context(), testMessage("a@example.org")); err != nil {
		t.Fatalf("send with right credentials: %v", err)
	}

	bad := good
	bad.Password = "wrong"
	se := asSendError(t, newPool(t, bad).Send(t.Context(), testMessage("a@example.org")))
	if se.Stage != mail.StageAuth || se.Code != 535 || !se.Permanent {
		t.Fatalf("got %+v, want permanent auth error 535", se)
	}

	se = asSendError(t, newPool(t, serverFor(sink, 1)).Send(t.Context(), testMessage("a@example.org")))
	if se.Stage != mail.StageMail || !se.Permanent {
		t.Fatalf("unauthenticated send: got %+v, want permanent MAIL refusal", se)
	}
}

func TestStartTLSRequiredButNotOffered(t *testing.T) {
	t.Parallel()
	sink := testenv.SMTPSink(t, smtpsink.Options{})
	srv := serverFor(sink, 1)
	srv.TLS = mail.TLSStartTLS
	se := asSendError(t, newPool(t, srv).Send(t.Context(), testMessage("a@example.org")))
	if se.Stage != mail.StageTLS {
		t.Fatalf("got %+v, want tls stage", se)
	}
}

func TestPools(t *testing.T) {
	t.Parallel()
	sink := testenv.SMTPSink(t, smtpsink.Options{})
	ps := mail.NewPools(slog.New(slog.DiscardHandler))

	srv := serverFor(sink, 2)
	a := ps.Get(srv)
	if ps.Get(srv) != a {
		t.Fatal("same config must return the same pool")
	}
	edited := srv
	edited.Password = "new"
	if ps.Get(edited) == a {
		t.Fatal("edited config must get a fresh pool")
	}
	if err := a.Send(t.Context(), testMessage("a@example.org")); err != nil {
		t.Fatal(err)
	}
	if err := ps.CloseAll(); err != nil {
		t.Fatal(err)
	}
	if st := a.Stats(); st.Open != 0 {
		t.Fatalf("pool stats after CloseAll = %+v", st)
	}
	if err := ps.Get(srv).Send(t.Context(), testMessage("a@example.org")); !errors.Is(err, mail.ErrPoolClosed) {
		t.Fatalf("Send via registry after CloseAll = %v, want ErrPoolClosed", err)
	}
}

func BenchmarkPoolSend(b *testing.B) {
	sink := testenv.SMTPSink(b, smtpsink.Options{})
	pool := newPool(b, serverFor(sink, 8))
	ctx := context.Background()
	m := testMessage("bench@example.org")

	b.ReportAllocs()
	b.SetParallelism(2) // more senders than connections, as in the worker
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := pool.Send(ctx, m); err != nil {
				b.Errorf("send: %v", err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	if c := sink.Stats().Connections; c > 8 {
		b.Fatalf("sink saw %d connections for a pool of 8", c)
	}
}
