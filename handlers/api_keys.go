package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/oas"
	"github.com/mailqueue/mailqueue/store"
)

// defaultKeyScopes are what a key gets when its creator names none: enough
// to send and read email, nothing that manages the app.
var defaultKeyScopes = []string{"email:send", "email:read"}

// maxGracePeriod mirrors ApiKeyRotate.grace_period_seconds' maximum (7 days).
const maxGracePeriod = 7 * 24 * time.Hour

// CreateApiKey issues a key for the calling app. Its plaintext is in this
// response only; the store keeps a digest, the prefix and the last four
// characters.
func (h *Handler) CreateApiKey(ctx context.Context, req *oas.ApiKeyCreate, params oas.CreateApiKeyParams) (*oas.ApiKeyCreated, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	name := strings.TrimSpace(req.Name)
	if name == "" {
		return nil, invalid("name", "name must not be blank")
	}
	if hasControl(name) {
		return nil, invalid("name", "name must not contain control characters")
	}
	p := &store.APIKeyInsertParams{AppID: pr.appID, Name: name, Scopes: defaultKeyScopes}
	if req.Scopes != nil {
		p.Scopes = make([]string, 0, len(req.Scopes))
		for _, s := range req.Scopes {
			if !slices.Contains(p.Scopes, string(s)) {
				p.Scopes = append(p.Scopes, string(s))
			}
		}
	}
	// A key must not be a way to gain what its creator lacks. Today only
	// admin keys reach here, and admin holds every scope, but the rule
	// belongs with key creation, not with who may call it.
	for i, s := range p.Scopes {
		if !hasScope(pr.scopes, s) {
			e := forbidden("scope_escalation", "a key cannot be granted the %q scope, which the calling key lacks", s)
			e.field = fieldIndex("scopes", i)
			return nil, e
		}
	}
	if v, ok := req.RateLimit.Get(); ok {
		if v < 1 || v > math.MaxInt32 {
			return nil, invalid("rate_limit", "rate_limit must be between 1 and %d requests per second", math.MaxInt32)
		}
		n := int32(v)
		p.RateLimit = &n
	}
	if p.IPAllowlist, err = parseIPAllowlist(req.IPAllowlist); err != nil {
		return nil, err
	}
	if v, ok := req.ExpiresAt.Get(); ok {
		if !v.After(time.Now()) {
			return nil, invalid("expires_at", "expires_at must be in the future")
		}
		p.ExpiresAt = &v
	}
	return idempotent(ctx, h, pr.appID, params.IdempotencyKey, "createApiKey", req, http.StatusCreated,
		func(tx *store.Store) (*oas.ApiKeyCreated, error) {
			// The app's current mode decides, not the calling key's: a
			// test key of a live app must not mint live keys, nor the
			// other way round.
			app, err := tx.AppGet(ctx, pr.appID)
			if err != nil {
				return nil, err
			}
			plain, digest := newAPIKey(app.SandboxMode)
			p.Prefix, p.Hash, p.Last4 = plain[:len(prefixLive)], digest, plain[len(plain)-4:]
			k, err := tx.APIKeyInsert(ctx, p)
			if err != nil {
				return nil, err
			}
			info := apiKeyToAPI(k)
			if err := h.audit(ctx, tx, auditEntry{
				action: "api_key.create", resourceType: "api_key", resourceID: k.ID, appID: pr.appID, after: &info,
			}); err != nil {
				return nil, err
			}
			return apiKeyWithSecret(info, plain), nil
		})
}

// ListApiKeys lists the calling app's keys, newest first, masked. Revoked
// and rotated keys stay listed (is_active false, or grace_expires_at set),
// so the history of credentials is visible.
func (h *Handler) ListApiKeys(ctx context.Context, params oas.ListApiKeysParams) (*oas.ApiKeyList, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	p := &store.APIKeyListParams{AppID: pr.appID, Limit: params.Limit.Or(50)}
	if p.After, err = h.cursorParam(params.Cursor); err != nil {
		return nil, err
	}
	list, more, err := h.store.APIKeyList(ctx, p)
	if err != nil {
		return nil, err
	}
	out := &oas.ApiKeyList{HasMore: more}
	out.Data, out.Cursor = page(h, list, more, apiKeyToAPI)
	return out, nil
}

// GetApiKey returns one of the calling app's keys, masked.
func (h *Handler) GetApiKey(ctx context.Context, params oas.GetApiKeyParams) (*oas.ApiKeyInfo, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	k, err := h.store.APIKeyGet(ctx, pr.appID, params.ApiKeyId)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound("API key")
	}
	if err != nil {
		return nil, err
	}
	out := apiKeyToAPI(k)
	return &out, nil
}

// RevokeApiKey deactivates one of the calling app's keys. Every process
// caches verified keys for at most a second (keyCache), so the key is
// refused everywhere within a second of this answer. Revoking a revoked
// key succeeds and changes nothing.
func (h *Handler) RevokeApiKey(ctx context.Context, params oas.RevokeApiKeyParams) error {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return err
	}
	return h.store.Tx(ctx, func(tx *store.Store) error {
		// Revocations of one app take turns: two admin keys revoking each
		// other at the same moment would otherwise both pass the check
		// below and lock the app out.
		if _, err := tx.AppGetForUpdate(ctx, pr.appID); err != nil {
			return err
		}
		k, err := tx.APIKeyGetForUpdate(ctx, pr.appID, params.ApiKeyId)
		if errors.Is(err, store.ErrNotFound) {
			return notFound("API key")
		}
		if err != nil {
			return err
		}
		if !k.IsActive {
			return nil
		}
		if slices.Contains(k.Scopes, "admin") {
			n, err := tx.APIKeyCountUsableAdmin(ctx, pr.appID, k.ID)
			if err != nil {
				return err
			}
			if n == 0 {
				return conflict("last_admin_key", "this is the app's only usable admin key; create or rotate to another admin key before revoking it")
			}
		}
		before := apiKeyToAPI(k)
		k, err = tx.APIKeyRetire(ctx, &store.APIKeyRetireParams{AppID: pr.appID, ID: k.ID, Active: false})
		if err != nil {
			return err
		}
		return h.audit(ctx, tx, auditEntry{
			action: "api_key.revoke", resourceType: "api_key", resourceID: k.ID, appID: pr.appID,
			before: &before, after: new(apiKeyToAPI(k)),
		})
	})
}

// rotateRequest is what makes two rotations the same request for
// Idempotency-Key: the key rotated and the grace asked for.
type rotateRequest struct {
	APIKeyID           uuid.UUID `json:"api_key_id"`
	GracePeriodSeconds *int      `json:"grace_period_seconds,omitempty"`
}

func (r rotateRequest) MarshalJSON() ([]byte, error) {
	type plain rotateRequest // without this method, so no recursion
	return json.Marshal(plain(r))
}

// RotateApiKey issues a new key with the old one's name, scopes and limits,
// and lets the old one keep working for a grace period, so a client can
// deploy the new key without downtime. Both happen in one transaction.
//
// Without grace_period_seconds the grace period is MQ_API_KEY_GRACE_PERIOD.
func (h *Handler) RotateApiKey(ctx context.Context, req oas.OptApiKeyRotate, params oas.RotateApiKeyParams) (*oas.ApiKeyCreated, error) {
	pr, err := appPrincipal(ctx)
	if err != nil {
		return nil, err
	}
	grace := h.cfg.APIKeyGracePeriod
	fp := rotateRequest{APIKeyID: params.ApiKeyId}
	if body, ok := req.Get(); ok {
		if s, ok := body.GracePeriodSeconds.Get(); ok {
			if s < 0 || time.Duration(s)*time.Second > maxGracePeriod {
				return nil, invalid("grace_period_seconds", "grace_period_seconds must be between 0 and %d", int(maxGracePeriod/time.Second))
			}
			grace = time.Duration(s) * time.Second
			fp.GracePeriodSeconds = &s
		}
	}
	return idempotent(ctx, h, pr.appID, params.IdempotencyKey, "rotateApiKey", fp, http.StatusCreated,
		func(tx *store.Store) (*oas.ApiKeyCreated, error) {
			old, err := tx.APIKeyGetForUpdate(ctx, pr.appID, params.ApiKeyId)
			if errors.Is(err, store.ErrNotFound) {
				return nil, notFound("API key")
			}
			if err != nil {
				return nil, err
			}
			now := time.Now()
			switch {
			case !old.IsActive:
				return nil, conflict("api_key_revoked", "this API key has been revoked; create a new key instead")
			case old.ReplacedBy != nil:
				return nil, conflict("api_key_rotated", "this API key was already rotated to %s; rotate that key instead", *old.ReplacedBy)
			case old.ExpiresAt != nil && !now.Before(*old.ExpiresAt):
				return nil, conflict("api_key_expired", "this API key has expired; create a new key instead")
			}
			// The new key keeps the old one's prefix: rotation replaces a
			// credential and must not change whether it sends real mail.
			plain, digest := newAPIKey(old.Prefix == prefixTest)
			fresh, err := tx.APIKeyInsert(ctx, &store.APIKeyInsertParams{
				AppID: pr.appID, Name: old.Name, Prefix: old.Prefix, Hash: digest, Last4: plain[len(plain)-4:],
				Scopes: old.Scopes, RateLimit: old.RateLimit, IPAllowlist: old.IPAllowlist, ExpiresAt: old.ExpiresAt,
			})
			if err != nil {
				return nil, err
			}
			ends := now.Add(grace)
			retired, err := tx.APIKeyRetire(ctx, &store.APIKeyRetireParams{
				AppID: pr.appID, ID: old.ID, Active: grace > 0, GraceExpiresAt: &ends, ReplacedBy: &fresh.ID,
			})
			if err != nil {
				return nil, err
			}
			info := apiKeyToAPI(fresh)
			if err := h.audit(ctx, tx, auditEntry{
				action: "api_key.rotate", resourceType: "api_key", resourceID: old.ID, appID: pr.appID,
				before: new(apiKeyToAPI(old)),
				// Pointers: the generated MarshalJSON has a pointer receiver.
				after: map[string]any{"old": new(apiKeyToAPI(retired)), "new": &info},
			}); err != nil {
				return nil, err
			}
			return apiKeyWithSecret(info, plain), nil
		})
}

// parseIPAllowlist checks and normalises an allowlist: CIDRs or bare
// addresses (a single host), IPv4 or IPv6.
func parseIPAllowlist(in []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(in))
	for i, s := range in {
		field := fieldIndex("ip_allowlist", i)
		s = strings.TrimSpace(s)
		var p netip.Prefix
		if strings.Contains(s, "/") {
			var err error
			if p, err = netip.ParsePrefix(s); err != nil {
				return nil, invalid(field, "%q is not a valid CIDR (e.g. 203.0.113.0/24 or 2001:db8::/32)", s)
			}
			// PostgreSQL's cidr refuses host bits, and a client writing
			// 10.0.0.1/24 may have meant either the host or the network:
			// for a security control, ask rather than guess.
			if p.Masked() != p {
				return nil, invalid(field, "%q has bits set beyond its /%d mask; did you mean %s?", s, p.Bits(), p.Masked())
			}
		} else {
			a, err := netip.ParseAddr(s)
			if err != nil || a.Zone() != "" {
				return nil, invalid(field, "%q is not a valid IP address or CIDR", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		// Clients are matched by their unmapped address (ipAllowed), so an
		// IPv4-mapped IPv6 entry is stored as the IPv4 range it means.
		if a := p.Addr(); a.Is4In6() {
			if p.Bits() < 96 {
				return nil, invalid(field, "%q mixes IPv4-mapped and other IPv6 addresses; list them separately", s)
			}
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// apiKeyToAPI is a key as the API shows it: masked, never its secret. It
// is also the audit log's shape of a key.
func apiKeyToAPI(k *store.APIKey) oas.ApiKeyInfo {
	out := oas.ApiKeyInfo{
		ID: k.ID, Name: k.Name, Prefix: k.Prefix, Last4: k.Last4, IsActive: k.IsActive,
		CreatedAt: k.CreatedAt, Scopes: make([]oas.ApiKeyScope, 0, len(k.Scopes)),
		IPAllowlist: make([]string, 0, len(k.IPAllowlist)),
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
	if k.LastUsedAt != nil {
		out.LastUsedAt = oas.NewOptDateTime(*k.LastUsedAt)
	}
	if k.GraceExpiresAt != nil {
		out.GraceExpiresAt = oas.NewOptDateTime(*k.GraceExpiresAt)
	}
	return out
}

func apiKeyWithSecret(k oas.ApiKeyInfo, plain string) *oas.ApiKeyCreated {
	return &oas.ApiKeyCreated{
		ID: k.ID, Name: k.Name, Prefix: k.Prefix, Last4: k.Last4, Scopes: k.Scopes,
		RateLimit: k.RateLimit, IPAllowlist: k.IPAllowlist, ExpiresAt: k.ExpiresAt,
		IsActive: k.IsActive, LastUsedAt: k.LastUsedAt, GraceExpiresAt: k.GraceExpiresAt,
		CreatedAt: k.CreatedAt, Key: plain,
	}
}
