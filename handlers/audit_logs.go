package handlers

import (
	"context"

	"github.com/mailqueue/mailqueue/oas"
	"github.com/mailqueue/mailqueue/store"
)

// ListAuditLogs lists the audit log across all tenants, newest first,
// filtered by actor, resource, action and time. It is for the admin only:
// the log names every tenant's actors and addresses.
func (h *Handler) ListAuditLogs(ctx context.Context, params oas.ListAuditLogsParams) (*oas.AuditLogList, error) {
	p := &store.AuditListParams{Limit: params.Limit.Or(50)}
	if v, ok := params.ActorID.Get(); ok {
		p.ActorID = &v
	}
	if v, ok := params.ResourceID.Get(); ok {
		p.ResourceID = &v
	}
	if v, ok := params.Action.Get(); ok {
		p.Action = &v
	}
	if v, ok := params.Since.Get(); ok {
		p.Since = &v
	}
	var err error
	if p.After, err = h.cursorParam(params.Cursor); err != nil {
		return nil, err
	}
	list, more, err := h.store.AuditList(ctx, p)
	if err != nil {
		return nil, err
	}
	out := &oas.AuditLogList{HasMore: more}
	out.Data, out.Cursor = page(h, list, more, auditLogToAPI)
	return out, nil
}

func auditLogToAPI(e *store.AuditEntry) oas.AuditLog {
	out := oas.AuditLog{
		ID: e.ID, ActorType: oas.AuditLogActorType(e.ActorType), Action: e.Action,
		ResourceType: e.ResourceType, CreatedAt: e.CreatedAt,
	}
	if e.ActorID != nil {
		out.ActorID = oas.NewOptUUID(*e.ActorID)
	}
	if e.ResourceID != nil {
		out.ResourceID = oas.NewOptUUID(*e.ResourceID)
	}
	if len(e.Changes) > 0 && string(e.Changes) != "null" {
		var c oas.AuditLogChanges
		if err := c.UnmarshalJSON(e.Changes); err == nil {
			out.Changes = oas.NewOptAuditLogChanges(c)
		}
	}
	for dst, src := range map[*oas.OptString]*string{
		&out.IPAddress: e.IPAddress, &out.UserAgent: e.UserAgent, &out.RequestID: e.RequestID,
	} {
		if src != nil {
			*dst = oas.NewOptString(*src)
		}
	}
	return out
}
