package mail

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	gomail "github.com/wneessen/go-mail"
	"github.com/wneessen/go-mail/smtp"
)

// conn is one live SMTP session.
type conn struct {
	// raw is the TCP connection under any TLS layer. Deadlines are set here
	// rather than through smtp.Client.UpdateDeadline, which takes the client's
	// mutex and so would block behind an in-flight read when ctx is cancelled.
	raw      net.Conn
	client   *smtp.Client
	lastUsed time.Time
}

// close ends the session politely if it can do so quickly.
func (c *conn) close() {
	_ = c.raw.SetDeadline(time.Now().Add(time.Second))
	_ = c.client.Quit()
	_ = c.raw.Close()
}

// deadline is now+timeout, or ctx's deadline if sooner.
func deadline(ctx context.Context, timeout time.Duration) time.Time {
	d := time.Now().Add(timeout)
	if cd, ok := ctx.Deadline(); ok && cd.Before(d) {
		return cd
	}
	return d
}

// abortOnDone makes blocked I/O on raw fail as soon as ctx is done; the
// returned stop reports false if that happened, meaning the session is in an
// unknown state and must be discarded.
func abortOnDone(ctx context.Context, raw net.Conn) (stop func() bool) {
	return context.AfterFunc(ctx, func() {
		_ = raw.SetDeadline(time.Unix(1, 0))
	})
}

// arm sets the I/O deadline for the next step. Re-checking ctx afterwards
// closes the race with abortOnDone: if ctx ended while we were extending the
// deadline, the abort is reapplied instead of being overwritten.
func arm(ctx context.Context, raw net.Conn, timeout time.Duration) {
	_ = raw.SetDeadline(deadline(ctx, timeout))
	if ctx.Err() != nil {
		_ = raw.SetDeadline(time.Unix(1, 0))
	}
}

// withCtxErr prefixes err with ctx's error when ctx caused it, so callers can
// tell cancellation from a genuine network failure. Socket deadlines are set
// to ctx's deadline, so the I/O timeout can fire a moment before ctx reports
// expiry; that case is attributed to ctx too.
func withCtxErr(ctx context.Context, err error) error {
	ctxErr := ctx.Err()
	if ctxErr == nil && errors.Is(err, os.ErrDeadlineExceeded) {
		if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
			ctxErr = context.DeadlineExceeded
		}
	}
	if ctxErr != nil && !errors.Is(err, ctxErr) {
		return fmt.Errorf("%w: %w", ctxErr, err)
	}
	return err
}

// dial opens, secures and authenticates a session to srv.
func dial(ctx context.Context, srv *Server, helo string) (*conn, error) {
	addr := net.JoinHostPort(srv.Host, strconv.Itoa(srv.Port))
	switch srv.TLS {
	case "", TLSNone, TLSStartTLS, TLSImplicit:
	default:
		return nil, &SendError{Stage: StageTLS, Err: fmt.Errorf("unknown TLS mode %q for %s", srv.TLS, addr)}
	}
	dctx, cancel := context.WithDeadline(ctx, deadline(ctx, srv.timeout()))
	defer cancel()

	var d net.Dialer
	if srv.PublicOnly {
		d.Control = publicOnly
	}
	raw, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, newSendError(StageConnect, fmt.Errorf("dialling %s: %w", addr, err))
	}
	stop := abortOnDone(dctx, raw)
	defer stop()
	arm(dctx, raw, srv.timeout())

	fail := func(stage string, err error) (*conn, error) {
		_ = raw.Close()
		return nil, newSendError(stage, withCtxErr(dctx, err))
	}

	var netConn net.Conn = raw
	if srv.TLS == TLSImplicit {
		tlsConn := tls.Client(raw, &tls.Config{ServerName: srv.Host, MinVersion: tls.VersionTLS12})
		if err := tlsConn.HandshakeContext(dctx); err != nil {
			return fail(StageTLS, fmt.Errorf("TLS handshake with %s: %w", addr, err))
		}
		netConn = tlsConn
	}

	client, err := smtp.NewClient(netConn, srv.Host)
	if err != nil {
		return fail(StageConnect, fmt.Errorf("reading greeting from %s: %w", addr, err))
	}
	if err := client.Hello(helo); err != nil {
		return fail(StageConnect, fmt.Errorf("EHLO to %s: %w", addr, err))
	}

	if srv.TLS != TLSImplicit {
		hasStartTLS, _ := client.Extension("STARTTLS")
		switch {
		case srv.TLS == TLSStartTLS && !hasStartTLS:
			return fail(StageTLS, fmt.Errorf("%s does not offer STARTTLS", addr))
		case hasStartTLS:
			cfg := &tls.Config{ServerName: srv.Host, MinVersion: tls.VersionTLS12}
			if srv.TLS != TLSStartTLS {
				// Opportunistic TLS only defends against passive snooping; an
				// active attacker could strip STARTTLS anyway, so refusing
				// self-signed certificates would lose mail without adding safety.
				cfg.InsecureSkipVerify = true //nolint:gosec // see above
			}
			if err := client.StartTLS(cfg); err != nil {
				return fail(StageTLS, fmt.Errorf("STARTTLS with %s: %w", addr, err))
			}
		}
	}

	if srv.Username != "" {
		auth, err := pickAuth(client, srv)
		if err != nil {
			return fail(StageAuth, err)
		}
		if err := client.Auth(auth); err != nil {
			return fail(StageAuth, fmt.Errorf("authenticating to %s as %s: %w", addr, srv.Username, err))
		}
	}

	if !stop() {
		_ = raw.Close()
		return nil, newSendError(StageConnect, fmt.Errorf("dialling %s: %w", addr, dctx.Err()))
	}
	return &conn{raw: raw, client: client, lastUsed: time.Now()}, nil
}

// pickAuth chooses a mechanism the server offers. Plain-text mechanisms are
// allowed without TLS only when the operator configured TLS "none".
func pickAuth(client *smtp.Client, srv *Server) (smtp.Auth, error) {
	ok, mechs := client.Extension("AUTH")
	if !ok {
		return nil, fmt.Errorf("server %s does not offer AUTH", srv.Host)
	}
	offered := strings.Fields(strings.ToUpper(mechs))
	has := func(m string) bool {
		for _, o := range offered {
			if o == m {
				return true
			}
		}
		return false
	}
	allowPlaintext := srv.TLS == TLSNone
	switch {
	case has("PLAIN"):
		return smtp.PlainAuth("", srv.Username, srv.Password, srv.Host, allowPlaintext), nil
	case has("LOGIN"):
		return smtp.LoginAuth(srv.Username, srv.Password, srv.Host, allowPlaintext), nil
	case has("CRAM-MD5"):
		return smtp.CRAMMD5Auth(srv.Username, srv.Password), nil
	}
	return nil, fmt.Errorf("server %s offers no supported AUTH mechanism (%s)", srv.Host, mechs)
}

// send runs one mail transaction on c. reusable reports whether the session
// is still in a clean state (idle, between transactions) afterwards.
func (c *conn) send(ctx context.Context, msg *gomail.Msg, timeout time.Duration) (reusable bool, _ *SendError) {
	stop := abortOnDone(ctx, c.raw)
	reusable, se := c.transact(ctx, msg, timeout)
	if !stop() {
		// The abort may have hit between two commands; the session's state is unknown.
		reusable = false
	}
	return reusable, se
}

func (c *conn) transact(ctx context.Context, msg *gomail.Msg, timeout time.Duration) (reusable bool, _ *SendError) {
	from, err := msg.GetSender(false)
	if err != nil {
		return true, &SendError{Stage: StageMail, Permanent: true, Err: fmt.Errorf("reading sender: %w", err)}
	}
	rcpts, err := msg.GetRecipients()
	if err != nil {
		return true, &SendError{Stage: StageMail, Permanent: true, Err: fmt.Errorf("reading recipients: %w", err)}
	}

	rearm := func() { arm(ctx, c.raw, timeout) }
	// rejected handles a refusal before DATA: the session survives a clean
	// reply (other than 421, "closing"), after an RSET to drop the transaction.
	rejected := func(stage string, err error) (bool, *SendError) {
		se := newSendError(stage, withCtxErr(ctx, err))
		code, ok := replied(err)
		if !ok || code == 421 {
			return false, se
		}
		rearm()
		if rerr := c.client.Reset(); rerr != nil {
			return false, se
		}
		return true, se
	}

	rearm()
	if err := c.client.Mail(from); err != nil {
		return rejected(StageMail, fmt.Errorf("MAIL FROM %s: %w", from, err))
	}
	// All-or-nothing: one refused recipient fails the whole message, so a
	// retry never delivers twice to those who did accept. The worst reply
	// wins, since retrying cannot fix a 5xx.
	var rcptErr error
	rcptPermanent := false
	for _, rcpt := range rcpts {
		err := c.client.Rcpt(rcpt)
		if err == nil {
			continue
		}
		code, ok := replied(err)
		if !ok {
			return false, newSendError(StageRcpt, withCtxErr(ctx, fmt.Errorf("RCPT TO %s: %w", rcpt, err)))
		}
		if rcptErr == nil || (code >= 500 && !rcptPermanent) {
			rcptErr = fmt.Errorf("RCPT TO %s: %w", rcpt, err)
			rcptPermanent = code >= 500
		}
	}
	if rcptErr != nil {
		return rejected(StageRcpt, rcptErr)
	}

	w, err := c.client.Data()
	if err != nil {
		return rejected(StageData, fmt.Errorf("DATA: %w", err))
	}
	dc, ok := w.(*smtp.DataCloser)
	if !ok {
		return false, &SendError{Stage: StageData, Err: fmt.Errorf("unexpected DATA writer %T", w)}
	}
	rearm()
	if _, err := msg.WriteTo(dc); err != nil {
		return false, newSendError(StageData, withCtxErr(ctx, fmt.Errorf("writing message body: %w", err)))
	}
	// DataCloser.Close swallows the error of writing the final ".", which is
	// the one thing that separates "never complete" from "maybe delivered";
	// so close the dot-writer and read the reply ourselves.
	if err := dc.WriteCloser.Close(); err != nil {
		return false, newSendError(StageData, withCtxErr(ctx, fmt.Errorf("writing end of data: %w", err)))
	}
	if _, _, err := c.client.Text.ReadResponse(250); err != nil {
		if code, ok := replied(err); ok {
			// The transaction is over either way; the session is idle again.
			return code != 421, newSendError(StageData, fmt.Errorf("final reply to DATA: %w", err))
		}
		se := newSendError(StageDataSent, withCtxErr(ctx, fmt.Errorf("reading final reply to DATA: %w", err)))
		se.Uncertain = true
		return false, se
	}
	return true, nil
}
