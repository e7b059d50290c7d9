// Command loadgen drives a running Mail Queue over its HTTP API and reports
// throughput, errors by status and exact latency percentiles.
//
//	go run ./bench/cmd/loadgen -admin-secret "$MQ_ADMIN_SECRET" -mode single -rate 700 -duration 20s
//	go run ./bench/cmd/loadgen -key "$API_KEY" -mode single -rate 0 -concurrency 64 -duration 15s
//	go run ./bench/cmd/loadgen -key "$API_KEY" -mode batch -batch 10000 -requests 1
//	go run ./bench/cmd/loadgen -key "$API_KEY" -mode get -seed 2000 -rate 500 -duration 10s
//
// With -rate N (open model) request n is due at start+n/N whatever the server
// does, and its latency counts from that due time, so a slow server shows up
// as latency instead of silently lowering the rate (no coordinated omission).
// With -rate 0 (closed model) -concurrency workers send back to back.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mailqueue/mailqueue/bench/load"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	url := fs.String("url", envOr("MQ_URL", "http://127.0.0.1:8080"), "Mail Queue base URL (env MQ_URL)")
	key := fs.String("key", os.Getenv("MQ_API_KEY"), "API key with email:send and email:read (env MQ_API_KEY)")
	adminSecret := fs.String("admin-secret", "", "admin secret: create a fresh app and use its key instead of -key")
	mode := fs.String("mode", load.ModeSingle, "single (POST /v1/emails), batch (POST /v1/emails/batch) or get (GET /v1/emails/{id})")
	rate := fs.Float64("rate", 0, "fixed arrival rate in requests/s (open model); 0 = as fast as -concurrency workers go")
	concurrency := fs.Int("concurrency", 64, "workers (closed model) or max requests in flight (open model); also the idle connection pool size")
	duration := fs.Duration("duration", 10*time.Second, "how long to send")
	requests := fs.Int64("requests", 0, "stop after this many requests (0 = only -duration)")
	size := fs.String("size", "1.5KB", "html body size of each email (1.5KB makes a ~2 KB request; e.g. 100KB)")
	batch := fs.Int("batch", 1000, "recipients per batch request (mode batch, max 10000)")
	queue := fs.String("queue", "", "queue name (created with POST /v1/queues when missing); empty = the app's default queue")
	seed := fs.Int("seed", 1000, "mode get: emails to create first (at max rate) and then read")
	timeout := fs.Duration("timeout", 30*time.Second, "per-request timeout")
	drain := fs.Duration("drain", 10*time.Second, "open model: how long past -duration the backlog may still be sent")
	jsonOut := fs.Bool("json", false, "print the result as JSON instead of text")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: loadgen [flags]\n\nDrives the Mail Queue HTTP API and reports rate, errors by status and latency p50/p95/p99/max.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	htmlSize, err := load.ParseSize(*size)
	if err != nil {
		return err
	}
	if *batch < 1 || *batch > 10000 {
		return fmt.Errorf("-batch must be 1..10000")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	c := load.NewClient(*url, *key, *concurrency, *timeout)
	defer c.Close()
	if *adminSecret != "" {
		app, err := c.CreateApp(ctx, *adminSecret, "loadgen "+time.Now().UTC().Format(time.RFC3339Nano))
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "created app %s\n", app.ID)
	}
	if c.Key == "" {
		return errors.New("need -key (or MQ_API_KEY) or -admin-secret")
	}
	if err := c.EnsureQueue(ctx, *queue, 5); err != nil {
		return err
	}

	cfg := load.Config{
		Mode: *mode, Rate: *rate, Concurrency: *concurrency, Duration: *duration,
		Requests: *requests, Drain: *drain,
	}
	switch *mode {
	case load.ModeSingle:
		cfg.Body = load.EmailBody(*queue, htmlSize)
	case load.ModeBatch:
		cfg.Body = load.BatchBody(*queue, htmlSize, *batch)
	case load.ModeGet:
		fmt.Fprintf(os.Stderr, "creating %d emails to read…\n", *seed)
		seeded, err := load.Run(ctx, c, load.Config{
			Mode: load.ModeSingle, Concurrency: *concurrency, Requests: int64(*seed),
			Body: load.EmailBody(*queue, htmlSize), CollectIDs: true,
		})
		if err != nil {
			return err
		}
		if len(seeded.IDs) == 0 {
			return fmt.Errorf("could not create emails to read: errors %s", seeded.ErrorSummary())
		}
		cfg.IDs = seeded.IDs
	}
	fmt.Fprintf(os.Stderr, "request body %d bytes\n", len(cfg.Body))

	res, err := load.Run(ctx, c, cfg)
	if err != nil {
		return err
	}
	if *jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	res.WriteText(os.Stdout)
	if res.NotImplemented() {
		fmt.Printf("%s is not implemented yet (501): %s\n", map[string]string{
			load.ModeBatch: "POST /v1/emails/batch", load.ModeSingle: "POST /v1/emails", load.ModeGet: "GET /v1/emails/{id}",
		}[*mode], res.ErrorSamples["501"])
	}
	return nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
