package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// healthQueries are the statements of sql/queries/health.sql.
type healthQueries struct {
	HealthCounts string
}

// HealthCounts are whole-service numbers for the detailed health check.
type HealthCounts struct {
	Pending int64 `db:"pending"`
	Running int64 `db:"running"`
}

// HealthCountsGet counts pending and running send jobs.
func (s *Store) HealthCountsGet(ctx context.Context) (*HealthCounts, error) {
	rows, err := s.db.Query(ctx, s.q.HealthCounts)
	if err != nil {
		return nil, fmt.Errorf("counting jobs: %w", err)
	}
	c, err := pgx.CollectExactlyOneRow(rows, pgx.RowToAddrOfStructByName[HealthCounts])
	if err != nil {
		return nil, fmt.Errorf("counting jobs: %w", err)
	}
	return c, nil
}
