package handlers

import (
	"context"
	"runtime"
	"time"

	"github.com/mailqueue/mailqueue/oas"
	"github.com/mailqueue/mailqueue/ratelimit"
)

// GetHealth is the liveness check: the process answers.
func (h *Handler) GetHealth(context.Context) (*oas.Health, error) {
	return &oas.Health{Status: oas.HealthStatusOk}, nil
}

// GetHealthDetailed checks each dependency. PostgreSQL down is unhealthy
// (nothing can be accepted); Redis down is degraded (limits fall back to
// in-process, sending goes on).
func (h *Handler) GetHealthDetailed(ctx context.Context) (*oas.HealthDetailed, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	out := &oas.HealthDetailed{
		Status: oas.HealthStateHealthy, Version: h.version,
		UptimeSeconds: int(time.Since(h.started).Seconds()),
	}
	start := time.Now()
	out.Checks.Postgresql = check(h.store.Ping(ctx), time.Since(start), oas.HealthStateUnhealthy)
	latency, err := ratelimit.Ping(ctx, h.redis)
	out.Checks.Redis = check(err, latency, oas.HealthStateDegraded)
	if out.Checks.Postgresql.Status != oas.HealthStateHealthy {
		out.Status = oas.HealthStateUnhealthy
	} else if out.Checks.Redis.Status != oas.HealthStateHealthy {
		out.Status = oas.HealthStateDegraded
	}
	if out.Status != oas.HealthStateUnhealthy {
		if c, err := h.store.HealthCountsGet(ctx); err == nil {
			out.Queues = oas.HealthQueues{TotalPending: int(c.Pending), TotalProcessing: int(c.Running)}
		}
	}
	if h.breaker.Degraded() && out.Status == oas.HealthStateHealthy {
		// Redis answered the ping but failed the breaker's last call.
		out.Status = oas.HealthStateDegraded
	}
	if healthAdmin(ctx) {
		out.CircuitBreakers = h.circuitBreakers(ctx)
	}
	return out, nil
}

func check(err error, latency time.Duration, failed oas.HealthState) oas.HealthCheck {
	c := oas.HealthCheck{Status: oas.HealthStateHealthy, LatencyMs: float64(latency.Microseconds()) / 1000}
	if err != nil {
		c.Status = failed
		c.Error = oas.NewOptString(err.Error())
	}
	return c
}

// GetInfo describes this build.
func (h *Handler) GetInfo(context.Context) (*oas.Info, error) {
	return &oas.Info{Name: "mailqueue", Version: h.version, APIVersion: "v1", GoVersion: runtime.Version()}, nil
}
