package partitions_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/mailqueue/mailqueue/partitions"
	"github.com/mailqueue/mailqueue/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The handles the service uses must all be accepted by Ensure.
var (
	_ partitions.DB = (*pgxpool.Pool)(nil)
	_ partitions.DB = (*pgx.Conn)(nil)
	_ partitions.DB = (pgx.Tx)(nil)
)

func TestName(t *testing.T) {
	t.Parallel()
	newYork, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatalf("loading time zone: %v", err)
	}
	for _, tc := range []struct {
		month time.Time
		want  string
	}{
		{time.Date(2026, 11, 28, 4, 0, 0, 0, time.UTC), "emails_p2026_11"},
		{time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), "emails_p2027_01"},
		// 19:30 on New Year's Eve in New York is already January in UTC.
		{time.Date(2026, 12, 31, 19, 30, 0, 0, newYork), "emails_p2027_01"},
	} {
		if got := partitions.Name("emails", tc.month); got != tc.want {
			t.Errorf("Name(emails, %s) = %s, want %s", tc.month, got, tc.want)
		}
	}
}

// dropPartitions removes every partition of the partitioned tables, which
// the test database has for the current months, so a test can choose which
// exist.
func dropPartitions(ctx context.Context, t *testing.T, db *pgxpool.Pool) {
	t.Helper()
	rows, err := db.Query(ctx, `SELECT i.inhrelid::regclass::text FROM pg_inherits i
		WHERE i.inhparent = ANY ($1::text[]::regclass[])`, partitions.Tables)
	if err != nil {
		t.Fatalf("listing partitions: %v", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("listing partitions: %v", err)
	}
	for _, name := range names {
		if _, err := db.Exec(ctx, "DROP TABLE "+pgx.Identifier{name}.Sanitize()); err != nil {
			t.Fatalf("dropping partition %s: %v", name, err)
		}
	}
}

// wantNames lists the partitions of every table for months months from first.
func wantNames(first time.Time, months int) []string {
	var out []string
	for _, table := range partitions.Tables {
		for i := range months {
			out = append(out, partitions.Name(table, first.AddDate(0, i, 0)))
		}
	}
	return out
}

func TestEnsureCreatesMonthsAcrossYearEnd(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := testenv.DB(t)
	dropPartitions(ctx, t, pool)

	// A session in a far time zone must not shift the bounds, which are UTC.
	cfg, err := pgx.ParseConfig(pool.Config().ConnConfig.ConnString())
	if err != nil {
		t.Fatalf("parsing config: %v", err)
	}
	cfg.RuntimeParams["timezone"] = "Pacific/Kiritimati"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })

	now := time.Date(2026, 12, 15, 10, 0, 0, 0, time.UTC)
	created, err := partitions.Ensure(ctx, conn, now, partitions.MonthsAhead)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	want := wantNames(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), 4)
	if !slices.Equal(created, want) {
		t.Errorf("Ensure created %v, want %v", created, want)
	}

	created, err = partitions.Ensure(ctx, pool, now, partitions.MonthsAhead)
	if err != nil {
		t.Fatalf("second Ensure: %v", err)
	}
	if len(created) != 0 {
		t.Errorf("second Ensure created %v, want nothing", created)
	}

	// The last instant of January and the first of February land in their
	// own months' partitions.
	for _, tc := range []struct {
		at   time.Time
		want string
	}{
		{time.Date(2027, 1, 31, 23, 59, 59, 999999000, time.UTC), "audit_logs_p2027_01"},
		{time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC), "audit_logs_p2027_02"},
		{time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), "audit_logs_p2026_12"},
	} {
		var got string
		err := conn.QueryRow(ctx, `INSERT INTO audit_logs (id, created_at, actor_type, action, resource_type)
			VALUES ($1, $2, 'system', 'test', 'test') RETURNING tableoid::regclass::text`, uuid.New(), tc.at).Scan(&got)
		if err != nil {
			t.Fatalf("inserting an audit log at %s: %v", tc.at, err)
		}
		if got != tc.want {
			t.Errorf("row at %s went to %s, want %s", tc.at, got, tc.want)
		}
	}
	_, err = conn.Exec(ctx, `INSERT INTO audit_logs (id, created_at, actor_type, action, resource_type)
		VALUES ($1, $2, 'system', 'test', 'test')`, uuid.New(), time.Date(2026, 11, 30, 23, 59, 59, 0, time.UTC))
	if err == nil {
		t.Error("a row in November, which has no partition, was accepted")
	}
}

func TestEnsureConcurrentCallsCreateEachPartitionOnce(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := testenv.DB(t)
	dropPartitions(ctx, t, pool)

	now := time.Date(2029, 3, 3, 0, 0, 0, 0, time.UTC)
	const callers = 5
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		created []string
		errs    []error
	)
	for range callers {
		wg.Go(func() {
			c, err := partitions.Ensure(ctx, pool, now, partitions.MonthsAhead)
			mu.Lock()
			defer mu.Unlock()
			created = append(created, c...)
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		t.Errorf("concurrent Ensure: %v", err)
	}
	slices.Sort(created)
	want := wantNames(time.Date(2029, 3, 1, 0, 0, 0, 0, time.UTC), 4)
	slices.Sort(want)
	if !slices.Equal(created, want) {
		t.Errorf("together the calls created %v, want each of %v exactly once", created, want)
	}
}

func TestEnsureInsideTransaction(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := testenv.DB(t)

	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	created, err := partitions.Ensure(ctx, tx, time.Date(2035, 7, 1, 0, 0, 0, 0, time.UTC), 0)
	if err != nil {
		t.Fatalf("Ensure in a transaction: %v", err)
	}
	if want := wantNames(time.Date(2035, 7, 1, 0, 0, 0, 0, time.UTC), 1); !slices.Equal(created, want) {
		t.Errorf("created %v, want %v", created, want)
	}
	// Rolling back the caller's transaction takes the partitions with it.
	if err := tx.Rollback(ctx); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	var exists bool
	if err := pool.QueryRow(ctx, "SELECT to_regclass('emails_p2035_07') IS NOT NULL").Scan(&exists); err != nil {
		t.Fatalf("checking partition: %v", err)
	}
	if exists {
		t.Error("partition survived the rollback of the caller's transaction")
	}
}

func TestEnsureRejectsNegativeMonthsAhead(t *testing.T) {
	t.Parallel()
	if _, err := partitions.Ensure(t.Context(), testenv.DB(t), time.Now(), -1); err == nil {
		t.Error("Ensure accepted monthsAhead -1")
	}
}

// planNode is the part of EXPLAIN (FORMAT JSON) output the pruning test reads.
type planNode struct {
	NodeType        string     `json:"Node Type"`
	RelationName    string     `json:"Relation Name"`
	SubplansRemoved int        `json:"Subplans Removed"`
	ActualRows      float64    `json:"Actual Rows"`
	Plans           []planNode `json:"Plans"`
}

// scanned returns the relations the plan reads and the subplans pruned at
// executor start-up, over the whole tree.
func (n planNode) scanned() (relations []string, removed int) {
	if n.RelationName != "" {
		relations = append(relations, n.RelationName)
	}
	removed = n.SubplansRemoved
	for _, c := range n.Plans {
		r, k := c.scanned()
		relations = append(relations, r...)
		removed += k
	}
	return relations, removed
}

// explain runs an EXPLAIN (FORMAT JSON) statement and returns its root plan.
func explain(ctx context.Context, t *testing.T, conn *pgx.Conn, sql string, args ...any) planNode {
	t.Helper()
	var raw []byte
	if err := conn.QueryRow(ctx, sql, args...).Scan(&raw); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	var out []struct {
		Plan planNode `json:"Plan"`
	}
	if err := json.Unmarshal(raw, &out); err != nil || len(out) != 1 {
		t.Fatalf("decoding plan %s: %v", raw, err)
	}
	return out[0].Plan
}

// TestLookupByIDAndCreatedAtScansOnePartition proves DESIGN.md decision 2:
// because an email's id carries its created_at, a lookup passes both and
// PostgreSQL reads a single partition, whether the statement is planned for
// its parameter values (custom plan) or once for all values (generic plan,
// pruned when the executor starts).
func TestLookupByIDAndCreatedAtScansOnePartition(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, testenv.DatabaseURL(t))
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })

	if _, err := partitions.Ensure(ctx, conn, time.Date(2030, 1, 15, 0, 0, 0, 0, time.UTC), 2); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	appID, queueID := uuid.New(), uuid.New()
	if _, err := conn.Exec(ctx, "INSERT INTO apps (id, name) VALUES ($1, 'pruning')", appID); err != nil {
		t.Fatalf("inserting app: %v", err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO queues (id, app_id, name) VALUES ($1, $2, 'default')", queueID, appID); err != nil {
		t.Fatalf("inserting queue: %v", err)
	}
	type email struct {
		id uuid.UUID
		at time.Time
	}
	emails := []email{
		{uuid.New(), time.Date(2030, 1, 10, 8, 0, 0, 0, time.UTC)},
		{uuid.New(), time.Date(2030, 1, 20, 9, 30, 0, 0, time.UTC)},
		{uuid.New(), time.Date(2030, 2, 5, 12, 0, 0, 0, time.UTC)},
		{uuid.New(), time.Date(2030, 3, 1, 0, 0, 0, 0, time.UTC)},
	}
	for _, e := range emails {
		_, err := conn.Exec(ctx, `INSERT INTO emails (id, created_at, app_id, queue_id, message_id, from_address,
				to_addresses, subject, priority, max_retries)
			VALUES ($1, $2, $3, $4, $5, 'from@example.com', '["to@example.com"]', 'hello', 5, 3)`,
			e.id, e.at, appID, queueID, fmt.Sprintf("<%s@example.com>", e.id))
		if err != nil {
			t.Fatalf("inserting email at %s: %v", e.at, err)
		}
	}
	if _, err := conn.Exec(ctx, "ANALYZE emails"); err != nil {
		t.Fatalf("analyze: %v", err)
	}
	var partitionCount int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'emails'::regclass").Scan(&partitionCount); err != nil {
		t.Fatalf("counting partitions: %v", err)
	}
	if partitionCount < 3 {
		t.Fatalf("emails has %d partitions, the test needs several", partitionCount)
	}

	target := emails[1]
	const wantPartition = "emails_p2030_01"
	check := func(name string, plan planNode, wantRemoved int) {
		t.Helper()
		relations, removed := plan.scanned()
		if !slices.Equal(relations, []string{wantPartition}) {
			t.Errorf("%s plan scans %v, want only %s", name, relations, wantPartition)
		}
		if removed != wantRemoved {
			t.Errorf("%s plan removed %d subplans at start-up, want %d", name, removed, wantRemoved)
		}
	}

	// The statement as the store sends it, with bind parameters.
	plan := explain(ctx, t, conn, "EXPLAIN (ANALYZE, FORMAT JSON) SELECT * FROM emails WHERE id = $1 AND created_at = $2",
		target.id, target.at)
	check("parameterised", plan, 0)

	// A prepared statement, forced to each plan type. The literals are the
	// test's own values.
	if _, err := conn.Exec(ctx, "PREPARE email_by_id (uuid, timestamptz) AS SELECT * FROM emails WHERE id = $1 AND created_at = $2"); err != nil {
		t.Fatalf("prepare: %v", err)
	}
	execute := fmt.Sprintf("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE email_by_id ('%s', '%s')", target.id, target.at.Format(time.RFC3339Nano))

	if _, err := conn.Exec(ctx, "SET plan_cache_mode = force_custom_plan"); err != nil {
		t.Fatalf("set plan_cache_mode: %v", err)
	}
	check("custom", explain(ctx, t, conn, execute), 0)

	if _, err := conn.Exec(ctx, "SET plan_cache_mode = force_generic_plan"); err != nil {
		t.Fatalf("set plan_cache_mode: %v", err)
	}
	generic := explain(ctx, t, conn, execute)
	// Planned without the values, the plan holds every partition; all but
	// one are pruned when it starts ("Subplans Removed").
	check("generic", generic, partitionCount-1)
	if rows := findScan(generic, wantPartition); rows != 1 {
		t.Errorf("generic plan found %v rows in %s, want 1", rows, wantPartition)
	}
}

// findScan returns the actual rows of the scan of relation in the plan.
func findScan(n planNode, relation string) float64 {
	if n.RelationName == relation {
		return n.ActualRows
	}
	for _, c := range n.Plans {
		if r := findScan(c, relation); r != 0 {
			return r
		}
	}
	return 0
}
