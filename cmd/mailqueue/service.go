package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // served only when MQ_PPROF_ADDR is set
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/mailqueue/mailqueue/config"
	"github.com/mailqueue/mailqueue/handlers"
	"github.com/mailqueue/mailqueue/inbound"
	"github.com/mailqueue/mailqueue/jobs"
	"github.com/mailqueue/mailqueue/mail"
	"github.com/mailqueue/mailqueue/ratelimit"
	"github.com/mailqueue/mailqueue/secret"
	"github.com/mailqueue/mailqueue/store"
)

// runCommand runs one subcommand until ctx ends (SIGINT/SIGTERM), then
// shuts its parts down in order: stop taking requests, let in-flight sends
// finish (up to MQ_SHUTDOWN_TIMEOUT), then close connections.
func runCommand(ctx context.Context, cmd string, cfg *config.Config, logger *slog.Logger) error {
	pool, err := connect(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()

	if cmd == "migrate" {
		if err := store.Migrate(ctx, pool, logger, time.Now()); err != nil {
			return err
		}
		logger.Info("database is up to date")
		return nil
	}
	if err := store.CheckMigrated(ctx, pool); err != nil {
		return err
	}

	if cfg.PprofAddr != "" {
		go func() {
			// DefaultServeMux carries net/http/pprof's handlers.
			err := http.ListenAndServe(cfg.PprofAddr, http.DefaultServeMux)
			logger.Warn("profiler stopped", "error", err)
		}()
	}

	serve := cmd == "serve" || cmd == "all"
	work := cmd == "work" || cmd == "all"
	receive := cmd == "inbound" || cmd == "all"

	redis := ratelimit.NewClient(cfg.RedisAddrs)
	defer redis.Close()
	// One circuit breaker per process; its state is shared through Redis.
	breaker := ratelimit.NewBreaker(redis, cfg.RedisPrefix)
	breaker.OpenAfter, breaker.OpenFor, breaker.CloseAfter = cfg.BreakerFailures, cfg.BreakerOpenFor, cfg.BreakerSuccesses
	// One limiter for the API and the workers of this process, so both
	// fall back to in-process limits, and come back, together.
	limiter := ratelimit.New(redis, ratelimit.Options{
		Prefix: cfg.RedisPrefix, Global: cfg.GlobalRateLimit, API: cfg.APIRateLimit,
		Processes: cfg.RateLimitProcesses, Logger: logger,
	})

	var box *secret.Box
	if key := cfg.EncryptionKeyBytes(); key != nil {
		if box, err = secret.NewBox(key, cfg.PreviousEncryptionKeys()...); err != nil {
			return fmt.Errorf("MQ_ENCRYPTION_KEY: %w", err)
		}
	}

	// The River client inserts jobs for the API and, in worker processes,
	// also runs them. One client serves both in `all`.
	enqueuer := &lateEnqueuer{}
	st := store.New(pool, enqueuer)
	riverCfg := &river.Config{
		Logger: logger, RescueStuckJobsAfter: cfg.JobRescueAfter, FetchCooldown: cfg.FetchCooldown,
		ReindexerIndexNames: jobs.ReindexerIndexNames(),
	}
	var pools *mail.Pools
	var transitions *jobs.TransitionWriter
	var reader *jobs.EmailReader
	if work {
		pools = mail.NewPools(logger)
		defer pools.CloseAll()
		defaultServer, err := defaultSMTPServer(cfg)
		if err != nil {
			return err
		}
		workers := river.NewWorkers()
		transitions = jobs.NewTransitionWriter(st, logger, 256)
		reader = jobs.NewEmailReader(st, logger, 256)
		river.AddWorker(workers, &jobs.SendWorker{
			Transitions: transitions, Reader: reader,
			Store: st, Sender: jobs.PoolSender{Pools: pools}, Box: box, DefaultServer: defaultServer, Logger: logger,
			SMTP:        &jobs.SMTPResolver{Store: st, Box: box, Default: defaultServer, AllowPrivate: cfg.SMTPAllowPrivate},
			Unsubscribe: mail.NewUnsubscribe(cfg.PublicURL, cfg.InboundMailDomain(), cfg.EncryptionKeyBytes(), cfg.PreviousEncryptionKeys()...),
			Breaker:     breaker,
			Limits:      limiter,
		})
		river.AddWorker(workers, &jobs.PartitionWorker{Pool: pool, Logger: logger})
		river.AddWorker(workers, &jobs.CleanupWorker{Store: st, Logger: logger})
		river.AddWorker(workers, &jobs.ScheduleWorker{Store: st, Logger: logger})
		riverCfg.Workers = workers
		riverCfg.Queues = jobs.QueueConfig(cfg.Workers)
		riverCfg.PeriodicJobs = []*river.PeriodicJob{jobs.PartitionPeriodicJob(), jobs.CleanupPeriodicJob()}
		riverCfg.PeriodicJobs = append(riverCfg.PeriodicJobs, jobs.SchedulePeriodicJob(cfg.ScheduleInterval))
	}
	client, err := river.NewClient(riverpgxv5.New(pool), riverCfg)
	if err != nil {
		return fmt.Errorf("creating River client: %w", err)
	}
	enqueuer.Enqueuer = jobs.NewEnqueuer(client)

	var stops []func(context.Context) error
	stopAll := func() error {
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		var errs []error
		for i := len(stops) - 1; i >= 0; i-- {
			errs = append(errs, stops[i](sctx))
		}
		return errors.Join(errs...)
	}

	if work {
		transitions.Start()
		reader.Start()
		// Stopped after the workers (stops run in reverse order), so every
		// status of a finished send is written.
		stops = append(stops, func(context.Context) error { transitions.Stop(); reader.Stop(); return nil })
		// Not ctx: cancelling River's start context cancels running jobs,
		// and a signal must let in-flight sends finish (Stop, below).
		if err := client.Start(context.WithoutCancel(ctx)); err != nil {
			return fmt.Errorf("starting workers: %w", err)
		}
		stops = append(stops, func(sctx context.Context) error {
			logger.Info("stopping workers; waiting for in-flight sends")
			if err := client.Stop(sctx); err != nil {
				logger.Warn("in-flight sends did not finish in time; cancelling them", "error", err)
				cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				return client.StopAndCancel(cctx)
			}
			return nil
		})
		logger.Info("workers started", "workers", cfg.Workers, "default_smtp", cfg.DefaultSMTPURL)
	}
	if receive {
		var handler inbound.Handler = inbound.HandlerFunc(func(_ context.Context, m *inbound.Message) error {
			// Bounce and complaint parsing is a later step; until then each
			// report is logged so nothing arrives unseen.
			logger.Info("inbound message received", "from", m.From, "to", m.To, "bytes", len(m.Data), "remote_addr", m.RemoteAddr)
			return nil
		})
		if key := cfg.EncryptionKeyBytes(); key != nil { // List-Unsubscribe mailto tokens need it
			handler = inbound.Unsubscribes(st, mail.NewUnsubscribe(cfg.PublicURL, cfg.InboundMailDomain(), key, cfg.PreviousEncryptionKeys()...), logger, handler)
		}
		srv := inbound.New(cfg.InboundAddr, handler, logger)
		if err := srv.Start(ctx); err != nil {
			_ = stopAll()
			return err
		}
		stops = append(stops, srv.Stop)
	}
	if serve {
		uiCtx, cancelUI := context.WithCancel(context.Background())
		defer cancelUI()
		h, err := handlers.New(uiCtx, handlers.Deps{
			Config: cfg, Store: st, Redis: redis, River: client, Box: box, Logger: logger, Version: version,
			Breaker: breaker, Dedup: ratelimit.NewDedup(redis, cfg.RedisPrefix), Limiter: limiter,
		})
		if err != nil {
			_ = stopAll()
			return err
		}
		ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.HTTPAddr)
		if err != nil {
			_ = stopAll()
			return fmt.Errorf("listening on MQ_HTTP_ADDR %s: %w", cfg.HTTPAddr, err)
		}
		httpSrv := &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       60 * time.Second,
			WriteTimeout:      60 * time.Second,
			IdleTimeout:       120 * time.Second,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		}
		go func() {
			if err := httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error("HTTP server stopped", "error", err)
			}
		}()
		stops = append(stops, httpSrv.Shutdown)
		logger.Info("API listening", "addr", ln.Addr().String(), "river_ui", "/riverui/")
	}

	<-ctx.Done()
	logger.Info("shutting down")
	return stopAll()
}

// connect opens the PostgreSQL pool and checks it answers, so a wrong URL
// fails at start with a clear message rather than on the first request.
func connect(ctx context.Context, cfg *config.Config) (*pgxpool.Pool, error) {
	pcfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("MQ_DATABASE_URL: %w", err)
	}
	pcfg.MaxConns = cfg.DBMaxConns
	store.ConfigurePool(pcfg)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to PostgreSQL at %s: %w", pcfg.ConnConfig.Host, err)
	}
	return pool, nil
}

func defaultSMTPServer(cfg *config.Config) (mail.Server, error) {
	u, err := config.ParseSMTPURL(cfg.DefaultSMTPURL)
	if err != nil {
		return mail.Server{}, fmt.Errorf("MQ_DEFAULT_SMTP_URL: %w", err)
	}
	return mail.Server{
		Host: u.Host, Port: u.Port, Username: u.Username, Password: u.Password, TLS: u.TLS,
		PoolSize: cfg.DefaultSMTPPoolSize, Timeout: 30 * time.Second,
	}, nil
}

// lateEnqueuer lets the store be built before the River client that needs
// the store's workers; it is filled in once the client exists.
type lateEnqueuer struct {
	*jobs.Enqueuer
}

func (l *lateEnqueuer) EnqueueSendTx(ctx context.Context, tx pgx.Tx, e *store.Email) (int64, error) {
	return l.Enqueuer.EnqueueSendTx(ctx, tx, e)
}
