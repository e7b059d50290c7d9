package handlers

import (
	"context"
	"errors"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"

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
	name, err := appName(req.Name)
	if err != nil {
		return nil, err
	}
	p := &store.AppInsertParams{Name: name, SandboxMode: req.SandboxMode.Or(false)}
	if v, ok := req.Description.Get(); ok {
		p.Description = &v
	}
	if v, ok := req.WebhookURL.Get(); ok {
		if p.WebhookURL, err = webhookURL(v); err != nil {
			return nil, err
		}
	}
	if v, ok := req.DailyLimit.Get(); ok {
		if p.DailyLimit, err = appLimit("daily_limit", v); err != nil {
			return nil, err
		}
	}
	if v, ok := req.MonthlyLimit.Get(); ok {
		if p.MonthlyLimit, err = appLimit("monthly_limit", v); err != nil {
			return nil, err
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
			out := appToAPI(app)
			// The API shape of the app only: the key's plaintext must never reach the log.
			// A pointer, because only *oas.App has the generated MarshalJSON.
			if err := h.audit(ctx, tx, auditEntry{
				action: "app.create", resourceType: "app", resourceID: app.ID, appID: app.ID, after: &out,
			}); err != nil {
				return nil, err
			}
			return &oas.AppCreated{App: out, APIKey: apiKeyCreatedToAPI(key, plain)}, nil
		})
}

// ListApps lists every tenant, newest first.
func (h *Handler) ListApps(ctx context.Context, params oas.ListAppsParams) (*oas.AppList, error) {
	p := &store.AppListParams{Limit: params.Limit.Or(50)}
	var err error
	if p.After, err = h.cursorParam(params.Cursor); err != nil {
		return nil, err
	}
	list, more, err := h.store.AppList(ctx, p)
	if err != nil {
		return nil, err
	}
	out := &oas.AppList{HasMore: more}
	out.Data, out.Cursor = page(h, list, more, appToAPI)
	return out, nil
}

// GetApp returns one tenant.
func (h *Handler) GetApp(ctx context.Context, params oas.GetAppParams) (*oas.App, error) {
	a, err := h.store.AppGet(ctx, params.AppId)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound("app")
	}
	if err != nil {
		return nil, err
	}
	out := appToAPI(a)
	return &out, nil
}

// UpdateApp changes the fields present in the request and nothing else:
// null clears webhook_url and lifts a daily or monthly limit; settings, when
// present, replaces the app's settings as a whole so a setting can be
// removed. The row is locked while the request is merged into it, so
// concurrent updates of different fields do not undo each other.
func (h *Handler) UpdateApp(ctx context.Context, req *oas.AppUpdate, params oas.UpdateAppParams) (*oas.App, error) {
	// Validate everything before touching the database.
	var (
		name           string
		webhook        *string
		daily, monthly *int32
		err            error
	)
	if v, ok := req.Name.Get(); ok {
		if name, err = appName(v); err != nil {
			return nil, err
		}
	}
	if req.WebhookURL.Set && !req.WebhookURL.Null {
		if webhook, err = webhookURL(req.WebhookURL.Value); err != nil {
			return nil, err
		}
	}
	if req.DailyLimit.Set && !req.DailyLimit.Null {
		if daily, err = appLimit("daily_limit", req.DailyLimit.Value); err != nil {
			return nil, err
		}
	}
	if req.MonthlyLimit.Set && !req.MonthlyLimit.Null {
		if monthly, err = appLimit("monthly_limit", req.MonthlyLimit.Value); err != nil {
			return nil, err
		}
	}

	var out oas.App
	err = h.store.Tx(ctx, func(tx *store.Store) error {
		cur, err := tx.AppGetForUpdate(ctx, params.AppId)
		if errors.Is(err, store.ErrNotFound) {
			return notFound("app")
		}
		if err != nil {
			return err
		}
		next := *cur
		if req.Name.Set {
			next.Name = name
		}
		if v, ok := req.Description.Get(); ok {
			next.Description = &v
		}
		if v, ok := req.IsActive.Get(); ok {
			next.IsActive = v
		}
		if v, ok := req.SandboxMode.Get(); ok {
			next.SandboxMode = v
		}
		if req.WebhookURL.Set {
			next.WebhookURL = webhook // nil for null: webhooks off
		}
		if req.DailyLimit.Set {
			next.DailyLimit = daily // nil for null: unlimited
		}
		if req.MonthlyLimit.Set {
			next.MonthlyLimit = monthly
		}
		if s, ok := req.Settings.Get(); ok {
			next.Settings = appSettingsFromAPI(s)
		}
		out, err = h.appSave(ctx, tx, cur, &next, "app.update")
		return err
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// DeactivateApp marks an app inactive; its data stays. Its keys are refused
// (403 app_inactive) once the key cache forgets them, within a second. It
// is idempotent: deactivating an inactive app changes and records nothing.
func (h *Handler) DeactivateApp(ctx context.Context, params oas.DeactivateAppParams) (*oas.App, error) {
	var out oas.App
	err := h.store.Tx(ctx, func(tx *store.Store) error {
		cur, err := tx.AppGetForUpdate(ctx, params.AppId)
		if errors.Is(err, store.ErrNotFound) {
			return notFound("app")
		}
		if err != nil {
			return err
		}
		if !cur.IsActive {
			out = appToAPI(cur)
			return nil
		}
		next := *cur
		next.IsActive = false
		out, err = h.appSave(ctx, tx, cur, &next, "app.deactivate")
		return err
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// quotaExceeded turns the store's refusal of an app's daily or monthly
// limit into a 429 whose Retry-After is the wait until the limit resets;
// other errors pass through. Accepting code calls it on the error of
// store.AppUsageTake.
func quotaExceeded(err error) error {
	var q *store.QuotaError
	if !errors.As(err, &q) {
		return err
	}
	e := newAPIError(http.StatusTooManyRequests, "quota_exceeded", "%s", q.Error())
	e.retryAfter = max(1, int(math.Ceil(time.Until(q.ResetsAt).Seconds())))
	return e
}

// appName checks an app's name and returns it trimmed.
func appName(v string) (string, error) {
	name := strings.TrimSpace(v)
	if name == "" {
		return "", invalid("name", "name must not be blank")
	}
	if hasControl(name) {
		return "", invalid("name", "name must not contain control characters")
	}
	return name, nil
}

// webhookURL checks a webhook URL: absolute http(s), and short enough for
// its column (a longer one would otherwise fail in the database as a 500).
func webhookURL(v url.URL) (*string, error) {
	if v.Scheme != "https" && v.Scheme != "http" || v.Host == "" {
		return nil, invalid("webhook_url", "webhook_url must be an absolute http(s) URL")
	}
	s := v.String()
	if len(s) > 2048 {
		return nil, invalid("webhook_url", "webhook_url must be at most 2048 characters")
	}
	return &s, nil
}

// appLimit checks a daily or monthly limit, which the database holds as a
// positive 32-bit integer.
func appLimit(field string, v int) (*int32, error) {
	if v < 1 {
		return nil, invalid(field, "%s must be at least 1 (omit it for no limit)", field)
	}
	if v > math.MaxInt32 {
		return nil, invalid(field, "%s must be at most %d", field, math.MaxInt32)
	}
	n := int32(v)
	return &n, nil
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
		if u, err := url.Parse(*a.WebhookURL); err == nil {
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

// appSave writes next over cur in tx and records the change as action.
func (h *Handler) appSave(ctx context.Context, tx *store.Store, cur, next *store.App, action string) (oas.App, error) {
	updated, err := tx.AppUpdate(ctx, next)
	if err != nil {
		return oas.App{}, err
	}
	out, before := appToAPI(updated), appToAPI(cur)
	return out, h.audit(ctx, tx, auditEntry{
		action: action, resourceType: "app", resourceID: cur.ID, appID: cur.ID,
		before: &before, after: &out,
	})
}
