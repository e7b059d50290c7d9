package mail_test

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/mailqueue/mailqueue/bench/smtpsink"
	"github.com/mailqueue/mailqueue/mail"
	"github.com/mailqueue/mailqueue/testenv"
)

func TestProbeOK(t *testing.T) {
	t.Parallel()
	sink := testenv.SMTPSink(t, smtpsink.Options{Username: "user", Password: "secret"})
	srv := serverFor(sink, 1)
	srv.Username, srv.Password = "user", "secret"
	stage, err := mail.Probe(t.Context(), srv)
	if err != nil || stage != mail.StageDone {
		t.Fatalf("Probe = %q, %v; want done, nil", stage, err)
	}
	if st := sink.Stats(); st.Connections != 1 || st.Messages != 0 {
		t.Errorf("sink stats %+v; want one session and no message", st)
	}
}

func TestProbeBadAuth(t *testing.T) {
	t.Parallel()
	sink := testenv.SMTPSink(t, smtpsink.Options{Username: "user", Password: "secret"})
	srv := serverFor(sink, 1)
	srv.Username, srv.Password = "user", "wrong"
	stage, err := mail.Probe(t.Context(), srv)
	if stage != mail.StageAuth {
		t.Fatalf("Probe stage = %q (%v), want auth", stage, err)
	}
	if se := asSendError(t, err); se.Code != 535 {
		t.Errorf("auth failure %+v, want the server's 535", se)
	}
}

func TestProbeConnectionRefused(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()

	stage, err := mail.Probe(t.Context(), mail.Server{Host: "127.0.0.1", Port: port, Timeout: 2 * time.Second})
	if stage != mail.StageConnect || err == nil {
		t.Fatalf("Probe = %q, %v; want a connect failure", stage, err)
	}
}

func TestProbeStartTLSRequiredButNotOffered(t *testing.T) {
	t.Parallel()
	sink := testenv.SMTPSink(t, smtpsink.Options{})
	srv := serverFor(sink, 1)
	srv.TLS = mail.TLSStartTLS
	if stage, err := mail.Probe(t.Context(), srv); stage != mail.StageTLS || err == nil {
		t.Fatalf("Probe = %q, %v; want a tls failure", stage, err)
	}
}

// A server that accepts TCP but never greets must not hold the probe past
// its timeout.
func TestProbeHonoursTimeout(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	t.Cleanup(func() {
		if c, ok := <-accepted; ok {
			_ = c.Close()
		}
	})

	srv := mail.Server{Host: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port, Timeout: 200 * time.Millisecond}
	start := time.Now()
	stage, err := mail.Probe(t.Context(), srv)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Probe took %s with a 200ms timeout", took)
	}
	if stage != mail.StageConnect || err == nil {
		t.Fatalf("Probe = %q, %v; want a connect failure", stage, err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("error %v is not a timeout", err)
	}
}
