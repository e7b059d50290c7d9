package jobs

import (
	"context"
	"log/slog"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/groupcommit"
	"github.com/mailqueue/mailqueue/store"
)

// TransitionWriter records email status transitions for many send workers
// at once (groupcommit): every transition waiting at one moment is applied
// by one statement.
//
// The worker still waits for its write, so an email's status is durable
// before River records its job as done: a crash can never leave a sent
// email looking unsent because of batching.
type TransitionWriter struct {
	b *groupcommit.Batcher[*store.EmailTransitionParams, bool]
}

// NewTransitionWriter returns a writer applying up to maxBatch transitions
// per statement. Start it before use.
func NewTransitionWriter(st *store.Store, logger *slog.Logger, maxBatch int) *TransitionWriter {
	return &TransitionWriter{b: groupcommit.New(groupcommit.Config[*store.EmailTransitionParams, bool]{
		Name: "status writes", Logger: logger, MaxBatch: maxBatch,
		Many: func(ctx context.Context, ps []*store.EmailTransitionParams) ([]groupcommit.Result[bool], error) {
			return groupcommit.Values(st.EmailTransitionBatch(ctx, ps))
		},
		Single: st.EmailTransition,
	})}
}

// Start runs the writer until Stop.
func (w *TransitionWriter) Start() { w.b.Start() }

// Stop finishes the transitions already handed over and stops the writer.
// Call it after the workers have stopped; a worker that outlived a forced
// shutdown still has its outcome written, unbatched.
func (w *TransitionWriter) Stop() { w.b.Stop() }

// Transition applies p, batched with whatever else is waiting, and
// reports whether it applied (see store.EmailTransition).
func (w *TransitionWriter) Transition(ctx context.Context, p *store.EmailTransitionParams) (bool, error) {
	return w.b.Do(ctx, p)
}

// EmailReader reads the emails of many send workers with one query.
type EmailReader struct {
	b *groupcommit.Batcher[uuid.UUID, *store.EmailForSend]
}

// NewEmailReader returns a reader fetching up to maxBatch emails per query.
// Start it before use.
func NewEmailReader(st *store.Store, logger *slog.Logger, maxBatch int) *EmailReader {
	return &EmailReader{b: groupcommit.New(groupcommit.Config[uuid.UUID, *store.EmailForSend]{
		Name: "email reads", Logger: logger, MaxBatch: maxBatch,
		Many: func(ctx context.Context, ids []uuid.UUID) ([]groupcommit.Result[*store.EmailForSend], error) {
			return groupcommit.Values(st.EmailGetForSendMany(ctx, ids))
		},
		Single: st.EmailGetForSend,
	})}
}

// Start runs the reader until Stop.
func (r *EmailReader) Start() { r.b.Start() }

// Stop finishes the reads already handed over and stops the reader.
func (r *EmailReader) Stop() { r.b.Stop() }

// Get reads one email, batched with the other workers' reads. It returns
// store.ErrNotFound when the email does not exist.
func (r *EmailReader) Get(ctx context.Context, id uuid.UUID) (*store.EmailForSend, error) {
	e, err := r.b.Do(ctx, id)
	if err == nil && e == nil {
		return nil, store.ErrNotFound
	}
	return e, err
}
