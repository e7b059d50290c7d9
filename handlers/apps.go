package handlers

import (
	"context"
	"net/http"
	"strings"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/oas"
	"github.com/mailqueue/mailqueue/store"
)

// allScopes are every scope a key can hold; an app's first key gets them
// all, as its owner's master key.
var allScopes = []string{
	"email:send", "email:read", "queue:manage", "smtp:manage",
	"analytics:read", "suppression:manage", "admin",
}

// CreateApp creates an app, its "default" queue and its first API key in
// one transaction. The key's plaintext is in this response only.
func (h *Handler) CreateApp(ctx context.Context, req *oas.AppCreate, params oas.CreateAppParams) (*oas.AppCreated, error) {
	name := strings.TrimSpace(req.Name)
	if name == "" {
		return nil, invalid("name", "name must not be blank")
	}
	if hasControl(name) {
		return nil, invalid("name", "name must not contain control characters")
	}
	p := &store.AppInsertParams{Name: name, SandboxMode: req.SandboxMode.Or(false)}
	if v, ok := req.Description.Get(); ok {
		p.Description = &v
	}
	if v, ok := req.WebhookURL.Get(); ok {
		if v.Scheme != "https" && v.Scheme != "http" || v.Host == "" {
			return nil, invalid("webhook_url", "webhook_url must be an absolute http(s) URL")
		}
		s := v.String()
		p.WebhookURL = &s
	}
	for field, src := range map[string]oas.OptInt{"daily_limit": req.DailyLimit, "monthly_limit": req.MonthlyLimit} {
		if v, ok := src.Get(); ok {
			if v < 1 {
				return nil, invalid(field, "%s must be at least 1 (omit it for no limit)", field)
			}
			n := int32(v)
			if field == "daily_limit" {
				p.DailyLimit = &n
			} else {
				p.MonthlyLimit = &n
			}
		}
	}
	if s, ok := req.Settings.Get(); ok {
		p.Settings = appSettingsFromAPI(s)
	}

	// Admin requests have no app yet: their idempotency keys live under the nil UUID.
	return idempotent(ctx, h, uuid.Nil, params.IdempotencyKey, "createApp", req, http.StatusCreated,
		func(tx *store.Store) (*oas.AppCreated, error) {
			app, err := tx.AppInsert(ctx, p)
			if err != nil {
				return nil, err
			}
			if _, err := tx.QueueInsert(ctx, &store.QueueInsertParams{
				AppID: app.ID, Name: store.DefaultQueueName, Priority: 5, MaxRetries: 5,
			}); err != nil {
				return nil, err
			}
			plain, digest := newAPIKey(app.SandboxMode)
			key, err := tx.APIKeyInsert(ctx, &store.APIKeyInsertParams{
				AppID: app.ID, Name: "Default key", Prefix: plain[:len(prefixLive)], Hash: digest,
				Last4: plain[len(plain)-4:], Scopes: allScopes,
			})
			if err != nil {
				return nil, err
			}
			return &oas.AppCreated{App: appToAPI(app), APIKey: apiKeyCreatedToAPI(key, plain)}, nil
		})
}

func appSettingsFromAPI(s oas.AppSettings) store.AppSettings {
	var out store.AppSettings
	if v, ok := s.RateLimit.Get(); ok {
		out.RateLimit = &v
	}
	if v, ok := s.MaxPriority.Get(); ok {
		out.MaxPriority = &v
	}
	if v, ok := s.RetentionDays.Get(); ok {
		out.RetentionDays = &v
	}
	return out
}

func appToAPI(a *store.App) oas.App {
	out := oas.App{
		ID: a.ID, Name: a.Name, IsActive: a.IsActive, SandboxMode: a.SandboxMode,
		CreatedAt: a.CreatedAt, UpdatedAt: a.UpdatedAt,
	}
	if a.Description != nil {
		out.Description = oas.NewOptString(*a.Description)
	}
	if a.WebhookURL != nil {
		if u, err := parseURL(*a.WebhookURL); err == nil {
			out.WebhookURL = oas.NewOptURI(*u)
		}
	}
	if a.DailyLimit != nil {
		out.DailyLimit = oas.NewOptInt(int(*a.DailyLimit))
	}
	if a.MonthlyLimit != nil {
		out.MonthlyLimit = oas.NewOptInt(int(*a.MonthlyLimit))
	}
	if v := a.Settings.RateLimit; v != nil {
		out.Settings.RateLimit = oas.NewOptInt(*v)
	}
	if v := a.Settings.MaxPriority; v != nil {
		out.Settings.MaxPriority = oas.NewOptInt(*v)
	}
	if v := a.Settings.RetentionDays; v != nil {
		out.Settings.RetentionDays = oas.NewOptInt(*v)
	}
	return out
}

func apiKeyCreatedToAPI(k *store.APIKey, plain string) oas.ApiKeyCreated {
	out := oas.ApiKeyCreated{
		ID: k.ID, Name: k.Name, Prefix: k.Prefix, Last4: k.Last4, IsActive: k.IsActive,
		CreatedAt: k.CreatedAt, Key: plain, IPAllowlist: []string{},
	}
	for _, s := range k.Scopes {
		out.Scopes = append(out.Scopes, oas.ApiKeyScope(s))
	}
	for _, p := range k.IPAllowlist {
		out.IPAllowlist = append(out.IPAllowlist, p.String())
	}
	if k.RateLimit != nil {
		out.RateLimit = oas.NewOptInt(int(*k.RateLimit))
	}
	if k.ExpiresAt != nil {
		out.ExpiresAt = oas.NewOptDateTime(*k.ExpiresAt)
	}
	return out
}
