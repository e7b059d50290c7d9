package ratelimit

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Circuit breaker metrics, registered with Prometheus' default registry and
// served at /metrics. Each process counts the transitions it caused; summed
// over processes they are the breaker's history. The state gauge is what
// this process last saw of each host (0 closed, 1 half_open, 2 open).
var (
	breakerTransitions = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "mailqueue_circuit_breaker_transitions_total",
		Help: "Circuit breaker state changes per SMTP host.",
	}, []string{"host", "from", "to"})
	breakerOpens = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "mailqueue_circuit_breaker_opens_total",
		Help: "Times the circuit breaker of an SMTP host opened (after failures or a failed probe).",
	}, []string{"host"})
	breakerState = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "mailqueue_circuit_breaker_state",
		Help: "Circuit breaker state last seen by this process: 0 closed, 1 half_open, 2 open.",
	}, []string{"host"})
	breakerLocal = promauto.NewCounter(prometheus.CounterOpts{
		Name: "mailqueue_circuit_breaker_local_decisions_total",
		Help: "Circuit breaker calls answered in-process because Redis failed.",
	})
)

// observe records a state seen for host and, if it changed, the change.
func observe(host, from, to string, local bool) {
	if local {
		breakerLocal.Inc()
	}
	breakerState.WithLabelValues(host).Set(stateValue(to))
	if from == to || from == "" {
		return
	}
	breakerTransitions.WithLabelValues(host, from, to).Inc()
	if to == BreakerOpen {
		breakerOpens.WithLabelValues(host).Inc()
	}
}

func stateValue(s string) float64 {
	switch s {
	case BreakerHalfOpen:
		return 1
	case BreakerOpen:
		return 2
	}
	return 0
}
