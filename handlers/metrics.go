package handlers

import (
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricsHandler serves Prometheus' default registry at /metrics: the
// circuit breaker and send worker counters plus Go runtime metrics. Its
// labels name tenants' SMTP hosts, so it needs the admin secret, as
// /riverui does: Prometheus sends it with `authorization: {credentials:
// <secret>}` (Bearer) or basic_auth (any user name, the secret as password).
func (h *Handler) metricsHandler() http.Handler {
	prom := promhttp.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			_, token, _ = r.BasicAuth()
		}
		if !h.isAdminSecret(token) {
			w.Header().Set("WWW-Authenticate", `Basic realm="Mail Queue metrics", charset="UTF-8"`)
			h.writeError(r.Context(), w, h.NewError(r.Context(), unauthorized("/metrics needs the admin secret")))
			return
		}
		prom.ServeHTTP(w, r)
	})
}
