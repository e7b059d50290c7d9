// Package groupcommit lets many goroutines share round trips to the
// database. A caller hands over its request and waits for its result;
// meanwhile a flusher does every request waiting at that moment with one
// call for them all. Under load dozens of requests share one statement and
// one commit; when idle a request goes out at once, with no added delay.
//
// The send workers' email reads and status writes (jobs) and the API's
// accepts (store) use it.
package groupcommit

import (
	"context"
	"log/slog"
	"sync"
)

// Config says how a Batcher does its work.
type Config[Req, Res any] struct {
	// Name names the batcher in logs.
	Name   string
	Logger *slog.Logger
	// MaxBatch caps the requests of one call of Many (at least 1).
	MaxBatch int
	// Flushers is how many batches may be in flight at once (default 2:
	// one collects while another is at the database).
	Flushers int
	// Many does a batch; its i-th result answers the i-th request. An
	// error fails the whole batch.
	Many func(ctx context.Context, reqs []Req) ([]Result[Res], error)
	// Single does one request: after a failed batch, and after Stop.
	Single func(ctx context.Context, req Req) (Res, error)
	// Retry says whether the requests of a batch that failed with err may
	// be done again one by one, so that only the bad one fails: true when
	// the failure left nothing behind. When false (the outcome is unknown,
	// say a failed commit), every request gets err. Nil means always.
	Retry func(err error) bool
}

// Result is the outcome of one request.
type Result[Res any] struct {
	Value Res
	Err   error
}

// Batcher runs requests in shared batches. Start it before use.
type Batcher[Req, Res any] struct {
	cfg  Config[Req, Res]
	reqs chan *item[Req, Res]
	wg   sync.WaitGroup

	// mu guards closing reqs: Do holds it for reading while it hands a
	// request over, Stop for writing while it closes the channel.
	mu     sync.RWMutex
	closed bool
}

type item[Req, Res any] struct {
	ctx context.Context
	req Req
	res chan Result[Res]
}

// New returns a batcher doing its work as cfg says.
func New[Req, Res any](cfg Config[Req, Res]) *Batcher[Req, Res] {
	cfg.MaxBatch = max(1, cfg.MaxBatch)
	if cfg.Flushers < 1 {
		cfg.Flushers = 2
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Batcher[Req, Res]{cfg: cfg, reqs: make(chan *item[Req, Res], 4*cfg.MaxBatch)}
}

// Start runs the flushers until Stop.
func (b *Batcher[Req, Res]) Start() {
	for range b.cfg.Flushers {
		b.wg.Go(b.run)
	}
}

// Stop finishes the requests already handed over and stops the flushers.
// Do still works afterwards, one request at a time: a send that outlived
// a forced shutdown must still have its outcome recorded.
func (b *Batcher[Req, Res]) Stop() {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.reqs)
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// Do runs req, batched with whatever else is waiting.
func (b *Batcher[Req, Res]) Do(ctx context.Context, req Req) (Res, error) {
	it := &item[Req, Res]{ctx: ctx, req: req, res: make(chan Result[Res], 1)}
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return b.cfg.Single(ctx, req)
	}
	select {
	case b.reqs <- it:
	case <-ctx.Done():
		b.mu.RUnlock()
		var zero Res
		return zero, ctx.Err()
	}
	b.mu.RUnlock()
	// Once handed over, the request may be done whatever ctx does, so wait
	// for its outcome rather than guess it.
	r := <-it.res
	return r.Value, r.Err
}

func (b *Batcher[Req, Res]) run() {
	batch := make([]*item[Req, Res], 0, b.cfg.MaxBatch)
	for first := range b.reqs {
		batch = append(batch[:0], first)
	collect:
		for len(batch) < b.cfg.MaxBatch {
			select {
			case it, ok := <-b.reqs:
				if !ok {
					break collect
				}
				batch = append(batch, it)
			default:
				break collect // take only what is already waiting: never delay a request
			}
		}
		b.flush(batch)
	}
}

func (b *Batcher[Req, Res]) flush(batch []*item[Req, Res]) {
	reqs := make([]Req, len(batch))
	for i, it := range batch {
		reqs[i] = it.req
	}
	// The batch belongs to no single request: one caller going away must
	// not cancel the others' work.
	res, err := b.cfg.Many(context.Background(), reqs)
	if err == nil {
		for i, it := range batch {
			it.res <- res[i]
		}
		return
	}
	if b.cfg.Retry != nil && !b.cfg.Retry(err) {
		for _, it := range batch {
			it.res <- Result[Res]{Err: err}
		}
		return
	}
	if len(batch) > 1 {
		b.cfg.Logger.Warn(b.cfg.Name+": batch failed; doing its requests one by one", "error", err, "count", len(batch))
	}
	for _, it := range batch {
		v, err := b.cfg.Single(context.WithoutCancel(it.ctx), it.req)
		it.res <- Result[Res]{Value: v, Err: err}
	}
}

// Values turns a batch's values into results with no errors: for Many
// functions that fail or succeed as a whole.
func Values[Res any](vs []Res, err error) ([]Result[Res], error) {
	if err != nil {
		return nil, err
	}
	out := make([]Result[Res], len(vs))
	for i, v := range vs {
		out[i].Value = v
	}
	return out, nil
}
