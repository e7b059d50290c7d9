package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// appQueries are the statements of sql/queries/apps.sql.
type appQueries struct {
	AppInsert       string
	AppGet          string
	AppGetForUpdate string
	AppUpdate       string
	AppList         string
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

// AppGetForUpdate returns an app and locks its row until the transaction
// ends. Call it on a transaction's Store.
func (s *Store) AppGetForUpdate(ctx context.Context, id uuid.UUID) (*App, error) {
	rows, err := s.db.Query(ctx, s.q.AppGetForUpdate, pgx.NamedArgs{"id": id})
	if err != nil {
		return nil, notFound(err, "locking app")
	}
	app, err := pgx.CollectExactlyOneRow(rows, pgx.RowToAddrOfStructByName[App])
	if err != nil {
		return nil, notFound(err, "locking app")
	}
	return app, nil
}

// AppUpdate writes every editable field of a (its id, name, description,
// is_active, sandbox_mode, webhook_url, limits and settings) and returns the
// stored row. Read a with AppGetForUpdate in the same transaction and change
// only what the request names, so nothing else is overwritten.
func (s *Store) AppUpdate(ctx context.Context, a *App) (*App, error) {
	rows, err := s.db.Query(ctx, s.q.AppUpdate, pgx.NamedArgs{
		"id": a.ID, "name": a.Name, "description": a.Description, "is_active": a.IsActive,
		"sandbox_mode": a.SandboxMode, "webhook_url": a.WebhookURL, "daily_limit": a.DailyLimit,
		"monthly_limit": a.MonthlyLimit, "settings": a.Settings,
	})
	if err != nil {
		return nil, notFound(err, "updating app")
	}
	app, err := pgx.CollectExactlyOneRow(rows, pgx.RowToAddrOfStructByName[App])
	if err != nil {
		return nil, notFound(err, "updating app")
	}
	return app, nil
}

// AppListParams page the list of apps, newest first.
type AppListParams struct {
	After *Cursor
	Limit int
}

// AppList returns up to Limit apps and whether more follow. Apps are the
// tenants themselves, so this is for the admin only.
func (s *Store) AppList(ctx context.Context, p *AppListParams) ([]*App, bool, error) {
	args := pgx.NamedArgs{"cursor_created_at": nil, "cursor_id": nil, "limit": p.Limit + 1}
	if p.After != nil {
		args["cursor_created_at"], args["cursor_id"] = p.After.CreatedAt, p.After.ID
	}
	rows, err := s.db.Query(ctx, s.q.AppList, args)
	if err != nil {
		return nil, false, fmt.Errorf("listing apps: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToAddrOfStructByName[App])
	if err != nil {
		return nil, false, fmt.Errorf("listing apps: %w", err)
	}
	more := len(list) > p.Limit
	if more {
		list = list[:p.Limit]
	}
	return list, more, nil
}

// Position is the place of an app in a list.
func (r *App) Position() Cursor { return Cursor{CreatedAt: r.CreatedAt, ID: r.ID} }
