// Command smtpsink runs the bench/smtpsink SMTP sink as a standalone server,
// for load tests against a running Mail Queue. It prints counters to stderr
// every second and exits on SIGINT or SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mailqueue/mailqueue/bench/smtpsink"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "smtpsink:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:2525", "listen address")
	record := flag.Bool("record", false, "keep messages in memory (grows without bound)")
	delay := flag.Duration("delay", 0, "wait before answering DATA")
	tempfail := flag.Float64("tempfail", 0, "share of messages refused with 451 at RCPT (0..1)")
	permfail := flag.Float64("permfail", 0, "share of messages refused with 550 at RCPT (0..1)")
	drop := flag.Float64("drop", 0, "share of messages whose connection is closed after DATA without a reply (0..1)")
	user := flag.String("user", "", "require AUTH PLAIN with this username")
	pass := flag.String("pass", "", "password for -user")
	flag.Parse()

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	sink := smtpsink.New(smtpsink.Options{
		Addr:              *addr,
		Record:            *record,
		Delay:             *delay,
		TempFailRate:      *tempfail,
		PermFailRate:      *permfail,
		DropAfterDataRate: *drop,
		Logger:            logger,
		Username:          *user,
		Password:          *pass,
	})
	if err := sink.Start(ctx); err != nil {
		return fmt.Errorf("starting sink: %w", err)
	}
	logger.Info("smtpsink listening", "addr", sink.Addr())

	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	var last smtpsink.Stats
	for {
		select {
		case <-ctx.Done():
			shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := sink.Stop(shutdownCtx); err != nil {
				return fmt.Errorf("stopping sink: %w", err)
			}
			st := sink.Stats()
			fmt.Fprintf(os.Stderr, "final: conns=%d accepted=%d rejected=%d dropped=%d\n",
				st.Connections, st.Messages, st.Rejected, st.Dropped)
			return nil
		case <-ticker.C:
			st := sink.Stats()
			fmt.Fprintf(os.Stderr, "conns=%d accepted=%d (+%d/s) rejected=%d dropped=%d\n",
				st.Connections, st.Messages, st.Messages-last.Messages, st.Rejected, st.Dropped)
			last = st
		}
	}
}
