package mail

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
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

	// pipelining and chunking say whether the server offers PIPELINING
	// and CHUNKING (see transact); mailParams are the MAIL FROM parameters
	// go-mail's Client.Mail would add, for the envelope written by hand.
	pipelining, chunking bool
	mailParams           string
	// used is set once the session has carried a transaction.
	used bool
}

// bodyWithEnvelopeIdle is how long a session may have been idle and still
// carry the message with its envelope (see transact).
const bodyWithEnvelopeIdle = 2 * time.Second

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
	c := &conn{raw: raw, client: client, lastUsed: time.Now()}
	c.pipelining, _ = client.Extension("PIPELINING")
	c.chunking, _ = client.Extension("CHUNKING")
	if ok, _ := client.Extension("8BITMIME"); ok {
		c.mailParams += " BODY=8BITMIME"
	}
	if ok, _ := client.Extension("SMTPUTF8"); ok {
		c.mailParams += " SMTPUTF8"
	}
	return c, nil
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

// transact runs one mail transaction: MAIL FROM, a RCPT TO per recipient,
// then the message, with as few round trips as the server allows. With
// PIPELINING (RFC 2920) the envelope goes in one write; with CHUNKING
// (RFC 3030) the message goes as one BDAT LAST chunk, with no dot-stuffing
// on either side; with both and a single recipient the whole transaction
// is one write and one wait. Without either it is the classic exchange,
// one command per round trip.
//
// All-or-nothing: one refused recipient fails the whole message, so a retry
// never delivers twice to those who did accept. That is why the message
// travels with the envelope only for a single recipient: if that one is
// refused there is no one to deliver to, and the server must discard the
// chunk (RFC 3030, 2). With several, the body waits for every RCPT reply.
func (c *conn) transact(ctx context.Context, msg *gomail.Msg, timeout time.Duration) (reusable bool, _ *SendError) {
	from, err := msg.GetSender(false)
	if err != nil {
		return true, &SendError{Stage: StageMail, Permanent: true, Err: fmt.Errorf("reading sender: %w", err)}
	}
	rcpts, err := msg.GetRecipients()
	if err != nil {
		return true, &SendError{Stage: StageMail, Permanent: true, Err: fmt.Errorf("reading recipients: %w", err)}
	}
	if !c.pipelining && !c.chunking {
		return c.transactStepwise(ctx, msg, from, rcpts, timeout)
	}
	for _, a := range append([]string{from}, rcpts...) {
		if strings.ContainsAny(a, "\r\n") {
			return true, &SendError{Stage: StageMail, Permanent: true, Err: fmt.Errorf("address %q holds a line break", a)}
		}
	}

	var chunk *bytes.Buffer
	if c.chunking {
		chunk = chunkBuffers.Get().(*bytes.Buffer)
		defer putChunkBuffer(chunk)
		if err := renderChunk(msg, chunk); err != nil {
			return true, &SendError{Stage: StageMail, Permanent: true, Err: fmt.Errorf("building message: %w", err)}
		}
	}
	// A pooled session may have died while idle. Its first reply then never
	// comes, and the pool may retry elsewhere only if the message was not
	// sent with the envelope; so a reused session carries it only when it
	// was used moments ago (a peer that vanished without closing, or whose
	// close is still on its way, is unlikely that soon) and the socket, with
	// nothing left unread in our buffer, shows the server still there. The
	// deadline is armed first: the probe cannot read past an expired one.
	rearm := func() { arm(ctx, c.raw, timeout) }
	rearm()
	withBody := c.pipelining && c.chunking && len(rcpts) == 1 &&
		(!c.used || time.Since(c.lastUsed) <= bodyWithEnvelopeIdle && c.client.Text.R.Buffered() == 0 && idleQuiet(c.raw))
	c.used = true

	if c.pipelining {
		se, clean := c.pipelinedEnvelope(ctx, from, rcpts, chunk, withBody)
		if se != nil {
			if !clean {
				return false, se
			}
			// A refused BDAT LAST ends the transaction (RFC 3030), but RSET
			// costs nothing on this path and leaves no doubt.
			return c.reset(se, rearm)
		}
		if withBody {
			return true, nil
		}
	} else {
		if reusable, se := c.envelopeStepwise(ctx, from, rcpts, rearm); se != nil {
			return reusable, se
		}
	}

	rearm()
	if !c.chunking {
		return c.data(ctx, msg, rearm)
	}
	w := c.client.Text.W
	fmt.Fprintf(w, "BDAT %d LAST\r\n", chunk.Len())
	_, _ = w.Write(chunk.Bytes())
	if err := w.Flush(); err != nil {
		// Not every byte of the chunk left, so the server cannot have taken it.
		return false, newSendError(StageData, withCtxErr(ctx, fmt.Errorf("writing BDAT chunk: %w", err)))
	}
	return c.finalReply(ctx, "BDAT", rearm)
}

// pipelinedEnvelope writes MAIL FROM and every RCPT TO (and, withBody, the
// message as BDAT LAST) in one go, then reads the replies in order. It
// returns the first refusal (the worst RCPT refusal among several, since
// retrying cannot fix a 5xx); clean reports whether every reply was read,
// leaving the session in a known state. Once the body is out, a reply that
// cannot be read before any refusal makes the delivery uncertain.
func (c *conn) pipelinedEnvelope(ctx context.Context, from string, rcpts []string, chunk *bytes.Buffer, withBody bool) (_ *SendError, clean bool) {
	w := c.client.Text.W
	fmt.Fprintf(w, "MAIL FROM:%s%s\r\n", from, c.mailParams)
	for _, rcpt := range rcpts {
		fmt.Fprintf(w, "RCPT TO:%s\r\n", rcpt)
	}
	if withBody {
		fmt.Fprintf(w, "BDAT %d LAST\r\n", chunk.Len())
		_, _ = w.Write(chunk.Bytes())
	}
	if err := w.Flush(); err != nil {
		return newSendError(StageMail, withCtxErr(ctx, fmt.Errorf("writing MAIL FROM: %w", err))), false
	}

	var refused *SendError
	lost := func(stage string, err error) (*SendError, bool) {
		if refused != nil {
			return refused, false
		}
		se := newSendError(stage, withCtxErr(ctx, err))
		if withBody {
			se.Stage, se.Uncertain = StageDataSent, true
		}
		return se, false
	}
	if _, _, err := c.client.Text.ReadResponse(250); err != nil {
		if _, ok := replied(err); !ok {
			return lost(StageMail, fmt.Errorf("reading reply to MAIL FROM %s: %w", from, err))
		}
		refused = newSendError(StageMail, fmt.Errorf("MAIL FROM %s: %w", from, err))
	}
	for _, rcpt := range rcpts {
		_, _, err := c.client.Text.ReadResponse(25)
		if err == nil {
			continue
		}
		if _, ok := replied(err); !ok {
			return lost(StageRcpt, fmt.Errorf("reading reply to RCPT TO %s: %w", rcpt, err))
		}
		se := newSendError(StageRcpt, fmt.Errorf("RCPT TO %s: %w", rcpt, err))
		if refused == nil || (refused.Stage == StageRcpt && se.Permanent && !refused.Permanent) {
			refused = se
		}
	}
	if withBody {
		_, _, err := c.client.Text.ReadResponse(250)
		if err != nil {
			if _, ok := replied(err); !ok {
				return lost(StageDataSent, fmt.Errorf("reading final reply to BDAT: %w", err))
			}
			if refused == nil {
				refused = newSendError(StageData, fmt.Errorf("final reply to BDAT: %w", err))
			}
		} else if refused != nil {
			// The server took the message after refusing its envelope: it is
			// out of step with us, and may have delivered it. Never retried,
			// and the session is not reused.
			refused.Stage, refused.Uncertain, refused.Permanent = StageDataSent, true, false
			refused.Err = fmt.Errorf("BDAT accepted after a refused envelope: %w", refused.Err)
			return refused, false
		}
	}
	return refused, true
}

// envelopeStepwise sends MAIL FROM and each RCPT TO, waiting for each reply.
func (c *conn) envelopeStepwise(ctx context.Context, from string, rcpts []string, rearm func()) (reusable bool, _ *SendError) {
	if err := c.client.Mail(from); err != nil {
		return c.refused(ctx, StageMail, fmt.Errorf("MAIL FROM %s: %w", from, err), rearm)
	}
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
		return c.refused(ctx, StageRcpt, rcptErr, rearm)
	}
	return true, nil
}

// transactStepwise is transact for a server with neither PIPELINING nor
// CHUNKING.
func (c *conn) transactStepwise(ctx context.Context, msg *gomail.Msg, from string, rcpts []string, timeout time.Duration) (reusable bool, _ *SendError) {
	rearm := func() { arm(ctx, c.raw, timeout) }
	rearm()
	if reusable, se := c.envelopeStepwise(ctx, from, rcpts, rearm); se != nil {
		return reusable, se
	}
	return c.data(ctx, msg, rearm)
}

// refused handles a refusal before the message: the session survives a
// clean reply (other than 421, "closing"), after an RSET to drop the
// transaction.
func (c *conn) refused(ctx context.Context, stage string, err error, rearm func()) (bool, *SendError) {
	se := newSendError(stage, withCtxErr(ctx, err))
	if _, ok := replied(err); !ok {
		return false, se
	}
	return c.reset(se, rearm)
}

// reset ends a refused transaction with RSET, keeping the session unless
// the server is closing it (421) or RSET fails.
func (c *conn) reset(se *SendError, rearm func()) (bool, *SendError) {
	if se.Code == 421 {
		return false, se
	}
	rearm()
	if err := c.client.Reset(); err != nil {
		return false, se
	}
	return true, se
}

// data sends the message with DATA, dot-stuffed.
func (c *conn) data(ctx context.Context, msg *gomail.Msg, rearm func()) (reusable bool, _ *SendError) {
	w, err := c.client.Data()
	if err != nil {
		return c.refused(ctx, StageData, fmt.Errorf("DATA: %w", err), rearm)
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
	return c.finalReply(ctx, "DATA", rearm)
}

// finalReply reads the reply to the end of the message. Whether the server
// took it is unknown if that reply cannot be read.
func (c *conn) finalReply(ctx context.Context, cmd string, rearm func()) (reusable bool, _ *SendError) {
	if _, _, err := c.client.Text.ReadResponse(250); err != nil {
		if _, ok := replied(err); ok {
			// The transaction is over; RSET makes sure of it before the
			// session carries another.
			return c.reset(newSendError(StageData, fmt.Errorf("final reply to %s: %w", cmd, err)), rearm)
		}
		se := newSendError(StageDataSent, withCtxErr(ctx, fmt.Errorf("reading final reply to %s: %w", cmd, err)))
		se.Uncertain = true
		return false, se
	}
	return true, nil
}

// chunkBuffers hold messages rendered for BDAT.
var chunkBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// putChunkBuffer returns b to chunkBuffers unless it grew for an unusually
// large message, which would stay pinned in memory.
func putChunkBuffer(b *bytes.Buffer) {
	if b.Cap() > 1<<20 {
		return
	}
	b.Reset()
	chunkBuffers.Put(b)
}

// renderChunk writes msg into b exactly as DATA would carry it, less the
// dot-stuffing: every line ending CRLF (a bare LF becomes CRLF, as
// textproto's DotWriter makes it) and the last line ended.
func renderChunk(msg *gomail.Msg, b *bytes.Buffer) error {
	if _, err := msg.WriteTo(b); err != nil {
		return err
	}
	normalizeChunk(b)
	return nil
}

// normalizeChunk ends every line of b with CRLF, the last one included.
func normalizeChunk(b *bytes.Buffer) {
	if hasBareLF(b.Bytes()) {
		fixed := crlf(b.Bytes())
		b.Reset()
		b.Write(fixed)
	}
	if b.Len() > 0 && !bytes.HasSuffix(b.Bytes(), []byte("\r\n")) {
		b.WriteString("\r\n")
	}
}

// hasBareLF reports whether p has a LF not preceded by CR.
func hasBareLF(p []byte) bool {
	for i := 0; ; {
		j := bytes.IndexByte(p[i:], '\n')
		if j < 0 {
			return false
		}
		if i+j == 0 || p[i+j-1] != '\r' {
			return true
		}
		i += j + 1
	}
}

// crlf returns p with every bare LF turned into CRLF.
func crlf(p []byte) []byte {
	out := make([]byte, 0, len(p)+len(p)/32)
	for i, c := range p {
		if c == '\n' && (i == 0 || p[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}
