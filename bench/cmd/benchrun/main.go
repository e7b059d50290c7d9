// Command benchrun runs Mail Queue's benchmark scenario end to end on this
// machine and writes bench/results/<date>-<name>.md: it creates a fresh
// database, starts an in-process SMTP sink, builds and runs bin/mailqueue as
// child processes, drives it over HTTP with the bench/load generator, and
// compares the numbers with the performance targets.
//
//	go run ./bench/cmd/benchrun                  # full scenario, < 5 min
//	go run ./bench/cmd/benchrun -short -name smoke
//	go run ./bench/cmd/benchrun -phases ceilings
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mailqueue/mailqueue/bench/load"
	"github.com/mailqueue/mailqueue/bench/smtpsink"
)

var allPhases = []string{"ceilings", "accept", "batch", "get", "deliver", "e2e"}

type options struct {
	name, phases, dbURL, redisAddr, bin, outDir string
	short, noBuild, keepDB, queued1M, rows10M   bool

	acceptRate                   float64
	acceptDur, maxDur            time.Duration
	acceptConc, maxConc          int
	batchSize, batchRepeat       int
	getRate                      float64
	getDur                       time.Duration
	deliverSmall, deliverLarge   int
	largeSize                    string
	e2eRate                      float64
	e2eDur                       time.Duration
	ceilDur                      time.Duration
	riverJobs                    int
	drainTimeout, acceptDrain    time.Duration
	workers, smtpPool, dbMaxConn int
	queuedCount, rowsCount       int
	fillApps, fillConns          int
	rowsBody, rowsMonths         int
	queuedWindow                 time.Duration
	pprofDir, reuseDB            string
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchrun:", err)
		os.Exit(1)
	}
}

func run() error {
	o := &options{}
	fs := flag.NewFlagSet("benchrun", flag.ContinueOnError)
	fs.StringVar(&o.name, "name", "", `results file name: bench/results/<date>-<name>.md (default "full", or "smoke" with -short)`)
	fs.StringVar(&o.phases, "phases", strings.Join(allPhases, ","), "comma-separated phases to run: "+strings.Join(allPhases, ", "))
	fs.BoolVar(&o.short, "short", false, "smoke run: every phase a few seconds (< 60 s in all)")
	fs.StringVar(&o.dbURL, "db", envOr("MQ_TEST_DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5432/postgres?sslmode=disable"), "PostgreSQL server to create the bench database on (env MQ_TEST_DATABASE_URL)")
	fs.StringVar(&o.redisAddr, "redis", envOr("MQ_TEST_REDIS_ADDR", "127.0.0.1:6379"), "Redis address for the service (env MQ_TEST_REDIS_ADDR)")
	fs.StringVar(&o.bin, "bin", "bin/mailqueue", "the service binary (built with go build first unless -no-build)")
	fs.BoolVar(&o.noBuild, "no-build", false, "use -bin as it is")
	fs.StringVar(&o.outDir, "out", "bench/results", "directory for the results file")
	fs.BoolVar(&o.keepDB, "keep-db", false, "do not drop the bench database at the end")
	fs.StringVar(&o.reuseDB, "reuse-db", "", "run on this database kept by an earlier -keep-db run (after -rows-10m: measure GET again without refilling); never dropped")
	fs.BoolVar(&o.queued1M, "queued-1m", false, "also measure RSS of `all` with 1,000,000 emails queued (filled with SQL, see bench/README.md)")
	fs.BoolVar(&o.rows10M, "rows-10m", false, "also measure GET /v1/emails/{id} with 10,000,000 email rows (filled with SQL, see bench/README.md)")
	fs.IntVar(&o.queuedCount, "queued-count", 1_000_000, "-queued-1m: emails to queue (smaller to try the phase out; the target needs ≥ 900,000)")
	fs.IntVar(&o.rowsCount, "rows-count", 10_000_000, "-rows-10m: email rows to reach (smaller to try the phase out; the target needs 10M)")
	fs.IntVar(&o.fillApps, "fill-apps", 5, "-queued-1m, -rows-10m: apps the filled rows are spread over (the bench app is one)")
	fs.IntVar(&o.fillConns, "fill-conns", 2, "-queued-1m, -rows-10m: connections inserting at the same time")
	fs.IntVar(&o.rowsBody, "rows-body", 256, "-rows-10m: keep the first N characters of html and text (0 = the whole ~2 KB email; 10M of those take ~25 GB)")
	fs.IntVar(&o.rowsMonths, "rows-months", 5, "-rows-10m: the rows' created_at spans this many 30-day months back from now")
	fs.DurationVar(&o.queuedWindow, "queued-window", 90*time.Second, "-queued-1m: how long to watch `all` working the backlog")
	fs.StringVar(&o.pprofDir, "pprof-dir", "", "turn on MQ_PPROF_ADDR and save profiles there: -queued-1m, heap profiles of `all` (at start and at the end of the window); deliver, a 5 s CPU profile of `mailqueue work` per size")
	fs.Float64Var(&o.acceptRate, "accept-rate", 700, "accept: fixed arrival rate of POST /v1/emails")
	fs.DurationVar(&o.acceptDur, "accept-duration", 20*time.Second, "accept: duration at the fixed rate")
	fs.IntVar(&o.acceptConc, "accept-inflight", 256, "accept: max requests in flight at the fixed rate")
	fs.DurationVar(&o.maxDur, "max-duration", 15*time.Second, "accept: duration at max rate")
	fs.IntVar(&o.maxConc, "max-concurrency", 32, "accept: workers at max rate")
	fs.IntVar(&o.batchSize, "batch-size", 10000, "batch: recipients in the one batch request")
	fs.IntVar(&o.batchRepeat, "batch-repeat", 3, "batch: how many batches to send one after another, each after the last is delivered; the target takes the median")
	fs.Float64Var(&o.getRate, "get-rate", 500, "get: fixed arrival rate of GET /v1/emails/{id}")
	fs.DurationVar(&o.getDur, "get-duration", 10*time.Second, "get: duration")
	fs.IntVar(&o.deliverSmall, "deliver-small", 30000, "deliver: ~2 KB emails queued before the worker starts")
	fs.IntVar(&o.deliverLarge, "deliver-large", 3000, "deliver: large emails queued before the worker starts")
	fs.StringVar(&o.largeSize, "large-size", "100KB", "deliver: html size of the large emails")
	fs.Float64Var(&o.e2eRate, "e2e-rate", 300, "e2e: fixed arrival rate with the worker running")
	fs.DurationVar(&o.e2eDur, "e2e-duration", 30*time.Second, "e2e: duration")
	fs.DurationVar(&o.ceilDur, "ceiling-duration", 5*time.Second, "ceilings: duration of each timed ceiling")
	fs.IntVar(&o.riverJobs, "river-jobs", 20000, "ceilings: jobs River inserts and works")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 120*time.Second, "longest wait for the sink to receive every accepted email")
	fs.DurationVar(&o.acceptDrain, "accept-drain", 20*time.Second, "after accept: how long the worker may drain the backlog before the rest is purged")
	fs.IntVar(&o.workers, "workers", 0, "MQ_WORKERS for the service (0 = its default)")
	fs.IntVar(&o.smtpPool, "smtp-pool", 0, "MQ_DEFAULT_SMTP_POOL_SIZE for the service (0 = its default)")
	fs.IntVar(&o.dbMaxConn, "db-max-conns", 0, "MQ_DB_MAX_CONNS for the service (0 = its default)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: benchrun [flags]\n\nRuns the Mail Queue benchmark scenario against a fresh local stack and writes bench/results/<date>-<name>.md.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.short {
		short := map[string]string{
			"accept-duration": "2s", "max-duration": "2s", "get-duration": "3s",
			"deliver-small": "1000", "deliver-large": "200", "e2e-rate": "200", "e2e-duration": "5s", "batch-repeat": "1",
			"ceiling-duration": "2s", "river-jobs": "2000", "drain-timeout": "30s", "accept-drain": "3s",
			"queued-window": "10s",
		}
		for k, v := range short {
			if !set[k] {
				_ = fs.Set(k, v)
			}
		}
	}
	if o.name == "" {
		o.name = "full"
		if o.short {
			o.name = "smoke"
		}
	}
	phases := map[string]bool{}
	for p := range strings.SplitSeq(o.phases, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if !slices.Contains(allPhases, p) {
			return fmt.Errorf("unknown phase %q (want %s)", p, strings.Join(allPhases, ", "))
		}
		phases[p] = true
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b := &bench{o: o, phases: phases, rep: &report{}, began: time.Now()}
	runErr := b.run(ctx)
	if runErr != nil {
		b.problem("aborted: %v", runErr)
	}
	path, werr := b.write()
	if werr != nil {
		return errors.Join(runErr, werr)
	}
	fmt.Fprintf(os.Stderr, "results written to %s (%.0fs)\n", path, time.Since(b.began).Seconds())
	return runErr
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

type bench struct {
	o      *options
	phases map[string]bool
	rep    *report
	errs   []string
	began  time.Time

	db       *benchDB
	pool     *pgxpool.Pool
	sink     *smtpsink.Sink
	env      map[string]string
	adminKey string
	logDir   string

	// expected counts emails accepted so far: each is one sink message.
	expected atomic.Int64
	app      load.App
	ids      []string
	idleRSS  int64
	// templated: the fill templates exist (fill.go).
	templated bool
	// beforeGet, when set, runs right before measureGet's reads start.
	beforeGet func()
	peaks     [][]string
	// allMax is the accept phase's max rate, with the worker of `all`
	// delivering meanwhile (0 when it did not run).
	allMax float64
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%5.1fs] %s\n", time.Since(b.began).Seconds(), fmt.Sprintf(format, args...))
}

func (b *bench) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	b.errs = append(b.errs, msg)
	b.logf("PROBLEM: %s", msg)
}

func (b *bench) run(ctx context.Context) (err error) {
	o := b.o
	h := &b.rep.header
	for _, t := range targetList {
		b.rep.target(t[0], t[1], "—", notMeasured+" (phase not run)")
	}
	fmt.Fprintf(h, "# Mail Queue benchmark: %s\n\n", o.name)
	fmt.Fprintf(h, "Run %s by `bench/cmd/benchrun`%s. Everything ran on this one machine: the service, PostgreSQL, Redis, the SMTP sink (in the benchrun process) and the load generator share its cores, so the load generator's own CPU use is part of every number.\n\n",
		b.began.Format("2006-01-02 15:04:05 MST"), map[bool]string{true: " (`-short`: a smoke run, numbers are indicative only)"}[o.short])
	fmt.Fprintf(h, "Command: `%s`\n\n", commandLine(os.Args[1:]))
	machine := machineInfo()
	rows := [][]string{}
	for _, kv := range machine {
		rows = append(rows, []string{kv[0], kv[1]})
	}
	rows = append(rows, []string{"git commit", gitCommit()}, []string{"Go", goVersion()})

	b.logDir, err = os.MkdirTemp("", "mq-bench-logs-")
	if err != nil {
		return err
	}
	if !o.noBuild {
		b.logf("building %s", o.bin)
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", o.bin, "./cmd/mailqueue").CombinedOutput(); err != nil {
			return fmt.Errorf("go build -o %s ./cmd/mailqueue: %w\n%s", o.bin, err, out)
		}
	}
	if o.bin, err = filepath.Abs(o.bin); err != nil {
		return err
	}

	b.logf("creating the bench database")
	if o.reuseDB != "" {
		o.keepDB = true
		b.db, err = existingDB(o.dbURL, o.reuseDB)
	} else {
		b.db, err = createDB(ctx, o.dbURL)
	}
	if err != nil {
		return err
	}
	defer func() {
		if o.keepDB {
			b.logf("kept database %s", b.db.name)
			return
		}
		if derr := b.db.drop(); derr != nil {
			b.problem("dropping database %s: %v", b.db.name, derr)
		}
	}()
	b.pool, err = pgxpool.New(ctx, b.db.url)
	if err != nil {
		return err
	}
	defer b.pool.Close()
	var pgVersion string
	if err := b.pool.QueryRow(ctx, "SHOW server_version").Scan(&pgVersion); err != nil {
		pgVersion = "unknown: " + err.Error()
	}
	rows = append(rows, []string{"PostgreSQL", pgVersion}, []string{"Redis", redisVersion(ctx, o.redisAddr)})
	h.WriteString("## Machine and versions\n\n")
	writeTable(h, []string{"", ""}, rows)

	b.sink = smtpsink.New(smtpsink.Options{Logger: slog.New(slog.DiscardHandler)})
	if err := b.sink.Start(ctx); err != nil {
		return err
	}
	defer func() { _ = b.sink.Stop(context.Background()) }()

	b.adminKey = randomHex(24)
	b.env = map[string]string{
		"MQ_DATABASE_URL":     b.db.url,
		"MQ_REDIS_ADDRS":      o.redisAddr,
		"MQ_ADMIN_SECRET":     b.adminKey,
		"MQ_ENCRYPTION_KEY":   randomKey(),
		"MQ_DEFAULT_SMTP_URL": "smtp://" + b.sink.Addr(),
		"MQ_LOG_LEVEL":        "warn",
		"MQ_LOG_FORMAT":       "text",
		// The bench's one key sends far more than the default per-key API
		// limit (1,000 requests/s): it measures the service, not that limit.
		"MQ_API_RATE_LIMIT": "0",
	}
	if o.workers > 0 {
		b.env["MQ_WORKERS"] = fmt.Sprint(o.workers)
	}
	if o.smtpPool > 0 {
		b.env["MQ_DEFAULT_SMTP_POOL_SIZE"] = fmt.Sprint(o.smtpPool)
	}
	if o.dbMaxConn > 0 {
		b.env["MQ_DB_MAX_CONNS"] = fmt.Sprint(o.dbMaxConn)
	}
	b.writeSettings(fs(o))

	b.logf("migrating %s", b.db.name)
	if err := runOnce(ctx, o.bin, b.env, "migrate"); err != nil {
		return err
	}
	if o.reuseDB != "" {
		if err := b.reuse(ctx); err != nil {
			return err
		}
	}

	if b.phases["ceilings"] {
		if err := b.ceilings(ctx); err != nil {
			b.problem("ceilings: %v", err)
		}
	}
	if err := b.servicePhases(ctx); err != nil {
		return err
	}
	return ctx.Err()
}

// fs lists the flag values for the settings table.
func fs(o *options) [][]string {
	return [][]string{
		{"phases", o.phases}, {"short", fmt.Sprint(o.short)},
		{"accept", fmt.Sprintf("%.0f/s for %s (≤ %d in flight); max rate with %d workers for %s", o.acceptRate, o.acceptDur, o.acceptConc, o.maxConc, o.maxDur)},
		{"batch", fmt.Sprintf("%d recipients, %d time(s)", o.batchSize, max(o.batchRepeat, 1))},
		{"get", fmt.Sprintf("%.0f/s for %s", o.getRate, o.getDur)},
		{"deliver", fmt.Sprintf("%d × ~2 KB, %d × %s html", o.deliverSmall, o.deliverLarge, o.largeSize)},
		{"e2e", fmt.Sprintf("%.0f/s for %s", o.e2eRate, o.e2eDur)},
		{"ceilings", fmt.Sprintf("%s each, River %d jobs", o.ceilDur, o.riverJobs)},
		{"queued-1m / rows-10m", fmt.Sprintf("%v (%d emails, watched %s) / %v (%d rows, bodies cut to %d chars, %d months)",
			o.queued1M, o.queuedCount, o.queuedWindow, o.rows10M, o.rowsCount, o.rowsBody, o.rowsMonths)},
		{"fill", fmt.Sprintf("%d apps, %d connections", o.fillApps, o.fillConns)},
		{"drain timeout / accept drain", o.drainTimeout.String() + " / " + o.acceptDrain.String()},
	}
}

func (b *bench) writeSettings(flags [][]string) {
	h := &b.rep.header
	h.WriteString("## Settings\n\n")
	var env []string
	for k, v := range b.env {
		switch k {
		case "MQ_ADMIN_SECRET", "MQ_ENCRYPTION_KEY":
			v = "(random, " + fmt.Sprint(len(v)) + " chars)"
		}
		env = append(env, k+"="+v)
	}
	// Go's own runtime variables reach the service from benchrun's
	// environment (startService passes on everything but MQ_*).
	for _, k := range []string{"GOGC", "GOMEMLIMIT", "GOMAXPROCS", "GODEBUG"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v+" (from benchrun's environment)")
		}
	}
	slices.Sort(env)
	fmt.Fprintf(h, "Service environment (plus `MQ_HTTP_ADDR` and `MQ_INBOUND_ADDR` on free loopback ports; every other setting at its default, see README.md):\n\n```\n%s\n```\n\n", strings.Join(env, "\n"))
	h.WriteString("SMTP sink: `bench/smtpsink` in the benchrun process, Record off, no delay, no failures.\n\n")
	writeTable(h, []string{"flag group", "value"}, flags)
}

func (b *bench) write() (string, error) {
	if err := os.MkdirAll(b.o.outDir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(b.o.outDir, b.began.Format("2006-01-02")+"-"+b.o.name+".md")
	fmt.Fprintf(&b.rep.body, "\n---\nTotal run time %.0f s.\n", time.Since(b.began).Seconds())
	return path, os.WriteFile(path, []byte(b.rep.render(b.errs)), 0o644)
}

// commandLine is the benchrun command as typed in a shell: arguments that
// are empty or hold shell characters are single-quoted (-phases ”).
func commandLine(args []string) string {
	out := []string{"go run ./bench/cmd/benchrun"}
	for _, a := range args {
		if a == "" || strings.ContainsAny(a, " \t'\"$`\\*?;&|<>(){}[]#~!") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out = append(out, a)
	}
	return strings.Join(out, " ")
}
