package mail

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// TLS modes for Server.TLS.
const (
	// TLSNone uses STARTTLS if the server offers it, without certificate
	// verification, and plain SMTP otherwise. Empty means TLSNone.
	TLSNone = "none"
	// TLSStartTLS requires STARTTLS with a verified certificate.
	TLSStartTLS = "starttls"
	// TLSImplicit speaks TLS from the first byte (SMTPS, usually port 465).
	TLSImplicit = "tls"
)

// Defaults applied to zero Server fields.
const (
	// DefaultPoolSize is the connection cap when Server.PoolSize is 0.
	DefaultPoolSize = 4
	// DefaultTimeout is the I/O timeout when Server.Timeout is 0.
	DefaultTimeout = 30 * time.Second
	// DefaultIdleTimeout is the idle lifetime when Server.IdleTimeout is 0.
	DefaultIdleTimeout = 30 * time.Second
)

// Server is an SMTP relay to deliver through. It is comparable, and Pools
// keys on every field.
type Server struct {
	Host     string
	Port     int
	Username string
	Password string
	// TLS is TLSNone, TLSStartTLS or TLSImplicit.
	TLS string
	// PoolSize caps live connections; DefaultPoolSize when 0.
	PoolSize int
	// Timeout bounds dialling and each step of a transaction; DefaultTimeout when 0.
	Timeout time.Duration
	// HeloName is sent with EHLO; the local hostname when empty.
	HeloName string
	// IdleTimeout is how long a connection may sit unused before it is
	// closed rather than reused, because servers drop idle sessions and a
	// dead one costs a failed command; DefaultIdleTimeout when 0.
	IdleTimeout time.Duration
	// PublicOnly refuses to connect to loopback, private and link-local
	// addresses (ErrNonPublicAddress): set for servers a tenant chose.
	PublicOnly bool
}

func (s *Server) timeout() time.Duration {
	if s.Timeout > 0 {
		return s.Timeout
	}
	return DefaultTimeout
}

// PoolStats is a snapshot of a Pool.
type PoolStats struct {
	// Open is the number of live connections, idle or in use.
	Open int
	// Idle is the number of connections waiting to be reused.
	Idle int
	// Dials is the number of connection attempts made so far.
	Dials int64
}

// Pool keeps up to Server.PoolSize SMTP sessions to one server and reuses
// them across messages, so each email costs one mail transaction rather than
// a TCP, TLS, EHLO and AUTH handshake.
type Pool struct {
	srv         Server
	helo        string
	idleTimeout time.Duration
	logger      *slog.Logger

	// slots holds one token per connection in use; its capacity is PoolSize.
	slots     chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
	dials     atomic.Int64

	mu          sync.Mutex
	idle        []*conn // oldest first; reuse takes the newest
	open        int
	isClosed    bool
	reaper      *time.Timer
	reaperArmed bool
}

// NewPool returns an empty pool for srv; connections are dialled on demand.
func NewPool(srv Server, logger *slog.Logger) *Pool {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	size := srv.PoolSize
	if size <= 0 {
		size = DefaultPoolSize
	}
	helo := srv.HeloName
	if helo == "" {
		if h, err := os.Hostname(); err == nil && h != "" {
			helo = h
		} else {
			helo = "localhost"
		}
	}
	idleTimeout := srv.IdleTimeout
	if idleTimeout <= 0 {
		idleTimeout = DefaultIdleTimeout
	}
	return &Pool{
		srv:         srv,
		helo:        helo,
		idleTimeout: idleTimeout,
		logger:      logger.With("smtp_host", srv.Host, "smtp_port", srv.Port),
		slots:       make(chan struct{}, size),
		closed:      make(chan struct{}),
	}
}

// Send delivers m over a pooled connection, dialling one if fewer than
// PoolSize are open and none is idle, and otherwise waiting for one to be
// returned (or ctx to end). Every failure is a *SendError.
func (p *Pool) Send(ctx context.Context, m *Message) error {
	msg, err := Build(m)
	if err != nil {
		return &SendError{Stage: StageMail, Permanent: true, Err: err}
	}
	if p.isClosedNow() {
		return &SendError{Stage: StageConnect, Err: ErrPoolClosed}
	}
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return &SendError{Stage: StageConnect, Err: fmt.Errorf("waiting for a pooled connection: %w", ctx.Err())}
	case <-p.closed:
		return &SendError{Stage: StageConnect, Err: ErrPoolClosed}
	}
	defer func() { <-p.slots }()
	if p.isClosedNow() {
		return &SendError{Stage: StageConnect, Err: ErrPoolClosed}
	}

	for attempt := 0; ; attempt++ {
		c := p.takeIdle()
		reused := c != nil
		if c == nil {
			if c, err = p.dial(ctx); err != nil {
				return err
			}
		}
		reusable, se := c.send(ctx, msg, p.srv.timeout())
		if reusable {
			p.putIdle(c)
		} else {
			p.discard(c)
		}
		if se == nil {
			return nil
		}
		// A session that died while idle fails at MAIL without a reply (or with
		// 421). Nothing was committed, so one retry on a fresh connection is
		// safe and hides server-side idle timeouts from the caller.
		if reused && attempt == 0 && se.Stage == StageMail && (se.Code == 0 || se.Code == 421) && ctx.Err() == nil {
			p.logger.DebugContext(ctx, "pooled smtp connection was stale, redialling", "err", se.Err)
			continue
		}
		return se
	}
}

func (p *Pool) dial(ctx context.Context) (*conn, error) {
	p.dials.Add(1)
	c, err := dial(ctx, &p.srv, p.helo)
	if err != nil {
		p.logger.DebugContext(ctx, "smtp dial failed", "err", err)
		return nil, err
	}
	p.mu.Lock()
	p.open++
	closed := p.isClosed
	p.mu.Unlock()
	if closed {
		p.discard(c)
		return nil, &SendError{Stage: StageConnect, Err: ErrPoolClosed}
	}
	return c, nil
}

// takeIdle returns the most recently used idle connection, closing any that
// have been idle too long.
func (p *Pool) takeIdle() *conn {
	p.mu.Lock()
	var stale []*conn
	var c *conn
	for n := len(p.idle); n > 0; n = len(p.idle) {
		last := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		if time.Since(last.lastUsed) > p.idleTimeout {
			stale = append(stale, last)
			p.open--
			continue
		}
		c = last
		break
	}
	p.mu.Unlock()
	for _, s := range stale {
		// QUIT to a server that may be gone should not delay this send.
		go s.close()
	}
	return c
}

func (p *Pool) putIdle(c *conn) {
	c.lastUsed = time.Now()
	p.mu.Lock()
	if p.isClosed {
		p.open--
		p.mu.Unlock()
		c.close()
		return
	}
	p.idle = append(p.idle, c)
	if !p.reaperArmed {
		p.reaperArmed = true
		if p.reaper == nil {
			p.reaper = time.AfterFunc(p.idleTimeout, p.reap)
		} else {
			p.reaper.Reset(p.idleTimeout)
		}
	}
	p.mu.Unlock()
}

// discard drops a connection whose protocol state is unknown; QUIT would be
// pointless, so the socket is just closed.
func (p *Pool) discard(c *conn) {
	p.mu.Lock()
	p.open--
	p.mu.Unlock()
	_ = c.raw.Close()
}

// reap closes connections idle past the timeout even when no Send comes
// along, so an unused pool (e.g. superseded by a config change) lets go of
// its server sessions.
func (p *Pool) reap() {
	p.mu.Lock()
	var stale []*conn
	kept := p.idle[:0]
	oldest := time.Time{}
	for _, c := range p.idle {
		if time.Since(c.lastUsed) > p.idleTimeout {
			stale = append(stale, c)
			continue
		}
		if oldest.IsZero() || c.lastUsed.Before(oldest) {
			oldest = c.lastUsed
		}
		kept = append(kept, c)
	}
	clear(p.idle[len(kept):])
	p.idle = kept
	p.open -= len(stale)
	p.reaperArmed = false
	if len(p.idle) > 0 && !p.isClosed {
		p.reaperArmed = true
		p.reaper.Reset(time.Until(oldest.Add(p.idleTimeout)) + time.Millisecond)
	}
	p.mu.Unlock()
	for _, c := range stale {
		c.close()
	}
}

// Close closes idle connections, makes in-flight sends close theirs when
// done, and makes later Sends fail with ErrPoolClosed.
func (p *Pool) Close() error {
	p.closeOnce.Do(func() {
		close(p.closed)
		p.mu.Lock()
		p.isClosed = true
		idle := p.idle
		p.idle = nil
		p.open -= len(idle)
		if p.reaper != nil {
			p.reaper.Stop()
		}
		p.mu.Unlock()

		var wg sync.WaitGroup
		for _, c := range idle {
			wg.Go(c.close)
		}
		wg.Wait()
	})
	return nil
}

func (p *Pool) isClosedNow() bool {
	select {
	case <-p.closed:
		return true
	default:
		return false
	}
}

// Stats returns a snapshot of the pool's connections.
func (p *Pool) Stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PoolStats{Open: p.open, Idle: len(p.idle), Dials: p.dials.Load()}
}
