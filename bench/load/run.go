package load

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Modes of Run.
const (
	ModeSingle = "single" // POST /v1/emails
	ModeBatch  = "batch"  // POST /v1/emails/batch
	ModeGet    = "get"    // GET /v1/emails/{id}
)

// Config describes one load run.
type Config struct {
	Mode string
	// Rate is the fixed arrival rate in requests/s (open model). 0 means as
	// fast as Concurrency workers go (closed model).
	Rate float64
	// Concurrency is the number of workers: the fixed concurrency of the
	// closed model, or the cap on requests in flight in the open model.
	Concurrency int
	// Duration bounds the run (scheduling, in the open model).
	Duration time.Duration
	// Requests, when > 0, stops after that many requests.
	Requests int64
	// Drain is how long the open model may keep sending the backlog of
	// requests whose intended time fell inside Duration; 10 s when 0.
	Drain time.Duration
	// Body is the request body for single and batch.
	Body []byte
	// IDs are the emails GET mode reads (picked at random).
	IDs []string
	// CollectIDs keeps the ids of accepted emails in Result.IDs (single).
	CollectIDs bool
	// Accepted, when set, is incremented for every 2xx answer, so a caller
	// can follow progress.
	Accepted *atomic.Int64
}

// Result is what a run measured.
type Result struct {
	Mode        string  `json:"mode"`
	Model       string  `json:"model"` // "open (fixed rate)" or "closed (fixed concurrency)"
	TargetRate  float64 `json:"target_rate,omitempty"`
	Concurrency int     `json:"concurrency"`
	// Elapsed is from the first intended send to the last answer.
	Elapsed time.Duration `json:"elapsed_ns"`
	// Scheduled counts requests the open model intended to send.
	Scheduled int64 `json:"scheduled"`
	Sent      int64 `json:"sent"`
	OK        int64 `json:"ok"`
	// Unsent counts scheduled requests dropped because the drain period ended.
	Unsent int64 `json:"unsent,omitempty"`
	// Errors counts failed requests by HTTP status ("501") or "transport".
	Errors map[string]int64 `json:"errors,omitempty"`
	// ErrorSamples holds one answer (or error) per key of Errors.
	ErrorSamples map[string]string `json:"error_samples,omitempty"`
	// Rate is OK answers per second of Elapsed.
	Rate float64 `json:"achieved_rate"`
	// Latency is over 2xx answers; in the open model it is measured from the
	// intended send time, so queueing behind a slow server is counted
	// (no coordinated omission).
	Latency   Summary  `json:"latency"`
	Histogram []Bucket `json:"histogram,omitempty"`
	// LatencyAll is over every answer, 2xx or not.
	LatencyAll Summary  `json:"latency_all"`
	IDs        []string `json:"-"`
}

type worker struct {
	ok, all []time.Duration
	ids     []string
	errs    map[string]int64
	samples map[string]string
	sent    int64
	okN     int64
}

// Run drives the API with cfg until the duration (or request count) is
// reached and returns the measurements. It fails only on setup errors;
// request errors are counted in the result.
func Run(ctx context.Context, c *Client, cfg Config) (*Result, error) {
	switch cfg.Mode {
	case ModeSingle, ModeBatch:
		if cfg.Body == nil {
			return nil, fmt.Errorf("mode %s needs a body", cfg.Mode)
		}
	case ModeGet:
		if len(cfg.IDs) == 0 {
			return nil, errors.New("mode get needs ids to read")
		}
	default:
		return nil, fmt.Errorf("unknown mode %q (want single, batch or get)", cfg.Mode)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 64
	}
	if cfg.Duration <= 0 && cfg.Requests <= 0 {
		return nil, errors.New("need a duration or a request count")
	}
	if cfg.Duration <= 0 {
		cfg.Duration = 24 * time.Hour
	}
	if cfg.Drain <= 0 {
		cfg.Drain = 10 * time.Second
	}

	res := &Result{Mode: cfg.Mode, Concurrency: cfg.Concurrency, TargetRate: cfg.Rate}
	workers := make([]*worker, cfg.Concurrency)
	for i := range workers {
		workers[i] = &worker{errs: map[string]int64{}, samples: map[string]string{}}
	}
	start := time.Now()
	var wg sync.WaitGroup
	var unsent atomic.Int64

	if cfg.Rate > 0 {
		res.Model = "open (fixed arrival rate)"
		// Stop sending the backlog Drain after the schedule ends.
		sendCtx, cancel := context.WithDeadline(ctx, start.Add(cfg.Duration+cfg.Drain))
		defer cancel()
		intended := make(chan time.Time, 1<<16)
		for _, w := range workers {
			wg.Go(func() {
				for t := range intended {
					if sendCtx.Err() != nil {
						unsent.Add(1)
						continue
					}
					w.do(sendCtx, c, &cfg, t)
				}
			})
		}
		// The schedule is computed, not ticked: request n is due at
		// start + n/rate whatever happened before, so a stalled sender
		// catches up and every latency counts from when the request was due.
		var n int64
		end := start.Add(cfg.Duration)
	schedule:
		for cfg.Requests <= 0 || n < cfg.Requests {
			due := start.Add(time.Duration(float64(n) * float64(time.Second) / cfg.Rate))
			if !due.Before(end) {
				break
			}
			if wait := time.Until(due); wait > 0 {
				select {
				case <-ctx.Done():
					break schedule
				case <-time.After(wait):
				}
			}
			select {
			case intended <- due:
				n++
			case <-ctx.Done():
				break schedule
			}
		}
		close(intended)
		res.Scheduled = n
	} else {
		res.Model = "closed (fixed concurrency)"
		runCtx, cancel := context.WithDeadline(ctx, start.Add(cfg.Duration))
		defer cancel()
		var claimed atomic.Int64
		for _, w := range workers {
			wg.Go(func() {
				for runCtx.Err() == nil {
					if cfg.Requests > 0 && claimed.Add(1) > cfg.Requests {
						return
					}
					// The request itself may outlive the deadline: it is
					// measured to its end rather than cut off.
					w.do(ctx, c, &cfg, time.Now())
				}
			})
		}
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.Unsent = unsent.Load()

	var okAll, all []time.Duration
	res.Errors = map[string]int64{}
	res.ErrorSamples = map[string]string{}
	for _, w := range workers {
		okAll = append(okAll, w.ok...)
		all = append(all, w.all...)
		res.IDs = append(res.IDs, w.ids...)
		res.Sent += w.sent
		res.OK += w.okN
		for k, v := range w.errs {
			res.Errors[k] += v
			if _, ok := res.ErrorSamples[k]; !ok {
				res.ErrorSamples[k] = w.samples[k]
			}
		}
	}
	if res.Model == "closed (fixed concurrency)" {
		res.Scheduled = res.Sent
	}
	res.Latency = Summarize(okAll)
	res.Histogram = Histogram(okAll)
	res.LatencyAll = Summarize(all)
	if res.Elapsed > 0 {
		res.Rate = float64(res.OK) / res.Elapsed.Seconds()
	}
	return res, nil
}

func (w *worker) do(ctx context.Context, c *Client, cfg *Config, due time.Time) {
	var method, path string
	var body []byte
	switch cfg.Mode {
	case ModeSingle:
		method, path, body = http.MethodPost, "/v1/emails", cfg.Body
	case ModeBatch:
		method, path, body = http.MethodPost, "/v1/emails/batch", cfg.Body
	case ModeGet:
		method, path = http.MethodGet, "/v1/emails/"+cfg.IDs[rand.IntN(len(cfg.IDs))]
	}
	w.sent++
	status, data, err := c.Do(ctx, method, path, body, "")
	lat := time.Since(due)
	if err != nil && status == 0 {
		w.errs["transport"]++
		if _, ok := w.samples["transport"]; !ok {
			w.samples["transport"] = err.Error()
		}
		return
	}
	w.all = append(w.all, lat)
	if status >= 200 && status < 300 && err == nil {
		w.ok = append(w.ok, lat)
		w.okN++
		if cfg.Accepted != nil {
			cfg.Accepted.Add(1)
		}
		if cfg.CollectIDs && cfg.Mode == ModeSingle {
			var a struct {
				ID string `json:"id"`
			}
			if json.Unmarshal(data, &a) == nil && a.ID != "" {
				w.ids = append(w.ids, a.ID)
			}
		}
		return
	}
	key := strconv.Itoa(status)
	w.errs[key]++
	if _, ok := w.samples[key]; !ok {
		w.samples[key] = ErrorMessage(data)
	}
}

// NotImplemented reports whether every answer was 501.
func (r *Result) NotImplemented() bool {
	return r.OK == 0 && r.Errors["501"] > 0 && r.Errors["501"] == r.Sent
}

// ErrorSummary is "501×3 (not_implemented: …), transport×1 (…)" or "none".
func (r *Result) ErrorSummary() string {
	if len(r.Errors) == 0 {
		return "none"
	}
	s := ""
	for _, k := range slices.Sorted(maps.Keys(r.Errors)) {
		if s != "" {
			s += ", "
		}
		s += fmt.Sprintf("%s×%d", k, r.Errors[k])
		if m := r.ErrorSamples[k]; m != "" {
			s += " (" + m + ")"
		}
	}
	return s
}

// WriteText prints r for people.
func (r *Result) WriteText(w io.Writer) {
	fmt.Fprintf(w, "mode %s, %s", r.Mode, r.Model)
	if r.TargetRate > 0 {
		fmt.Fprintf(w, ", target %.0f req/s", r.TargetRate)
	}
	fmt.Fprintf(w, ", %d workers, %.1fs\n", r.Concurrency, r.Elapsed.Seconds())
	fmt.Fprintf(w, "requests: scheduled %d, sent %d, ok %d", r.Scheduled, r.Sent, r.OK)
	if r.Unsent > 0 {
		fmt.Fprintf(w, ", unsent (backlog past drain) %d", r.Unsent)
	}
	fmt.Fprintf(w, "\nerrors: %s\n", r.ErrorSummary())
	if r.NotImplemented() {
		fmt.Fprintf(w, "NOTE: the endpoint is not implemented (every answer was 501)\n")
	}
	fmt.Fprintf(w, "achieved: %.1f ok/s\n", r.Rate)
	l := r.Latency
	if l.Count == 0 {
		l = r.LatencyAll
		fmt.Fprintf(w, "latency (no 2xx answers; over all answers):")
	} else {
		fmt.Fprintf(w, "latency (2xx):")
	}
	fmt.Fprintf(w, " p50 %s  p95 %s  p99 %s  p99.9 %s  max %s  mean %s  (n=%d)\n",
		FormatDuration(l.P50), FormatDuration(l.P95), FormatDuration(l.P99), FormatDuration(l.P999),
		FormatDuration(l.Max), FormatDuration(l.Mean), l.Count)
	if len(r.Histogram) > 0 {
		fmt.Fprintln(w, "histogram:")
		WriteHistogram(w, r.Histogram)
	}
}
