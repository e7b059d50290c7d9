package store

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// appQueries are the statements of sql/queries/apps.sql.
type appQueries struct {
	AppInsert string
	AppGet    string
}

// App is a tenant: an application that sends email through Mail Queue.
type App struct {
	ID           uuid.UUID   `db:"id"`
	Name         string      `db:"name"`
	Description  *string     `db:"description"`
	IsActive     bool        `db:"is_active"`
	SandboxMode  bool        `db:"sandbox_mode"`
	WebhookURL   *string     `db:"webhook_url"`
	DailyLimit   *int32      `db:"daily_limit"`
	MonthlyLimit *int32      `db:"monthly_limit"`
	Settings     AppSettings `db:"settings"`
	CreatedAt    time.Time   `db:"created_at"`
	UpdatedAt    time.Time   `db:"updated_at"`
}

// AppSettings are an app's tunables, stored as JSON so new ones need no
// migration. Absent means "no limit" or "the service default".
type AppSettings struct {
	RateLimit     *int `json:"rate_limit,omitempty"`
	MaxPriority   *int `json:"max_priority,omitempty"`
	RetentionDays *int `json:"retention_days,omitempty"`
}

// AppInsertParams are the fields of a new app.
type AppInsertParams struct {
	Name         string
	Description  *string
	SandboxMode  bool
	WebhookURL   *string
	DailyLimit   *int32
	MonthlyLimit *int32
	Settings     AppSettings
}

// AppInsert creates an app.
func (s *Store) AppInsert(ctx context.Context, p *AppInsertParams) (*App, error) {
	id, _ := NewID()
	rows, err := s.db.Query(ctx, s.q.AppInsert, pgx.NamedArgs{
		"id": id, "name": p.Name, "description": p.Description, "sandbox_mode": p.SandboxMode,
		"webhook_url": p.WebhookURL, "daily_limit": p.DailyLimit, "monthly_limit": p.MonthlyLimit,
		"settings": p.Settings,
	})
	if err != nil {
		return nil, notFound(err, "inserting app")
	}
	app, err := pgx.CollectExactlyOneRow(rows, pgx.RowToAddrOfStructByName[App])
	if err != nil {
		return nil, notFound(err, "inserting app")
	}
	return app, nil
}

// AppGet returns an app by id.
func (s *Store) AppGet(ctx context.Context, id uuid.UUID) (*App, error) {
	rows, err := s.db.Query(ctx, s.q.AppGet, pgx.NamedArgs{"id": id})
	if err != nil {
		return nil, notFound(err, "getting app")
	}
	app, err := pgx.CollectExactlyOneRow(rows, pgx.RowToAddrOfStructByName[App])
	if err != nil {
		return nil, notFound(err, "getting app")
	}
	return app, nil
}
