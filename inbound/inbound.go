// Package inbound is the SMTP server that receives what comes back from the
// mail system: delivery status notifications (bounces, RFC 3464) and
// feedback reports (complaints, RFC 5965), sent to MQ_INBOUND_ADDR.
//
// The server only accepts and hands over; what a message means is decided by
// the Handler, so the listener stays small and the parsing can be tested on
// its own.
package inbound

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/emersion/go-smtp"
)

// MaxMessageBytes caps one inbound message; reports are small.
const MaxMessageBytes = 10 << 20

// Message is one received message.
type Message struct {
	From       string
	To         []string
	Data       []byte
	RemoteAddr string
	Received   time.Time
}

// Handler takes a received message. An error makes the server answer with a
// temporary failure, so the sender keeps the message and tries again.
type Handler interface {
	HandleInbound(ctx context.Context, m *Message) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, m *Message) error

// HandleInbound calls f.
func (f HandlerFunc) HandleInbound(ctx context.Context, m *Message) error { return f(ctx, m) }

// Server listens for inbound SMTP.
type Server struct {
	addr    string
	handler Handler
	logger  *slog.Logger
	srv     *smtp.Server
	ln      net.Listener
	done    chan struct{}
}

// New returns a Server for addr (host:port) passing messages to h.
func New(addr string, h Handler, logger *slog.Logger) *Server {
	s := &Server{addr: addr, handler: h, logger: logger, done: make(chan struct{})}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &session{server: s, remote: c.Conn().RemoteAddr().String()}, nil
	}))
	srv.Domain = "localhost"
	srv.MaxMessageBytes = MaxMessageBytes
	srv.MaxRecipients = 100
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	srv.EnableSMTPUTF8 = true
	s.srv = srv
	return s
}

// Start listens and serves in the background.
func (s *Server) Start(ctx context.Context) error {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", s.addr)
	if err != nil {
		return fmt.Errorf("inbound: listening on %s: %w", s.addr, err)
	}
	s.ln = ln
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, smtp.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			s.logger.Error("inbound SMTP server stopped", "error", err)
		}
	}()
	s.logger.Info("inbound SMTP listening", "addr", ln.Addr().String())
	return nil
}

// Addr returns the address the server listens on, once started.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Stop closes the listener and waits for open sessions to finish, up to
// ctx's deadline. The listener is closed here too, after go-smtp's
// Shutdown has marked the server done: when Stop follows Start so closely
// that go-smtp has not yet taken the listener over, Serve would otherwise
// wait forever for connections.
func (s *Server) Stop(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if errors.Is(err, smtp.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		err = nil
	}
	_ = s.ln.Close()
	select {
	case <-s.done:
	case <-ctx.Done():
		_ = s.srv.Close()
		if err == nil {
			err = ctx.Err()
		}
	}
	return err
}

type session struct {
	server *Server
	remote string
	from   string
	to     []string
}

func (s *session) Reset() { s.from, s.to = "", nil }

func (s *session) Logout() error { return nil }

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		return err
	}
	m := &Message{From: s.from, To: s.to, Data: buf.Bytes(), RemoteAddr: s.remote, Received: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.server.handler.HandleInbound(ctx, m); err != nil {
		s.server.logger.Error("inbound message not taken", "error", err, "from", s.from)
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
	}
	return nil
}
