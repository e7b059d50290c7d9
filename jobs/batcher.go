package jobs

import (
	"context"
	"log/slog"
	"sync"
)

// batcher lets many send workers share round trips to PostgreSQL ("group
// commit"). A worker hands over its request and waits for its result;
// meanwhile a flusher does every request waiting at that moment with one
// call of many. Under load dozens of workers share one statement and one
// commit; when idle a request goes out at once, with no added delay.
//
// If the batch call fails, the requests are done one by one with single,
// so that one bad request fails only itself. After stop, requests are
// done one by one too: a send that outlived a forced shutdown must still
// have its outcome recorded.
type batcher[Req, Res any] struct {
	name     string
	logger   *slog.Logger
	many     func(context.Context, []Req) ([]Res, error)
	single   func(context.Context, Req) (Res, error)
	maxBatch int
	reqs     chan *batchItem[Req, Res]
	wg       sync.WaitGroup

	// mu guards closing reqs: do holds it for reading while it hands a
	// request over, stop for writing while it closes the channel.
	mu     sync.RWMutex
	closed bool
}

type batchItem[Req, Res any] struct {
	ctx context.Context
	req Req
	res chan batchResult[Res]
}

type batchResult[Res any] struct {
	v   Res
	err error
}

// batchFlushers is how many batches may be in flight at once: one
// collects while another is at the database.
const batchFlushers = 2

func newBatcher[Req, Res any](name string, logger *slog.Logger, maxBatch int,
	many func(context.Context, []Req) ([]Res, error), single func(context.Context, Req) (Res, error)) *batcher[Req, Res] {
	maxBatch = max(1, maxBatch)
	return &batcher[Req, Res]{name: name, logger: logger, many: many, single: single, maxBatch: maxBatch,
		reqs: make(chan *batchItem[Req, Res], 4*maxBatch)}
}

func (b *batcher[Req, Res]) start() {
	for range batchFlushers {
		b.wg.Go(b.run)
	}
}

// stop finishes the requests already handed over and stops the flushers.
func (b *batcher[Req, Res]) stop() {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.reqs)
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// do runs req, batched with whatever else is waiting.
func (b *batcher[Req, Res]) do(ctx context.Context, req Req) (Res, error) {
	it := &batchItem[Req, Res]{ctx: ctx, req: req, res: make(chan batchResult[Res], 1)}
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return b.single(ctx, req)
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
	return r.v, r.err
}

func (b *batcher[Req, Res]) run() {
	batch := make([]*batchItem[Req, Res], 0, b.maxBatch)
	for first := range b.reqs {
		batch = append(batch[:0], first)
	collect:
		for len(batch) < b.maxBatch {
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

func (b *batcher[Req, Res]) flush(batch []*batchItem[Req, Res]) {
	reqs := make([]Req, len(batch))
	for i, it := range batch {
		reqs[i] = it.req
	}
	// The batch belongs to no single request: it must not be cancelled by
	// one worker's context.
	res, err := b.many(context.Background(), reqs)
	if err == nil {
		for i, it := range batch {
			it.res <- batchResult[Res]{v: res[i]}
		}
		return
	}
	b.logger.Warn(b.name+": batch failed; doing its requests one by one", "error", err, "count", len(batch))
	for _, it := range batch {
		v, err := b.single(context.WithoutCancel(it.ctx), it.req)
		it.res <- batchResult[Res]{v: v, err: err}
	}
}
