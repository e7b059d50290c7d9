// Package handlers implements Mail Queue's HTTP API: the Handler and
// SecurityHandler interfaces that ogen generates from openapi.yaml, one file
// per operation group, plus the River UI mounted beside them.
//
// Handlers decode, validate, call the store and shape the response; they
// hold no SQL. Errors become HTTP in one place, errors.go.
package handlers

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/riverqueue/river"
	"riverqueue.com/riverui"

	"github.com/mailqueue/mailqueue/config"
	"github.com/mailqueue/mailqueue/mail"
	"github.com/mailqueue/mailqueue/oas"
	"github.com/mailqueue/mailqueue/ratelimit"
	"github.com/mailqueue/mailqueue/secret"
	"github.com/mailqueue/mailqueue/store"
)

// Operations not implemented here are answered by oas.UnimplementedHandler,
// whose ht.ErrNotImplemented becomes a 501 with the JSON error body.
var (
	_ oas.Handler         = (*Handler)(nil)
	_ oas.SecurityHandler = (*Handler)(nil)
)

// Handler serves the API.
type Handler struct {
	oas.UnimplementedHandler

	cfg         *config.Config
	store       *store.Store
	redis       redis.UniversalClient
	logger      *slog.Logger
	version     string
	started     time.Time
	cursors     *cursors
	keys        *keyCache
	usage       *keyUsage // batches last_used_at writes
	adminDigest [32]byte
	box         *secret.Box
	unsub       *mail.Unsubscribe // List-Unsubscribe tokens
	breaker     *ratelimit.Breaker
	dedup       *ratelimit.Dedup
	limiter     *ratelimit.Limiter  // per-key API limits; nil = none
	accepts     *store.AcceptWriter // group commit of POST /v1/emails
	queues      *queueCache         // queues by name for POST /v1/emails
}

// acceptGroupMax is the most emails one group-commit transaction of
// POST /v1/emails stores.
const acceptGroupMax = 128

// Deps are what the API needs from the process that runs it.
type Deps struct {
	Config  *config.Config
	Store   *store.Store
	Redis   redis.UniversalClient
	River   *river.Client[pgx.Tx] // for the River UI
	Box     *secret.Box           // seals stored secrets (SMTP passwords)
	Logger  *slog.Logger
	Version string
	// Breaker is the SMTP circuit breaker shown by the detailed health
	// report; Dedup is the Idempotency-Key fast path. When nil, each is
	// built on Redis with ratelimit.DefaultPrefix.
	Breaker *ratelimit.Breaker
	Dedup   *ratelimit.Dedup
	// Limiter takes API keys' rate-limit tokens; nil builds one from
	// Config and Redis.
	Limiter *ratelimit.Limiter
}

// New returns the whole HTTP surface: the API generated from openapi.yaml
// and the River UI at /riverui/ behind the admin secret. The River UI runs
// background work until ctx ends.
func New(ctx context.Context, d Deps) (http.Handler, error) {
	logger := slog.New(requestLogHandler{d.Logger.Handler()})
	h := &Handler{
		cfg: d.Config, store: d.Store, redis: d.Redis, logger: logger, version: d.Version, box: d.Box,
		started:     time.Now(),
		cursors:     newCursors(append([]byte(d.Config.AdminSecret), d.Config.EncryptionKeyBytes()...)),
		keys:        newKeyCache(d.Store, time.Second),
		queues:      newQueueCache(d.Store, 10*time.Second),
		adminDigest: sha256.Sum256([]byte(d.Config.AdminSecret)),
		unsub: mail.NewUnsubscribe(d.Config.PublicURL, d.Config.InboundMailDomain(),
			d.Config.EncryptionKeyBytes(), d.Config.PreviousEncryptionKeys()...),
		limiter: limiterFrom(d),
	}
	h.usage = startKeyUsage(ctx, d.Store, logger)
	h.accepts = store.NewAcceptWriter(d.Store, logger, acceptGroupMax)
	h.accepts.Start()
	go func() {
		// Requests still running after this accept one by one.
		<-ctx.Done()
		h.accepts.Stop()
	}()
	if h.breaker = d.Breaker; h.breaker == nil {
		h.breaker = ratelimit.NewBreaker(d.Redis, ratelimit.DefaultPrefix)
	}
	if h.dedup = d.Dedup; h.dedup == nil {
		h.dedup = ratelimit.NewDedup(d.Redis, ratelimit.DefaultPrefix)
	}
	api, err := oas.NewServer(h, h,
		oas.WithErrorHandler(h.errorHandler),
		oas.WithNotFound(h.routeNotFound),
		oas.WithMethodNotAllowed(h.methodNotAllowed),
		oas.WithMiddleware(rejectUnstorableBodies),
	)
	if err != nil {
		return nil, fmt.Errorf("building API server: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/", withRateHeaders(api))
	mux.Handle("/v1/health/detailed", h.markHealthAdmin(api))
	mux.Handle("/metrics", h.metricsHandler())
	if d.River != nil {
		ui, err := riverui.NewHandler(&riverui.HandlerOpts{
			Endpoints: riverui.NewEndpoints(d.River, nil),
			Logger:    d.Logger,
			Prefix:    "/riverui",
		})
		if err != nil {
			return nil, fmt.Errorf("building River UI: %w", err)
		}
		if err := ui.Start(ctx); err != nil {
			return nil, fmt.Errorf("starting River UI: %w", err)
		}
		mux.Handle("/riverui/", h.requireAdmin(ui))
		mux.Handle("/riverui", http.RedirectHandler("/riverui/", http.StatusMovedPermanently))
	}
	return withRequest(mux, &transport{
		maxBody: d.Config.MaxBodyBytes, maxBatchBody: d.Config.MaxBatchBodyBytes,
		trustedProxies: d.Config.TrustedProxyPrefixes(), logger: d.Logger,
		writeErr: func(ctx context.Context, w http.ResponseWriter, err error) {
			h.writeError(ctx, w, h.NewError(ctx, err))
		},
	}), nil
}
