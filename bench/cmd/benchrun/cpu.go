package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// clockTicks is the kernel's USER_HZ: /proc/stat counts CPU time in these.
const clockTicks = 100

// cpuSnapshot is CPU time used so far by the processes a phase cares
// about, and by the whole machine. Differences of two snapshots say where
// a phase's CPU went; CPU time per email hardly depends on what else the
// machine is doing, unlike a rate.
type cpuSnapshot struct {
	service time.Duration // the service process measured
	pg      map[int]time.Duration
	redis   time.Duration
	bench   time.Duration // this process: the SMTP sink and the load generator
	machine time.Duration // all non-idle time of all cores
}

// pidCPU is the CPU time pid's threads have run so far (from
// /proc/<pid>/task/*/schedstat; 0 once it is gone).
func pidCPU(pid int) time.Duration {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var sum time.Duration
	for _, t := range tasks {
		sum += schedstat(t)
	}
	return sum
}

// pgBackendCPU is the CPU time so far of each PostgreSQL backend connected
// to the bench database (pg_stat_activity), so that other work on the same
// server is not counted; shared background processes (WAL writer,
// checkpointer) are left out.
func (b *bench) pgBackendCPU(ctx context.Context) map[int]time.Duration {
	out := map[int]time.Duration{}
	rows, err := b.pool.Query(ctx, "SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
	if err != nil {
		return out
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return out
	}
	for _, pid := range pids {
		out[int(pid)] = pidCPU(int(pid))
	}
	return out
}

// pgCPU is the CPU time so far of the bench database's backends together.
func (b *bench) pgCPU(ctx context.Context) time.Duration {
	var sum time.Duration
	for _, d := range b.pgBackendCPU(ctx) {
		sum += d
	}
	return sum
}

// takeCPU reads the snapshot.
func (b *bench) takeCPU(ctx context.Context, servicePID int) cpuSnapshot {
	s := cpuSnapshot{service: pidCPU(servicePID), pg: b.pgBackendCPU(ctx), bench: pidCPU(os.Getpid())}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		if comm, err := os.ReadFile(filepath.Join(d, "comm")); err == nil && strings.TrimSpace(string(comm)) == "redis-server" {
			s.redis += pidCPU(pid)
		}
	}
	if data, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(data), "\n")
		f := strings.Fields(line)
		for i := 1; i < len(f); i++ {
			if i == 4 || i == 5 { // idle, iowait
				continue
			}
			v, _ := strconv.ParseInt(f[i], 10, 64)
			s.machine += time.Duration(v) * time.Second / clockTicks
		}
	}
	return s
}

// perEmail is the CPU milliseconds per email of each part between a and b.
func (a cpuSnapshot) perEmail(b cpuSnapshot, emails int64) []string {
	ms := func(d time.Duration) string {
		if emails <= 0 {
			return "—"
		}
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond)/float64(emails), 'f', 3, 64)
	}
	var pg time.Duration
	for pid, d := range b.pg {
		pg += d - a.pg[pid] // a backend that connected meanwhile counts whole
	}
	return []string{ms(b.service - a.service), ms(pg), ms(b.redis - a.redis),
		ms(b.bench - a.bench), ms(b.machine - a.machine)}
}

// pgCounts is what PostgreSQL's statistics say the bench database did:
// commits, and rows inserted, updated (and how many of those were HOT,
// touching no index) and deleted per table, partitions counted with their
// parent table.
type pgCounts struct {
	commits int64
	tables  map[string][4]int64 // ins, upd, hot, del
}

var partitionSuffix = regexp.MustCompile(`_p\d{4}_\d{2}$|_default$`)

func (b *bench) takePGCounts(ctx context.Context) pgCounts {
	c := pgCounts{tables: map[string][4]int64{}}
	// Statistics reach the shared counters up to a second late.
	_, _ = b.pool.Exec(ctx, "SELECT pg_stat_clear_snapshot()")
	_ = b.pool.QueryRow(ctx, "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").Scan(&c.commits)
	rows, err := b.pool.Query(ctx, "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del FROM pg_stat_user_tables")
	if err != nil {
		return c
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var v [4]int64
		if rows.Scan(&name, &v[0], &v[1], &v[2], &v[3]) != nil {
			continue
		}
		name = partitionSuffix.ReplaceAllString(name, "")
		t := c.tables[name]
		for i := range v {
			t[i] += v[i]
		}
		c.tables[name] = t
	}
	return c
}

// perEmail lists, per email, the commits and each table's row writes
// between a and b, for the tables that had any.
func (a pgCounts) perEmail(b pgCounts, emails int64) [][]string {
	if emails <= 0 {
		return nil
	}
	f := func(v int64) string { return strconv.FormatFloat(float64(v)/float64(emails), 'f', 2, 64) }
	out := [][]string{{"(commits)", f(b.commits - a.commits), "", "", ""}}
	names := make([]string, 0, len(b.tables))
	for n := range b.tables {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		x, y := a.tables[n], b.tables[n]
		if x == y {
			continue
		}
		out = append(out, []string{n, f(y[0] - x[0]), f(y[1] - x[1]), f(y[2] - x[2]), f(y[3] - x[3])})
	}
	return out
}
