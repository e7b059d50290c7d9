// Package smtpsink is a fast in-process SMTP server for tests and benchmarks.
//
// It accepts mail over real TCP so delivery code is exercised end to end, can
// inject temporary, permanent and "connection dropped after DATA" failures
// either at configurable rates or deterministically by recipient local part,
// and counts (optionally records) what it received.
//
// Deterministic triggers, by recipient local part (case-insensitive):
//
//	tempfail  451 4.3.0 at RCPT
//	permfail  550 5.1.1 at RCPT
//	datafail  554 5.6.0 after DATA
//	drop      DATA is read in full, then the TCP connection is closed without a reply
//	slow      the reply to DATA is delayed by 2 s
package smtpsink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// SlowDelay is how long a message addressed to a "slow@" recipient waits
// before its DATA is answered.
const SlowDelay = 2 * time.Second

// Options configures a Sink. The zero value is a recording-free sink on a
// random loopback port that accepts everything.
type Options struct {
	// Addr is the listen address; "127.0.0.1:0" when empty.
	Addr string
	// Record keeps every accepted message in memory for Messages.
	Record bool
	// Delay is waited before answering DATA, to simulate a slow server.
	Delay time.Duration
	// TempFailRate is the share (0..1) of messages refused with 451 at RCPT.
	TempFailRate float64
	// PermFailRate is the share (0..1) of messages refused with 550 at RCPT.
	PermFailRate float64
	// DropAfterDataRate is the share (0..1) of messages whose connection is
	// closed after the body was read, without any reply.
	DropAfterDataRate float64
	// Logger receives server errors; nil discards them.
	Logger *slog.Logger
	// MaxMessageBytes is advertised with SIZE and enforced; 0 means unlimited.
	MaxMessageBytes int64
	// Username and Password, when Username is set, are the only credentials
	// AUTH PLAIN accepts, and MAIL is refused until the client authenticated.
	// With an empty Username any credentials are accepted and AUTH is optional.
	Username, Password string
}

// Stats are the sink's counters since it was created.
type Stats struct {
	// Connections is the number of SMTP sessions opened (one per TCP connection).
	Connections int64
	// Messages is the number of messages accepted with 250 after DATA.
	Messages int64
	// Rejected is the number of messages refused at RCPT or after DATA.
	Rejected int64
	// Dropped is the number of messages whose connection was closed after DATA.
	Dropped int64
}

// Message is one accepted message, kept when Options.Record is set.
type Message struct {
	// From is the envelope sender.
	From string
	// To holds the envelope recipients.
	To []string
	// Data is the raw message as received (headers and body, CRLF line endings).
	Data []byte
	// Received is when the message was accepted.
	Received time.Time
}

// Sink is an SMTP server that swallows mail. Create it with New.
type Sink struct {
	opts   Options
	logger *slog.Logger

	server *smtp.Server
	addr   net.Addr
	stop   chan struct{}
	served chan struct{}

	stopOnce sync.Once

	connections atomic.Int64
	messages    atomic.Int64
	rejected    atomic.Int64
	dropped     atomic.Int64

	mu       sync.Mutex
	recorded []Message
	waiters  []waiter
	// nWaiters lets the hot path skip the mutex when nobody waits.
	nWaiters atomic.Int32
}

type waiter struct {
	n    int64
	done chan struct{}
}

// New returns a sink configured by opts; call Start to begin listening.
func New(opts Options) *Sink {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Sink{
		opts:   opts,
		logger: logger,
		stop:   make(chan struct{}),
		served: make(chan struct{}),
	}
}

// Start listens on Options.Addr and serves connections in the background
// until Stop is called. ctx only bounds setting up the listener.
func (s *Sink) Start(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", s.opts.Addr, err)
	}
	s.addr = ln.Addr()

	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = "smtpsink.local"
	srv.MaxMessageBytes = s.opts.MaxMessageBytes
	srv.MaxRecipients = 1000
	// Tests run without TLS; AUTH must still work.
	srv.AllowInsecureAuth = true
	srv.EnableSMTPUTF8 = true
	// Generous, so pooled clients see realistic idle drops only in long runs.
	srv.ReadTimeout = 5 * time.Minute
	srv.WriteTimeout = time.Minute
	srv.ErrorLog = slogAdapter{s.logger}
	s.server = srv

	go func() {
		defer close(s.served)
		if err := srv.Serve(ln); err != nil {
			s.logger.Error("smtpsink serve ended", "err", err)
		}
	}()
	s.logger.Debug("smtpsink listening", "addr", s.addr.String())
	return nil
}

// Addr returns the host:port the sink is bound to, or "" before Start.
func (s *Sink) Addr() string {
	if s.addr == nil {
		return ""
	}
	return s.addr.String()
}

// Host returns the IP the sink is bound to.
func (s *Sink) Host() string {
	host, _, _ := net.SplitHostPort(s.Addr())
	return host
}

// Port returns the TCP port the sink is bound to.
func (s *Sink) Port() int {
	_, port, _ := net.SplitHostPort(s.Addr())
	p, _ := strconv.Atoi(port)
	return p
}

// Stop closes the listener and every open connection, abandoning in-flight
// transactions, and waits (bounded by ctx) for the accept loop to exit.
// Pooled clients keep sessions open indefinitely, so a graceful drain would
// never finish.
func (s *Sink) Stop(ctx context.Context) error {
	var err error
	s.stopOnce.Do(func() {
		close(s.stop)
		if s.server == nil {
			return
		}
		if cerr := s.server.Close(); cerr != nil {
			err = fmt.Errorf("closing smtp server: %w", cerr)
		}
	})
	if s.server == nil {
		return err
	}
	select {
	case <-s.served:
	case <-ctx.Done():
		return fmt.Errorf("waiting for smtpsink to stop: %w", ctx.Err())
	}
	return err
}

// Stats returns a snapshot of the counters.
func (s *Sink) Stats() Stats {
	return Stats{
		Connections: s.connections.Load(),
		Messages:    s.messages.Load(),
		Rejected:    s.rejected.Load(),
		Dropped:     s.dropped.Load(),
	}
}

// Messages returns copies of the accepted messages; it is empty unless
// Options.Record is set.
func (s *Sink) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Message, len(s.recorded))
	for i, m := range s.recorded {
		out[i] = Message{
			From:     m.From,
			To:       append([]string(nil), m.To...),
			Data:     append([]byte(nil), m.Data...),
			Received: m.Received,
		}
	}
	return out
}

// WaitForMessages blocks until at least n messages have been accepted or ctx
// is done.
func (s *Sink) WaitForMessages(ctx context.Context, n int) error {
	w := waiter{n: int64(n), done: make(chan struct{})}
	s.mu.Lock()
	if s.messages.Load() >= w.n {
		s.mu.Unlock()
		return nil
	}
	s.waiters = append(s.waiters, w)
	s.nWaiters.Add(1)
	s.mu.Unlock()

	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for i := range s.waiters {
			if s.waiters[i].done == w.done {
				s.waiters = append(s.waiters[:i], s.waiters[i+1:]...)
				s.nWaiters.Add(-1)
				break
			}
		}
		s.mu.Unlock()
		return fmt.Errorf("waiting for %d messages (have %d): %w", n, s.messages.Load(), ctx.Err())
	}
}

// accepted counts (and maybe records) a message and wakes satisfied waiters.
func (s *Sink) accepted(m *Message) {
	if m != nil {
		s.mu.Lock()
		s.recorded = append(s.recorded, *m)
		s.mu.Unlock()
	}
	total := s.messages.Add(1)
	if s.nWaiters.Load() == 0 {
		return
	}
	s.mu.Lock()
	kept := s.waiters[:0]
	for _, w := range s.waiters {
		if total >= w.n {
			close(w.done)
			s.nWaiters.Add(-1)
			continue
		}
		kept = append(kept, w)
	}
	s.waiters = kept
	s.mu.Unlock()
}

// sleep waits d, returning early (false) when the sink is stopping so Stop
// does not hang on slow messages.
func (s *Sink) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.stop:
		return false
	}
}

func (s *Sink) newSession(c *smtp.Conn) (smtp.Session, error) {
	s.connections.Add(1)
	return &session{sink: s, conn: c}, nil
}

// fate is what happens to the current message.
type fate uint8

const (
	fateAccept fate = iota
	fateTempFail
	fatePermFail
	fateDataFail
	fateDrop
)

var (
	errTempFail = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "temporary failure, try again later"}
	errPermFail = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "user unknown"}
	errDataFail = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "message content rejected"}
)

// session is one SMTP connection's state; it is reused across the messages
// of that connection to keep per-message allocation low.
type session struct {
	sink   *Sink
	conn   *smtp.Conn
	authed bool

	from string
	to   []string
	fate fate
	slow bool
	// counted makes a message with several refused recipients count once.
	counted bool
}

func (ss *session) AuthMechanisms() []string { return []string{sasl.Plain} }

func (ss *session) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(_, username, password string) error {
		o := ss.sink.opts
		if o.Username != "" && (username != o.Username || password != o.Password) {
			return smtp.ErrAuthFailed
		}
		ss.authed = true
		return nil
	}), nil
}

func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	if ss.sink.opts.Username != "" && !ss.authed {
		return smtp.ErrAuthRequired
	}
	ss.resetMessage()
	ss.from = from
	o := &ss.sink.opts
	if o.TempFailRate > 0 || o.PermFailRate > 0 || o.DropAfterDataRate > 0 {
		// One draw split into bands keeps the rates exact shares of all messages.
		switch r := rand.Float64(); {
		case r < o.TempFailRate:
			ss.fate = fateTempFail
		case r < o.TempFailRate+o.PermFailRate:
			ss.fate = fatePermFail
		case r < o.TempFailRate+o.PermFailRate+o.DropAfterDataRate:
			ss.fate = fateDrop
		}
	}
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	local, _, _ := strings.Cut(to, "@")
	switch {
	case strings.EqualFold(local, "tempfail"):
		return ss.reject(errTempFail)
	case strings.EqualFold(local, "permfail"):
		return ss.reject(errPermFail)
	case strings.EqualFold(local, "datafail"):
		ss.fate = fateDataFail
	case strings.EqualFold(local, "drop"):
		ss.fate = fateDrop
	case strings.EqualFold(local, "slow"):
		ss.slow = true
	}
	switch ss.fate {
	case fateTempFail:
		return ss.reject(errTempFail)
	case fatePermFail:
		return ss.reject(errPermFail)
	}
	if ss.sink.opts.Record {
		ss.to = append(ss.to, to)
	}
	return nil
}

func (ss *session) reject(err error) error {
	if !ss.counted {
		ss.counted = true
		ss.sink.rejected.Add(1)
	}
	return err
}

func (ss *session) Data(r io.Reader) error {
	s := ss.sink
	var data []byte
	var err error
	if s.opts.Record {
		data, err = io.ReadAll(r)
	} else {
		_, err = io.Copy(io.Discard, r)
	}
	if err != nil {
		// Typically the size limit; go-smtp maps *SMTPError to its reply.
		return ss.reject(err)
	}

	switch ss.fate {
	case fateDrop:
		s.dropped.Add(1)
		// Close the socket under go-smtp: the reply it then writes is lost,
		// which is exactly the "delivered or not?" case clients must handle.
		_ = ss.conn.Conn().Close()
		return errors.New("connection dropped on purpose")
	case fateDataFail:
		return ss.reject(errDataFail)
	}

	delay := s.opts.Delay
	if ss.slow {
		delay = max(delay, SlowDelay)
	}
	if delay > 0 && !s.sleep(delay) {
		return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "shutting down"}
	}

	if !s.opts.Record {
		s.accepted(nil)
		return nil
	}
	s.accepted(&Message{From: ss.from, To: ss.to, Data: data, Received: time.Now()})
	// The recorded message owns the slice now.
	ss.to = nil
	return nil
}

func (ss *session) Reset() { ss.resetMessage() }

func (ss *session) Logout() error { return nil }

func (ss *session) resetMessage() {
	ss.from = ""
	ss.to = ss.to[:0]
	ss.fate = fateAccept
	ss.slow = false
	ss.counted = false
}

// slogAdapter lets go-smtp's Printf-style error log reach the slog logger.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Printf(format string, v ...any) {
	a.l.Warn("smtpsink: " + fmt.Sprintf(format, v...))
}

func (a slogAdapter) Println(v ...any) {
	a.l.Warn("smtpsink: " + strings.TrimSuffix(fmt.Sprintln(v...), "\n"))
}
