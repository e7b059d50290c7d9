package jobs

import (
	"context"
	"log/slog"
	"sync"

	"github.com/mailqueue/mailqueue/store"
)

// TransitionWriter records email status transitions for many send workers
// at once ("group commit"). A worker hands over its transition and waits
// until it is committed; meanwhile the writer applies every transition
// waiting at that moment in one pipelined transaction. Under load, dozens
// of emails share one round trip and one commit instead of paying for their
// own; when idle, a transition goes out at once, with no added delay.
//
// The worker still waits for its write, so an email's status is durable
// before River records its job as done: a crash can never leave a sent
// email looking unsent because of batching.
type TransitionWriter struct {
	store    *store.Store
	logger   *slog.Logger
	maxBatch int
	reqs     chan *transitionReq
	wg       sync.WaitGroup

	// mu guards closing reqs: Transition holds it for reading while it
	// hands a request over, Stop for writing while it closes the channel.
	mu     sync.RWMutex
	closed bool
}

type transitionReq struct {
	ctx context.Context
	p   *store.EmailTransitionParams
	res chan transitionRes
}

type transitionRes struct {
	moved bool
	err   error
}

// transitionFlushers is how many batches may be in flight at once: one
// collects while another commits.
const transitionFlushers = 2

// NewTransitionWriter returns a writer applying up to maxBatch transitions
// per transaction. Start it before use.
func NewTransitionWriter(st *store.Store, logger *slog.Logger, maxBatch int) *TransitionWriter {
	return &TransitionWriter{store: st, logger: logger, maxBatch: max(1, maxBatch), reqs: make(chan *transitionReq, 4*maxBatch)}
}

// Start runs the writer until Stop.
func (w *TransitionWriter) Start() {
	for range transitionFlushers {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.run()
		}()
	}
}

// Stop finishes the transitions already handed over and stops the writer.
// Call it after the workers have stopped; a worker that outlived a forced
// shutdown still has its outcome written, unbatched.
func (w *TransitionWriter) Stop() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.reqs)
	}
	w.mu.Unlock()
	w.wg.Wait()
}

// Transition applies p, batched with whatever else is waiting, and
// reports whether it applied (see store.EmailTransition).
func (w *TransitionWriter) Transition(ctx context.Context, p *store.EmailTransitionParams) (bool, error) {
	r := &transitionReq{ctx: ctx, p: p, res: make(chan transitionRes, 1)}
	w.mu.RLock()
	if w.closed {
		w.mu.RUnlock()
		// Stopped: a send that outlived shutdown must still be recorded,
		// or the email stays "processing" and is resent blind.
		return w.store.EmailTransition(ctx, p)
	}
	select {
	case w.reqs <- r:
	case <-ctx.Done():
		w.mu.RUnlock()
		return false, ctx.Err()
	}
	w.mu.RUnlock()
	// Once handed over, the write may happen whatever ctx does, so wait for
	// its outcome rather than guess it.
	res := <-r.res
	return res.moved, res.err
}

func (w *TransitionWriter) run() {
	batch := make([]*transitionReq, 0, w.maxBatch)
	for first := range w.reqs {
		batch = append(batch[:0], first)
	collect:
		for len(batch) < w.maxBatch {
			select {
			case r, ok := <-w.reqs:
				if !ok {
					break collect
				}
				batch = append(batch, r)
			default:
				break collect // take only what is already waiting: never delay a write
			}
		}
		w.flush(batch)
	}
}

func (w *TransitionWriter) flush(batch []*transitionReq) {
	ps := make([]*store.EmailTransitionParams, len(batch))
	for i, r := range batch {
		ps[i] = r.p
	}
	// The batch belongs to no single request: it must not be cancelled by
	// one worker's context.
	moved, err := w.store.EmailTransitionBatch(context.Background(), ps)
	if err == nil {
		for i, r := range batch {
			r.res <- transitionRes{moved: moved[i]}
		}
		return
	}
	// One bad transition fails the whole transaction: apply them one by one
	// so only the bad one reports an error.
	w.logger.Warn("batched status update failed; applying one by one", "error", err, "count", len(batch))
	for _, r := range batch {
		m, err := w.store.EmailTransition(context.WithoutCancel(r.ctx), r.p)
		r.res <- transitionRes{moved: m, err: err}
	}
}
