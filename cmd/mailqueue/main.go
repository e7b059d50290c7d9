// Command mailqueue is the Mail Queue service: one binary whose
// subcommands run its parts alone or together.
//
//	mailqueue migrate   apply database migrations and create partitions
//	mailqueue serve     the REST API (and River UI)
//	mailqueue work      the River workers that send email
//	mailqueue inbound   the SMTP server receiving bounces and complaints
//	mailqueue all       serve + work + inbound in one process
//
// Configuration comes from MQ_* environment variables (see config.Config).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/mailqueue/mailqueue/config"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `Mail Queue — email orchestration service

Usage: mailqueue <command>

Commands:
  migrate   apply database migrations and create partitions, then exit
  serve     run the REST API and River UI
  work      run the workers that send email
  inbound   run the SMTP server that receives bounces and complaints
  all       run serve, work and inbound in one process
  version   print the version

Configuration is read from MQ_* environment variables; see README.md.
`

func main() {
	setGCDefaults()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd := args[0]
	switch cmd {
	case "migrate", "serve", "work", "inbound", "all":
	case "version":
		fmt.Fprintln(stdout, version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "mailqueue: unknown command %q\n\n%s", cmd, usage)
		return 2
	}

	cfg, err := config.Load()
	if err == nil {
		err = cfg.Require(cmd)
	}
	if err != nil {
		fmt.Fprintf(stderr, "mailqueue: bad configuration:\n%v\n", indent(err))
		return 2
	}
	logger := newLogger(cfg, stderr)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := runCommand(ctx, cmd, cfg, logger); err != nil {
		logger.Error("mailqueue stopped with an error", "command", cmd, "error", err)
		return 1
	}
	return 0
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewJSONHandler(w, opts)
	if cfg.LogFormat == "text" {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(h).With("service", "mailqueue", "version", version)
}

func indent(err error) string {
	var joined interface{ Unwrap() []error }
	if errors.As(err, &joined) {
		s := ""
		for _, e := range joined.Unwrap() {
			s += "  " + e.Error() + "\n"
		}
		return s
	}
	return "  " + err.Error()
}
