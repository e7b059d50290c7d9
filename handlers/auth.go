package handlers

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/oas"
	"github.com/mailqueue/mailqueue/store"
)

// principal is who a request acts for: an app through one of its keys.
type principal struct {
	appID   uuid.UUID
	keyID   uuid.UUID
	scopes  []string
	sandbox bool // a sandbox app, or an mq_test_ key
}

type principalKey struct{}

type adminKey struct{}

// isAdmin reports whether the request authenticated with the admin secret.
func isAdmin(ctx context.Context) bool {
	v, _ := ctx.Value(adminKey{}).(bool)
	return v
}

// appPrincipal returns the app a request authenticated as. Every operation
// that calls it is declared with apiKey security, so ogen has already run
// HandleApiKey; a missing principal is a programming error, answered 401.
func appPrincipal(ctx context.Context) (*principal, error) {
	p, ok := ctx.Value(principalKey{}).(*principal)
	if !ok {
		return nil, unauthorized("this endpoint needs an API key")
	}
	return p, nil
}

// HandleAdminSecret authorises admin operations: the bearer token must be
// MQ_ADMIN_SECRET, compared in constant time.
func (h *Handler) HandleAdminSecret(ctx context.Context, _ oas.OperationName, t oas.AdminSecret) (context.Context, error) {
	if !h.isAdminSecret(t.Token) {
		return ctx, unauthorized("this endpoint needs the admin secret")
	}
	return context.WithValue(ctx, adminKey{}, true), nil
}

func (h *Handler) isAdminSecret(token string) bool {
	sum := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(sum[:], h.adminDigest[:]) == 1
}

// HandleApiKey authenticates an app's API key and checks it carries the
// scope the operation declares in openapi.yaml (ogen passes it as Roles), so
// the spec and the enforcement cannot disagree.
func (h *Handler) HandleApiKey(ctx context.Context, op oas.OperationName, t oas.ApiKey) (context.Context, error) {
	if !strings.HasPrefix(t.Token, prefixLive) && !strings.HasPrefix(t.Token, prefixTest) {
		return ctx, unauthorized("not a Mail Queue API key (keys start with mq_live_ or mq_test_)")
	}
	k, err := h.keys.get(ctx, hashAPIKey(t.Token))
	if errors.Is(err, store.ErrNotFound) {
		return ctx, unauthorized("unknown API key")
	}
	if err != nil {
		return ctx, err
	}
	now := time.Now()
	switch {
	case !k.IsActive:
		return ctx, unauthorized("API key has been revoked")
	case k.ExpiresAt != nil && !now.Before(*k.ExpiresAt):
		return ctx, unauthorized("API key expired at %s", k.ExpiresAt.UTC().Format(time.RFC3339))
	case k.GraceExpiresAt != nil && !now.Before(*k.GraceExpiresAt):
		return ctx, unauthorized("API key was rotated; its grace period ended at %s", k.GraceExpiresAt.UTC().Format(time.RFC3339))
	case !k.AppIsActive:
		return ctx, forbidden("app_inactive", "this app has been deactivated; contact your Mail Queue administrator")
	}
	if err := h.takeAPIToken(ctx, k); err != nil {
		return ctx, err
	}
	if len(k.IPAllowlist) > 0 && !ipAllowed(k.IPAllowlist, requestInfoFrom(ctx).IP) {
		return ctx, forbidden("ip_not_allowed", "requests from this IP address are not allowed for this key")
	}
	for _, need := range t.Roles {
		if !hasScope(k.Scopes, need) {
			return ctx, forbidden("insufficient_scope", "this API key lacks the %q scope needed for %s", need, op)
		}
	}
	h.usage.touch(k.ID)
	return context.WithValue(ctx, principalKey{}, &principal{
		appID: k.AppID, keyID: k.ID, scopes: k.Scopes,
		sandbox: k.AppSandboxMode || k.Prefix == prefixTest,
	}), nil
}

func hasScope(have []string, need string) bool {
	for _, s := range have {
		if s == need || s == "admin" {
			return true
		}
	}
	return false
}

func ipAllowed(allow []netip.Prefix, ip []byte) bool {
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return false
	}
	addr = addr.Unmap()
	for _, p := range allow {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// keyCache keeps verified keys for a moment, so a busy client costs one
// lookup per second instead of one per request. The short life bounds how
// long a revoked key keeps working in any process.
type keyCache struct {
	store *store.Store
	ttl   time.Duration

	mu      sync.Mutex
	entries map[[32]byte]keyCacheEntry
}

type keyCacheEntry struct {
	key     *store.APIKeyAuth
	expires time.Time
}

func newKeyCache(s *store.Store, ttl time.Duration) *keyCache {
	return &keyCache{store: s, ttl: ttl, entries: map[[32]byte]keyCacheEntry{}}
}

func (c *keyCache) get(ctx context.Context, digest []byte) (*store.APIKeyAuth, error) {
	var k [32]byte
	copy(k[:], digest)
	now := time.Now()
	c.mu.Lock()
	e, ok := c.entries[k]
	c.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.key, nil
	}
	key, err := c.store.APIKeyGetByHash(ctx, digest)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if len(c.entries) > 100_000 { // unbounded growth guard; entries are cheap to refetch
		clear(c.entries)
	}
	c.entries[k] = keyCacheEntry{key: key, expires: now.Add(c.ttl)}
	c.mu.Unlock()
	return key, nil
}

// requireAdmin guards plain HTTP handlers (the River UI) with the admin
// secret, as a bearer token or as the password of HTTP Basic auth so a
// browser can log in.
func (h *Handler) requireAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			_, token, _ = r.BasicAuth()
		}
		if !h.isAdminSecret(token) {
			w.Header().Set("WWW-Authenticate", `Basic realm="Mail Queue admin", charset="UTF-8"`)
			h.writeError(r.Context(), w, h.NewError(r.Context(), unauthorized("the River UI needs the admin secret")))
			return
		}
		next.ServeHTTP(w, r)
	})
}
