package store

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// auditQueries are the statements of sql/queries/audit_logs.sql.
type auditQueries struct {
	AuditInsert string
	AuditList   string
}

// Actor types of audit entries.
const (
	ActorApp    = "app"    // an app, through one of its API keys
	ActorAdmin  = "admin"  // the holder of MQ_ADMIN_SECRET
	ActorSystem = "system" // Mail Queue itself
	ActorUser   = "user"   // a dashboard user
)

// AuditEntry is one recorded mutation.
type AuditEntry struct {
	ID           uuid.UUID       `db:"id"`
	CreatedAt    time.Time       `db:"created_at"`
	ActorType    string          `db:"actor_type"`
	ActorID      *uuid.UUID      `db:"actor_id"`
	AppID        *uuid.UUID      `db:"app_id"`
	Action       string          `db:"action"`
	ResourceType string          `db:"resource_type"`
	ResourceID   *uuid.UUID      `db:"resource_id"`
	Changes      json.RawMessage `db:"changes"`
	IPAddress    *string         `db:"ip_address"`
	UserAgent    *string         `db:"user_agent"`
	RequestID    *string         `db:"request_id"`
}

// AuditInsertParams describe a mutation. Before and After are encoded as
// {"before": …, "after": …}; either may be nil (creation, deletion).
type AuditInsertParams struct {
	ActorType    string
	ActorID      *uuid.UUID
	AppID        *uuid.UUID
	Action       string
	ResourceType string
	ResourceID   *uuid.UUID
	Before       any
	After        any
	IP           net.IP
	UserAgent    string
	RequestID    string
}

// AuditInsert records a mutation. Call it on the Store of the transaction
// that makes the change, so the change and its record commit together.
func (s *Store) AuditInsert(ctx context.Context, p *AuditInsertParams) error {
	changes, err := json.Marshal(map[string]any{"before": p.Before, "after": p.After})
	if err != nil {
		return fmt.Errorf("encoding audit changes: %w", err)
	}
	id, at := NewID()
	var ip any
	if p.IP != nil {
		ip = p.IP.String()
	}
	ua := p.UserAgent
	if len(ua) > 512 {
		ua = ua[:512]
	}
	_, err = s.db.Exec(ctx, s.q.AuditInsert, pgx.NamedArgs{
		"id": id, "created_at": at, "actor_type": p.ActorType, "actor_id": p.ActorID,
		"app_id": p.AppID, "action": p.Action, "resource_type": p.ResourceType,
		"resource_id": p.ResourceID, "changes": json.RawMessage(changes), "ip_address": ip,
		"user_agent": emptyNil(ua), "request_id": emptyNil(p.RequestID),
	})
	if err != nil {
		return fmt.Errorf("recording audit entry %s: %w", p.Action, err)
	}
	return nil
}

// AuditListParams filter and page the audit log, newest first.
type AuditListParams struct {
	ActorID    *uuid.UUID
	AppID      *uuid.UUID
	ResourceID *uuid.UUID
	Action     *string
	Since      *time.Time
	After      *Cursor
	Limit      int
}

// AuditList returns up to Limit entries and whether more follow.
func (s *Store) AuditList(ctx context.Context, p *AuditListParams) ([]*AuditEntry, bool, error) {
	args := pgx.NamedArgs{
		"actor_id": p.ActorID, "app_id": p.AppID, "resource_id": p.ResourceID, "action": p.Action,
		"since": p.Since, "cursor_created_at": nil, "cursor_id": nil, "limit": p.Limit + 1,
	}
	if p.After != nil {
		args["cursor_created_at"], args["cursor_id"] = p.After.CreatedAt, p.After.ID
	}
	rows, err := s.db.Query(ctx, s.q.AuditList, args)
	if err != nil {
		return nil, false, fmt.Errorf("listing audit log: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToAddrOfStructByName[AuditEntry])
	if err != nil {
		return nil, false, fmt.Errorf("listing audit log: %w", err)
	}
	more := len(list) > p.Limit
	if more {
		list = list[:p.Limit]
	}
	return list, more, nil
}

func emptyNil(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// Position is the place of an audit entry in a list.
func (r *AuditEntry) Position() Cursor { return Cursor{CreatedAt: r.CreatedAt, ID: r.ID} }
