package groupcommit_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mailqueue/mailqueue/groupcommit"
)

// doubler is a batcher whose batch doubles each number and fails, as a
// whole, when the batch holds a negative one; done one by one, only the
// negative one fails.
func doubler(t *testing.T, maxBatch int, retry func(error) bool) (*groupcommit.Batcher[int, int], *atomic.Int64, *atomic.Int64) {
	var batches, singles atomic.Int64
	bad := errors.New("negative")
	b := groupcommit.New(groupcommit.Config[int, int]{
		Name: "test", MaxBatch: maxBatch, Retry: retry,
		Many: func(_ context.Context, xs []int) ([]groupcommit.Result[int], error) {
			batches.Add(1)
			if len(xs) > maxBatch {
				t.Errorf("batch of %d, max %d", len(xs), maxBatch)
			}
			out := make([]groupcommit.Result[int], len(xs))
			for i, x := range xs {
				if x < 0 {
					return nil, bad
				}
				out[i].Value = 2 * x
			}
			return out, nil
		},
		Single: func(_ context.Context, x int) (int, error) {
			singles.Add(1)
			if x < 0 {
				return 0, fmt.Errorf("%d: %w", x, bad)
			}
			return 2 * x, nil
		},
	})
	b.Start()
	t.Cleanup(b.Stop)
	return b, &batches, &singles
}

func run(b *groupcommit.Batcher[int, int], xs []int) ([]int, []error) {
	got := make([]int, len(xs))
	errs := make([]error, len(xs))
	var wg sync.WaitGroup
	for i, x := range xs {
		wg.Go(func() { got[i], errs[i] = b.Do(context.Background(), x) })
	}
	wg.Wait()
	return got, errs
}

// TestBatcherSharesBatches: every caller gets its own answer, concurrent
// callers share batches, and no batch is larger than MaxBatch.
func TestBatcherSharesBatches(t *testing.T) {
	b, batches, singles := doubler(t, 16, nil)
	xs := make([]int, 500)
	for i := range xs {
		xs[i] = i
	}
	got, errs := run(b, xs)
	for i := range xs {
		if errs[i] != nil || got[i] != 2*i {
			t.Fatalf("Do(%d) = %d, %v", i, got[i], errs[i])
		}
	}
	if n := batches.Load(); n >= 500 || singles.Load() != 0 {
		t.Errorf("%d batches and %d singles for 500 requests, want shared batches and no singles", n, singles.Load())
	}
}

// TestBatcherRetriesOneByOne: a failed batch is redone one by one, so only
// the bad request fails.
func TestBatcherRetriesOneByOne(t *testing.T) {
	b, _, _ := doubler(t, 64, nil)
	xs := []int{1, 2, 3, -4, 5, 6, 7, 8}
	got, errs := run(b, xs)
	for i, x := range xs {
		if x < 0 {
			if errs[i] == nil {
				t.Errorf("Do(%d) succeeded, want its error", x)
			}
			continue
		}
		if errs[i] != nil || got[i] != 2*x {
			t.Errorf("Do(%d) = %d, %v; want %d", x, got[i], errs[i], 2*x)
		}
	}
}

// TestBatcherNoRetry: when Retry refuses (the outcome is unknown), every
// request of the batch gets the batch's error and nothing is redone.
func TestBatcherNoRetry(t *testing.T) {
	b, _, singles := doubler(t, 64, func(error) bool { return false })
	_, err := b.Do(context.Background(), -1)
	if err == nil || singles.Load() != 0 {
		t.Errorf("err %v with %d singles; want the batch error and no singles", err, singles.Load())
	}
}

// TestBatcherAfterStop: after Stop, Do still works, one request at a time.
func TestBatcherAfterStop(t *testing.T) {
	b, _, singles := doubler(t, 8, nil)
	b.Stop()
	b.Stop() // twice is harmless
	if v, err := b.Do(context.Background(), 21); err != nil || v != 42 || singles.Load() != 1 {
		t.Errorf("after Stop: %d, %v, %d singles; want 42 done alone", v, err, singles.Load())
	}
}
