package handlers

import (
	"context"
	"reflect"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/store"
)

// auditEntry describes one mutation for the audit log.
type auditEntry struct {
	action       string // "queue.create", "api_key.revoke", …
	resourceType string
	resourceID   uuid.UUID
	appID        uuid.UUID // the app concerned; uuid.Nil for none
	before       any       // nil on creation
	after        any       // nil on deletion
}

// audit records a mutation in the transaction tx that makes it, with who
// did it (the app of the API key, or the admin), from where and in which
// request. Secrets must never be in before/after: pass API shapes, which
// carry none.
func (h *Handler) audit(ctx context.Context, tx *store.Store, e auditEntry) error {
	ri := requestInfoFrom(ctx)
	p := &store.AuditInsertParams{
		Action: e.action, ResourceType: e.resourceType, Before: addressable(e.before), After: addressable(e.after),
		IP: ri.IP, UserAgent: ri.UserAgent, RequestID: ri.ID,
	}
	if e.resourceID != uuid.Nil {
		p.ResourceID = &e.resourceID
	}
	if e.appID != uuid.Nil {
		p.AppID = &e.appID
	}
	switch pr, ok := ctx.Value(principalKey{}).(*principal); {
	case ok:
		p.ActorType, p.ActorID = store.ActorApp, &pr.appID
		if p.AppID == nil {
			p.AppID = &pr.appID
		}
	case isAdmin(ctx):
		p.ActorType = store.ActorAdmin
	default:
		p.ActorType = store.ActorSystem
	}
	return tx.AuditInsert(ctx, p)
}

// addressable returns a pointer to v when v is a struct value. Generated
// types implement json.Marshaler on their pointers only; encoded as plain
// values their optional fields do not encode, so the audit entry (and the
// request) would fail.
func addressable(v any) any {
	if v == nil {
		return nil
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Struct {
		return v
	}
	p := reflect.New(rv.Type())
	p.Elem().Set(rv)
	return p.Interface()
}
