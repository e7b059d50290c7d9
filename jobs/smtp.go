package jobs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/mail"
	"github.com/mailqueue/mailqueue/secret"
	"github.com/mailqueue/mailqueue/store"
)

// ErrSMTPConfigUnavailable means an email's queue names an SMTP config that
// is inactive or gone. The attempt fails temporarily: sending through the
// default server instead could put the app's mail out under another
// sender's reputation and credentials, which the app never agreed to.
var ErrSMTPConfigUnavailable = errors.New("smtp config unavailable")

// DefaultSMTPResolverTTL is how long a resolved SMTP config is reused when
// SMTPResolver.TTL is zero.
const DefaultSMTPResolverTTL = 10 * time.Second

// SMTPResolver finds the server an email goes through: its queue's SMTP
// config, or Default when the queue has none. Resolved configs are kept for
// TTL, so a busy queue reads and decrypts its config a few times a minute
// rather than once per email; an edit takes effect within TTL.
type SMTPResolver struct {
	Store *store.Store
	// Box opens the sealed passwords; with none, configs with a password
	// cannot be used.
	Box     *secret.Box
	Default mail.Server
	// AllowPrivate lets configs reach non-public addresses; otherwise their
	// servers are PublicOnly (see config.SMTPAllowPrivate).
	AllowPrivate bool
	// TTL is how long a resolution is reused; DefaultSMTPResolverTTL when
	// zero, and no caching when negative.
	TTL time.Duration

	mu    sync.Mutex
	cache map[uuid.UUID]resolved
}

// resolved is a cached resolution: a server, or the reason there is none.
type resolved struct {
	appID   uuid.UUID
	srv     mail.Server
	err     error
	expires time.Time
}

// maxResolverEntries bounds the cache; past it, expired entries are swept.
const maxResolverEntries = 1024

// Server returns the server for configID, one of appID's SMTP configs, or
// Default when configID is nil. An inactive or missing config, or one whose
// password cannot be opened, is an error wrapping ErrSMTPConfigUnavailable.
func (r *SMTPResolver) Server(ctx context.Context, appID uuid.UUID, configID *uuid.UUID) (mail.Server, error) {
	if configID == nil {
		return r.Default, nil
	}
	id := *configID
	now := time.Now()
	r.mu.Lock()
	e, ok := r.cache[id]
	r.mu.Unlock()
	if ok && e.appID == appID && now.Before(e.expires) {
		return e.srv, e.err
	}

	srv, err := r.load(ctx, appID, id)
	if err != nil && !errors.Is(err, ErrSMTPConfigUnavailable) {
		return mail.Server{}, err // a database hiccup: not worth remembering
	}
	if ttl := r.ttl(); ttl > 0 {
		r.mu.Lock()
		if r.cache == nil {
			r.cache = make(map[uuid.UUID]resolved)
		}
		if len(r.cache) >= maxResolverEntries {
			for k, v := range r.cache {
				if !now.Before(v.expires) {
					delete(r.cache, k)
				}
			}
		}
		r.cache[id] = resolved{appID: appID, srv: srv, err: err, expires: now.Add(ttl)}
		r.mu.Unlock()
	}
	return srv, err
}

func (r *SMTPResolver) ttl() time.Duration {
	if r.TTL == 0 {
		return DefaultSMTPResolverTTL
	}
	return r.TTL
}

// load reads config id and turns it into a Server.
func (r *SMTPResolver) load(ctx context.Context, appID, id uuid.UUID) (mail.Server, error) {
	c, err := r.Store.SMTPConfigGet(ctx, appID, id)
	if errors.Is(err, store.ErrNotFound) {
		return mail.Server{}, fmt.Errorf("smtp config %s no longer exists: %w", id, ErrSMTPConfigUnavailable)
	}
	if err != nil {
		return mail.Server{}, fmt.Errorf("reading smtp config %s: %w", id, err)
	}
	if !c.IsActive {
		return mail.Server{}, fmt.Errorf("smtp config %s (%s) is inactive: %w", c.Name, id, ErrSMTPConfigUnavailable)
	}
	srv := mail.Server{
		Host:        c.Host,
		Port:        int(c.Port),
		PoolSize:    int(c.PoolSize),
		Timeout:     time.Duration(c.TimeoutMS) * time.Millisecond,
		HeloName:    r.Default.HeloName,
		IdleTimeout: r.Default.IdleTimeout,
		PublicOnly:  !r.AllowPrivate,
	}
	switch c.Encryption {
	case "tls":
		srv.TLS = mail.TLSImplicit
	case "starttls":
		srv.TLS = mail.TLSStartTLS
	case "none":
		srv.TLS = mail.TLSNone
	default:
		return mail.Server{}, fmt.Errorf("smtp config %s has unknown encryption %q: %w", id, c.Encryption, ErrSMTPConfigUnavailable)
	}
	if c.Username != nil {
		srv.Username = *c.Username
	}
	if c.Password != nil {
		if r.Box == nil || c.PasswordKeyID == nil {
			return mail.Server{}, fmt.Errorf("smtp config %s: password cannot be opened without MQ_ENCRYPTION_KEY: %w", id, ErrSMTPConfigUnavailable)
		}
		pw, err := r.Box.Open(c.Password, *c.PasswordKeyID, store.SMTPPasswordContext(id))
		if err != nil {
			return mail.Server{}, fmt.Errorf("smtp config %s: opening password: %w: %w", id, err, ErrSMTPConfigUnavailable)
		}
		srv.Password = string(pw)
	}
	return srv, nil
}

// server picks the server for e. Without a resolver (tests that only use
// the default server), a config is still honoured, just not cached.
func (w *SendWorker) server(ctx context.Context, e *store.EmailForSend) (mail.Server, error) {
	r := w.SMTP
	if r == nil {
		if e.QueueSMTPConfigID == nil {
			return w.DefaultServer, nil
		}
		r = &SMTPResolver{Store: w.Store, Box: w.Box, Default: w.DefaultServer, TTL: -1}
	}
	return r.Server(ctx, e.AppID, e.QueueSMTPConfigID)
}
