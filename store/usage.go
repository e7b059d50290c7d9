package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// usageQueries are the statements of sql/queries/app_usage.sql.
type usageQueries struct {
	AppUsageTake    string
	AppUsageLimited string
}

// Usage periods, as stored in app_usage.period.
const (
	PeriodDay   = "day"
	PeriodMonth = "month"
)

// QuotaError is returned by AppUsageTake when accepting more email would
// take an app past its daily or monthly limit.
type QuotaError struct {
	Period   string    // PeriodDay or PeriodMonth
	Limit    int64     // the app's limit for Period
	ResetsAt time.Time // when the next period starts (UTC)
}

func (e *QuotaError) Error() string {
	adjective := "daily"
	if e.Period == PeriodMonth {
		adjective = "monthly"
	}
	return fmt.Sprintf("%s limit of %d emails reached; it resets at %s",
		adjective, e.Limit, e.ResetsAt.UTC().Format(time.RFC3339))
}

// AppUsageTake counts n more emails against the app's daily and monthly
// limits for the UTC day and month of now, all or nothing. It returns a
// *QuotaError, and counts nothing, when either limit would be exceeded; for
// an app without limits it writes nothing at all.
//
// Call it in the transaction that accepts the email, so that a rolled-back
// accept gives its quota back and a refused one stores nothing. The counter
// rows stay locked until that transaction ends: accepts of an app with a
// limit are serialised on them, which is what makes the limit exact.
func (s *Store) AppUsageTake(ctx context.Context, appID uuid.UUID, n int, now time.Time) error {
	now = now.UTC()
	day := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	periods := []struct {
		name         string
		start, reset time.Time
	}{
		// Always day before month: every transaction locks the counters in
		// the same order, so concurrent accepts cannot deadlock.
		{PeriodDay, day, day.AddDate(0, 0, 1)},
		{PeriodMonth, month, month.AddDate(0, 1, 0)},
	}
	// A refused month must undo the day already counted: run both in one
	// transaction (the caller's, when there is one) and fail it.
	return s.Tx(ctx, func(tx *Store) error {
		for _, p := range periods {
			var limit int64
			var count *int64
			err := tx.db.QueryRow(ctx, tx.q.AppUsageTake, pgx.NamedArgs{
				"app_id": appID, "period": p.name, "period_start": p.start, "n": n,
			}).Scan(&limit, &count)
			switch {
			case errors.Is(err, pgx.ErrNoRows):
				continue // no limit for this period
			case err != nil:
				return fmt.Errorf("counting %s usage of app %s: %w", p.name, appID, err)
			case count == nil:
				return &QuotaError{Period: p.name, Limit: limit, ResetsAt: p.reset}
			}
		}
		return nil
	})
}
