package jobs_test

import (
	"context"
	"crypto/rand"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/mailqueue/mailqueue/bench/smtpsink"
	"github.com/mailqueue/mailqueue/jobs"
	"github.com/mailqueue/mailqueue/mail"
	"github.com/mailqueue/mailqueue/secret"
	"github.com/mailqueue/mailqueue/store"
	"github.com/mailqueue/mailqueue/testenv"
)

const relayUser, relayPassword = "relay-user", "relay-Pw-7731"

func newSealBox(t *testing.T) *secret.Box {
	t.Helper()
	var key [32]byte
	_, _ = rand.Read(key[:])
	box, err := secret.NewBox(key[:])
	if err != nil {
		t.Fatal(err)
	}
	return box
}

// insertSMTPConfig stores a config for appID pointing at sink, its
// password sealed as the API seals it.
func insertSMTPConfig(t *testing.T, st *store.Store, box *secret.Box, appID uuid.UUID, sink *smtpsink.Sink, password string) *store.SMTPConfig {
	t.Helper()
	id, _ := store.NewID()
	user := relayUser
	sealed, keyID := box.Seal([]byte(password), store.SMTPPasswordContext(id))
	c, err := st.SMTPConfigInsert(t.Context(), &store.SMTPConfig{
		ID: id, AppID: appID, Name: "relay " + id.String(), Host: sink.Host(), Port: int32(sink.Port()),
		Username: &user, Password: sealed, PasswordKeyID: &keyID,
		Encryption: "none", PoolSize: 2, TimeoutMS: 5000,
	})
	if err != nil {
		t.Fatalf("SMTPConfigInsert: %v", err)
	}
	return c
}

// newRelayHarness is the send pipeline of newHarness with an SMTP resolver:
// the default server is h.sink (A), and h.queue sends through an SMTP
// config pointing at relay (B), which demands AUTH.
func newRelayHarness(t *testing.T, ttl time.Duration) (h *harness, relay *smtpsink.Sink, cfg *store.SMTPConfig) {
	t.Helper()
	logger := testenv.Logger(t)
	ctx := t.Context()
	pool := testenv.DB(t)
	box := newSealBox(t)
	sinkA := testenv.SMTPSink(t, smtpsink.Options{Record: true, Logger: logger})
	relay = testenv.SMTPSink(t, smtpsink.Options{Record: true, Logger: logger, Username: relayUser, Password: relayPassword})

	pools := mail.NewPools(logger)
	t.Cleanup(func() { _ = pools.CloseAll() })
	enq := &lateEnqueuer{}
	st := store.New(pool, enq)
	def := mail.Server{Host: sinkA.Host(), Port: sinkA.Port(), PoolSize: 2, Timeout: 5 * time.Second}
	workers := river.NewWorkers()
	river.AddWorker(workers, &jobs.SendWorker{
		Store: st, Sender: jobs.PoolSender{Pools: pools}, Box: box, DefaultServer: def, Logger: logger,
		SMTP: &jobs.SMTPResolver{Store: st, Box: box, Default: def, TTL: ttl, AllowPrivate: true},
	})
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Queues: jobs.QueueConfig(8), Workers: workers, TestOnly: true, Logger: logger,
		FetchCooldown: 20 * time.Millisecond, FetchPollInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("creating River client: %v", err)
	}
	enq.Enqueuer = jobs.NewEnqueuer(client)
	if err := client.Start(ctx); err != nil {
		t.Fatalf("starting River client: %v", err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := client.Stop(sctx); err != nil {
			t.Errorf("stopping River client: %v", err)
		}
	})

	app, err := st.AppInsert(ctx, &store.AppInsertParams{Name: "relay test"})
	if err != nil {
		t.Fatalf("AppInsert: %v", err)
	}
	cfg = insertSMTPConfig(t, st, box, app.ID, relay, relayPassword)
	queue, err := st.QueueInsert(ctx, &store.QueueInsertParams{
		AppID: app.ID, Name: "relayed", Priority: 5, MaxRetries: 3,
		RetryDelay:   []int32{3600}, // one attempt per test: retries would blur what happened
		SMTPConfigID: &cfg.ID,
	})
	if err != nil {
		t.Fatalf("QueueInsert: %v", err)
	}
	return &harness{pool: pool, st: st, client: client, sink: sinkA, app: app, queue: queue}, relay, cfg
}

func TestSendUsesQueueSMTPConfig(t *testing.T) {
	t.Parallel()
	h, relay, cfg := newRelayHarness(t, 50*time.Millisecond)

	e := h.insert(t, h.params("first@example.com"))
	h.waitStatus(t, e.ID, store.StatusSent)
	// The relay refuses MAIL until AUTH PLAIN succeeded with exactly these
	// credentials, so a message there proves the password was decrypted.
	if msgs := relay.Messages(); len(msgs) != 1 || !slices.Equal(msgs[0].To, []string{"first@example.com"}) {
		t.Fatalf("relay received %+v, want the email", msgs)
	}
	if n := h.sink.Stats().Messages; n != 0 {
		t.Fatalf("default server received %d messages, want none", n)
	}
	if d := eventData(t, lastEvent(t, h.events(t, e.ID), "sent")); d["smtp_host"] != relay.Host() {
		t.Errorf("sent event data = %v, want smtp_host %s", d, relay.Host())
	}

	// Deactivated: the next email waits for a retry; it never falls back
	// to the default server.
	cfg.IsActive = false
	if _, err := h.st.SMTPConfigUpdate(t.Context(), cfg); err != nil {
		t.Fatalf("deactivating: %v", err)
	}
	time.Sleep(100 * time.Millisecond) // past the resolver's TTL
	e2 := h.insert(t, h.params("second@example.com"))
	got := h.waitEmail(t, e2.ID, "deferred", func(e *store.Email) bool {
		return e.Status == store.StatusQueued && e.LastError != nil
	})
	if !strings.Contains(*got.LastError, "inactive") || got.RetryCount != 1 {
		t.Errorf("last_error %q, retry_count %d; want the inactive config named, 1 attempt", *got.LastError, got.RetryCount)
	}
	if types := eventTypes(h.events(t, e2.ID)); !slices.Contains(types, "deferred") {
		t.Errorf("events %v, want a deferred attempt", types)
	}
	j := h.waitJob(t, *e2.JobID, "retryable")
	if j.Attempt != 1 {
		t.Errorf("job attempt %d, want 1", j.Attempt)
	}
	if n := h.sink.Stats().Messages; n != 0 {
		t.Errorf("default server received %d messages after deactivation, want none", n)
	}
	if n := relay.Stats().Messages; n != 1 {
		t.Errorf("relay received %d messages, want only the first", n)
	}
}

func TestSMTPResolver(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st := store.New(testenv.DB(t), nil)
	box := newSealBox(t)
	sink := testenv.SMTPSink(t, smtpsink.Options{})
	app, err := st.AppInsert(ctx, &store.AppInsertParams{Name: "resolver"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := st.AppInsert(ctx, &store.AppInsertParams{Name: "resolver other"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := insertSMTPConfig(t, st, box, app.ID, sink, relayPassword)
	def := mail.Server{Host: "default.example", Port: 25, HeloName: "mq.example"}
	r := &jobs.SMTPResolver{Store: st, Box: box, Default: def, TTL: time.Hour, AllowPrivate: true}

	if srv, err := r.Server(ctx, app.ID, nil); err != nil || srv != def {
		t.Errorf("no config: %+v, %v; want the default", srv, err)
	}
	want := mail.Server{
		Host: sink.Host(), Port: sink.Port(), Username: relayUser, Password: relayPassword,
		TLS: mail.TLSNone, PoolSize: 2, Timeout: 5 * time.Second, HeloName: "mq.example",
	}
	if srv, err := r.Server(ctx, app.ID, &cfg.ID); err != nil || srv != want {
		t.Errorf("config: %+v, %v; want %+v", srv, err, want)
	}

	// Within the TTL an edit is not seen: the cache saves the read.
	cfg.Encryption, cfg.TimeoutMS = "tls", 1000
	if _, err := st.SMTPConfigUpdate(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if srv, _ := r.Server(ctx, app.ID, &cfg.ID); srv != want {
		t.Errorf("cached: %+v, want %+v", srv, want)
	}
	fresh := &jobs.SMTPResolver{Store: st, Box: box, Default: def, TTL: -1, AllowPrivate: true}
	if srv, err := fresh.Server(ctx, app.ID, &cfg.ID); err != nil || srv.TLS != mail.TLSImplicit || srv.Timeout != time.Second {
		t.Errorf("uncached after edit: %+v, %v; want implicit TLS and 1s", srv, err)
	}

	// Another app's id never resolves, even though the config is cached.
	if _, err := r.Server(ctx, other.ID, &cfg.ID); !errors.Is(err, jobs.ErrSMTPConfigUnavailable) {
		t.Errorf("another app's config: %v, want ErrSMTPConfigUnavailable", err)
	}
	missing := uuid.Must(uuid.NewV7())
	if _, err := fresh.Server(ctx, app.ID, &missing); !errors.Is(err, jobs.ErrSMTPConfigUnavailable) {
		t.Errorf("missing config: %v, want ErrSMTPConfigUnavailable", err)
	}
	// A password sealed for another row does not open here.
	moved := insertSMTPConfig(t, st, box, app.ID, sink, "x")
	moved.Password, moved.PasswordKeyID = cfg.Password, cfg.PasswordKeyID
	if _, err := st.SMTPConfigUpdate(ctx, moved); err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.Server(ctx, app.ID, &moved.ID); !errors.Is(err, jobs.ErrSMTPConfigUnavailable) {
		t.Errorf("copied ciphertext: %v, want ErrSMTPConfigUnavailable", err)
	}
	noBox := &jobs.SMTPResolver{Store: st, Default: def, TTL: -1, AllowPrivate: true}
	if _, err := noBox.Server(ctx, app.ID, &cfg.ID); !errors.Is(err, jobs.ErrSMTPConfigUnavailable) {
		t.Errorf("no box: %v, want ErrSMTPConfigUnavailable", err)
	}

	// Unless the operator allows private addresses, an app's server is
	// dialled PublicOnly; the operator's default server never is.
	strict := &jobs.SMTPResolver{Store: st, Box: box, Default: def, TTL: -1}
	if srv, err := strict.Server(ctx, app.ID, &cfg.ID); err != nil || !srv.PublicOnly {
		t.Errorf("app config without AllowPrivate: %+v, %v; want PublicOnly", srv, err)
	}
	if srv, err := strict.Server(ctx, app.ID, nil); err != nil || srv.PublicOnly {
		t.Errorf("default server: %+v, %v; want it unrestricted", srv, err)
	}
}
