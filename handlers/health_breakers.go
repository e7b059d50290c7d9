package handlers

import (
	"context"
	"net/http"
	"strings"

	"github.com/mailqueue/mailqueue/oas"
)

// The detailed health report is public (load balancers and uptime checks
// read it without credentials), but its circuit breaker list names the SMTP
// hosts of every tenant. So circuit_breakers is only filled in when the
// request carries the admin secret as a Bearer token; everything else in
// the report is the same for every caller.

type healthAdminKey struct{}

// healthAdmin reports whether the health request carried the admin secret.
func healthAdmin(ctx context.Context) bool {
	v, _ := ctx.Value(healthAdminKey{}).(bool)
	return v
}

// markHealthAdmin notes on the request whether it carries the admin secret.
// It never refuses: the endpoint stays public.
func (h *Handler) markHealthAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && h.isAdminSecret(token) {
			r = r.WithContext(context.WithValue(r.Context(), healthAdminKey{}, true))
		}
		next.ServeHTTP(w, r)
	})
}

// circuitBreakers lists the SMTP hosts the breaker knows. With Redis down
// it lists this process's own (in-process) breakers: the report is then
// "degraded" anyway.
func (h *Handler) circuitBreakers(ctx context.Context) []oas.CircuitBreaker {
	states, _, err := h.breaker.States(ctx)
	if err != nil {
		h.logger.WarnContext(ctx, "listing circuit breakers", "error", err)
	}
	out := make([]oas.CircuitBreaker, 0, len(states))
	for _, s := range states {
		out = append(out, oas.CircuitBreaker{Host: s.Host, State: oas.CircuitBreakerState(s.State)})
	}
	return out
}
