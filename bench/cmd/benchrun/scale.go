package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mailqueue/mailqueue/bench/load"
)

// queued1M fills the emails table with n queued emails and their available
// send jobs (set-based, see fill.go), then starts `mailqueue all` and
// records its RSS right after start and while it works through the backlog.
func (b *bench) queued1M(ctx context.Context) error {
	o := b.o
	n := int64(o.queuedCount)
	b.rep.section(fmt.Sprintf("RSS with %d emails queued (-queued-1m)", n))
	serve, c, err := b.start(ctx, "serve")
	if err != nil {
		return err
	}
	b.logf("queued-1m: accepting %d template emails through the API", o.fillApps)
	if err := b.templates(ctx, c, o.fillApps); err != nil {
		c.Close()
		b.stop(serve)
		return err
	}
	// The templates are part of the n queued emails.
	spec := fillSpec{n: n - int64(o.fillApps), queued: true, span: 10 * time.Minute}
	spec.from = time.Now().Add(-spec.span)
	b.logf("queued-1m: filling %d queued emails with their send jobs", spec.n)
	serve.ResetPeak()
	res, err := b.fill(ctx, spec, o.fillConns)
	servePeak := serve.Peak()
	c.Close()
	b.stop(serve)
	if err != nil {
		return err
	}
	b.expected.Add(res.rows)
	b.describeFill(spec, res, o.fillConns)
	var queued int64
	if err := b.pool.QueryRow(ctx, "SELECT count(*) FROM river_job WHERE kind = 'send_email' AND state = 'available'").Scan(&queued); err != nil {
		return err
	}

	pprofAddr := ""
	if o.pprofDir != "" {
		if pprofAddr, err = freeAddr(); err != nil {
			return err
		}
		b.env["MQ_PPROF_ADDR"] = pprofAddr
	}
	base := b.sink.Stats().Messages
	all, c2, err := b.start(ctx, "all")
	delete(b.env, "MQ_PPROF_ADDR")
	if err != nil {
		return err
	}
	defer func() { c2.Close(); b.stop(all) }()
	started := time.Now()
	time.Sleep(2 * time.Second)
	idle := all.RSS()
	idleSent := b.sink.Stats().Messages - base
	b.saveProfile(ctx, pprofAddr, "queued-1m-start-heap", "heap?gc=1")
	b.logf("queued-1m: all RSS %s 2 s after start (%d delivered so far); watching for %s", mib(idle), idleSent, o.queuedWindow)

	var rows [][]string
	prev, prevAt := idleSent, time.Now()
	tick := time.NewTicker(10 * time.Second)
	end := time.After(o.queuedWindow - 2*time.Second)
	for done := false; !done; {
		select {
		case <-ctx.Done():
			tick.Stop()
			return ctx.Err()
		case <-end:
			done = true
		case <-tick.C:
		}
		if err := all.Exited(); err != nil {
			tick.Stop()
			return err
		}
		sent, now := b.sink.Stats().Messages-base, time.Now()
		rows = append(rows, []string{fmt.Sprintf("%.0f", now.Sub(started).Seconds()), fmt.Sprint(sent),
			fmt.Sprintf("%.0f", float64(sent-prev)/now.Sub(prevAt).Seconds()), mib(all.RSS()), mib(all.Peak())})
		prev, prevAt = sent, now
	}
	tick.Stop()
	took := time.Since(started)
	b.saveProfile(ctx, pprofAddr, "queued-1m-end-heap", "heap?gc=1")
	allPeak := all.Peak()
	worked := b.sink.Stats().Messages - base

	b.peak("serve", fmt.Sprintf("filling %d queued (peak; the fill is SQL, serve idles)", n), servePeak)
	b.peak("all", fmt.Sprintf("2 s after start, %d jobs available", queued), idle)
	b.peak("all", fmt.Sprintf("first %s working the backlog (peak)", o.queuedWindow), allPeak)
	b.rep.para("%d `send_email` jobs were available when `mailqueue all` started (sink: bench/smtpsink, accepts everything). RSS 2 s after start: **%s** (%d delivered by then). In its first %.0f s it delivered %d emails (%.0f/s); peak RSS **%s**. Load average at the end: %s.",
		queued, mib(idle), idleSent, took.Seconds(), worked, float64(worked)/took.Seconds(), mib(allPeak), loadAvg())
	b.rep.table([]string{"t (s)", "delivered", "delivered/s (last 10 s)", "RSS", "peak so far"}, rows)
	worst := max(idle, allPeak)
	b.rep.target(tRSS, goal(tRSS), fmt.Sprintf("%s peak (all, %d queued; %s 2 s after start)", mib(worst), queued, mib(idle)),
		metIf(queued >= 900_000 && worst < 256<<20))
	return nil
}

// saveProfile writes the service's profile /debug/pprof/<what> to
// -pprof-dir when profiling is on.
func (b *bench) saveProfile(ctx context.Context, addr, name, what string) {
	if addr == "" {
		return
	}
	path := filepath.Join(b.o.pprofDir, name+".pb.gz")
	err := func() error {
		if err := os.MkdirAll(b.o.pprofDir, 0o755); err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/debug/pprof/"+what, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, resp.Body); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}()
	if err != nil {
		b.problem("profile %s: %v", name, err)
		return
	}
	b.logf("profile: %s (go tool pprof -top %s)", path, path)
}

// rows10M fills the emails table up to n rows (set-based, see fill.go) and
// measures GET /v1/emails/{id} over a random sample of the bench app's rows.
func (b *bench) rows10M(ctx context.Context) error {
	o := b.o
	n := int64(o.rowsCount)
	b.rep.section(fmt.Sprintf("GET /v1/emails/{id} at %d rows (-rows-10m)", n))
	pprofAddr := ""
	if o.pprofDir != "" {
		var err error
		if pprofAddr, err = freeAddr(); err != nil {
			return err
		}
		b.env["MQ_PPROF_ADDR"] = pprofAddr
	}
	serve, c, err := b.start(ctx, "serve")
	delete(b.env, "MQ_PPROF_ADDR")
	if err != nil {
		return err
	}
	defer func() { c.Close(); b.stop(serve) }()
	var rows int64
	if err := b.pool.QueryRow(ctx, "SELECT count(*) FROM emails").Scan(&rows); err != nil {
		return err
	}
	if !b.templated {
		b.logf("rows-10m: accepting %d template emails through the API", o.fillApps)
		if err := b.templates(ctx, c, o.fillApps); err != nil {
			return err
		}
		rows += int64(o.fillApps)
	}
	cpu0 := serve.CPU()
	if err := b.baselineGet(ctx, c, rows); err != nil {
		return err
	}
	b.rep.para("`serve` used %s of CPU for those %.0f reads (%s per read).", serve.CPU()-cpu0, b.o.getRate*b.o.getDur.Seconds(), perRead(serve.CPU()-cpu0, b.o.getRate*b.o.getDur.Seconds()))
	if rows < n {
		// Rows over the last -rows-months months, the newest an hour old.
		spec := fillSpec{n: n - rows, bodyLimit: o.rowsBody, span: time.Duration(o.rowsMonths) * 30 * 24 * time.Hour}
		spec.from = time.Now().Add(-time.Hour - spec.span)
		b.logf("rows-10m: filling %d delivered emails", spec.n)
		res, err := b.fill(ctx, spec, o.fillConns)
		if err != nil {
			return err
		}
		b.describeFill(spec, res, o.fillConns)
	}
	ids, err := b.sampleIDs(ctx, 20000)
	if err != nil {
		return err
	}
	var prof sync.WaitGroup
	b.beforeGet = func() {
		cpu0 = serve.CPU()
		prof.Go(func() {
			b.saveProfile(ctx, pprofAddr, "rows-10m-get-cpu", fmt.Sprintf("profile?seconds=%.0f", b.o.getDur.Seconds()))
		})
	}
	err = b.measureGet(ctx, c, ids, true)
	b.beforeGet = nil
	prof.Wait()
	if err != nil {
		return err
	}
	b.rep.para("`serve` used %s of CPU for those reads (%s per read).", serve.CPU()-cpu0, perRead(serve.CPU()-cpu0, b.o.getRate*b.o.getDur.Seconds()))
	// A second sample of the plan, an email of another month.
	return b.explain(ctx, ids[len(ids)/3])
}

// baselineGet reads the bench app's template email at the GET rate before
// the fill, as a same-conditions reference for the reads at 10M rows (on
// this shared machine the tail is mostly CPU contention).
func (b *bench) baselineGet(ctx context.Context, c *load.Client, rows int64) error {
	var id string
	if err := b.pool.QueryRow(ctx, "SELECT id::text FROM bench_fill_template WHERE k = 0").Scan(&id); err != nil {
		return err
	}
	b.logf("get baseline: %.0f/s for %s over 1 id (%d rows)", b.o.getRate, b.o.getDur, rows)
	res, err := load.Run(ctx, c, load.Config{Mode: load.ModeGet, Rate: b.o.getRate, Concurrency: 64, Duration: b.o.getDur, IDs: []string{id}})
	if err != nil {
		return err
	}
	b.rep.para("Reference in the same conditions: the same rate over one email read again and again (always cached), the table at %d rows (load average %s):", rows, loadAvg())
	b.rep.table(loadHeader, [][]string{loadRow("get, one email", res)})
	return nil
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func perRead(d time.Duration, n float64) string {
	if n <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f µs", float64(d.Microseconds())/n)
}
