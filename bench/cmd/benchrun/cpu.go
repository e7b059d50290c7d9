package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// clockTicks is the kernel's USER_HZ: /proc reports CPU times in these.
const clockTicks = 100

// cpuSnapshot is CPU time used so far, in clock ticks, by the processes a
// phase cares about, and by the whole machine. Differences of two
// snapshots say where a phase's CPU went; CPU time per email hardly
// depends on what else the machine is doing, unlike a rate.
type cpuSnapshot struct {
	service int64 // the service process measured
	pgPIDs  map[int]int64
	redis   int64
	bench   int64 // this process: the SMTP sink and the load generator
	machine int64 // all non-idle time of all cores
}

// takeCPU reads the snapshot. PostgreSQL's share is that of the backends
// connected to the bench database (pg_stat_activity), so other work on
// the same server is not counted; its shared background processes (WAL
// writer, checkpointer) are left out.
func (b *bench) takeCPU(ctx context.Context, servicePID int) cpuSnapshot {
	s := cpuSnapshot{pgPIDs: map[int]int64{}}
	s.service = procTicks(servicePID)
	rows, err := b.pool.Query(ctx, "SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
	if err == nil {
		for rows.Next() {
			var pid int
			if rows.Scan(&pid) == nil {
				s.pgPIDs[pid] = procTicks(pid)
			}
		}
		rows.Close()
	}
	s.bench = procTicks(os.Getpid())
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join(d, "comm"))
		if err != nil {
			continue
		}
		switch strings.TrimSpace(string(comm)) {
		case "redis-server":
			s.redis += procTicks(pid)
		}
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		for i := 1; i < len(f); i++ {
			if i == 4 || i == 5 { // idle, iowait
				continue
			}
			v, _ := strconv.ParseInt(f[i], 10, 64)
			s.machine += v
		}
	}
	return s
}

// procTicks is utime+stime of pid, in clock ticks; 0 if it is gone.
func procTicks(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command, which is in parentheses and may hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime 15.
	var t int64
	for k := 11; k < 13 && k < len(f); k++ {
		v, _ := strconv.ParseInt(f[k], 10, 64)
		t += v
	}
	return t
}

// perEmail is the CPU milliseconds per email of each part between a and b.
func (a cpuSnapshot) perEmail(b cpuSnapshot, emails int64) []string {
	ms := func(t int64) string {
		if emails <= 0 {
			return "—"
		}
		return strconv.FormatFloat(float64(t)*1000/clockTicks/float64(emails), 'f', 3, 64)
	}
	var pg int64
	for pid, t := range b.pgPIDs {
		pg += t - a.pgPIDs[pid] // a backend that connected meanwhile counts whole
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
