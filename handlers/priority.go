package handlers

import (
	"context"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/oas"
)

// checkPriority enforces the app's settings.max_priority on an email's own
// priority: an email may raise its urgency above its queue's, but only up
// to what the app was granted, or one tenant could jump every other
// tenant's mail in the critical lane. The app is read only when the email
// names a priority, so the usual request costs no extra query.
func (h *Handler) checkPriority(ctx context.Context, appID uuid.UUID, priority oas.OptInt) error {
	p, ok := priority.Get()
	if !ok {
		return nil
	}
	app, err := h.store.AppGet(ctx, appID)
	if err != nil {
		return err
	}
	if maxP := app.Settings.MaxPriority; maxP != nil && p > *maxP {
		return invalid("priority", "priority %d is above this app's max_priority of %d", p, *maxP)
	}
	return nil
}
