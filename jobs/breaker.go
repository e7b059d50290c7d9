package jobs

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/mailqueue/mailqueue/mail"
	"github.com/mailqueue/mailqueue/ratelimit"
	"github.com/mailqueue/mailqueue/store"
)

// Send worker metrics, served at /metrics from Prometheus' default registry.
var (
	smtpSends = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "mailqueue_smtp_sends_total",
		Help: "SMTP delivery attempts by outcome: sent, failed (temporary or permanent).",
	}, []string{"result"})
	sendsSnoozed = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "mailqueue_sends_snoozed_total",
		Help: "Send jobs put back without using an attempt, by reason.",
	}, []string{"reason"})
)

// breakerHost names an SMTP server for the circuit breaker: host and port,
// since two servers on one host (or two test sinks) fail independently.
func breakerHost(srv mail.Server) string {
	return net.JoinHostPort(srv.Host, strconv.Itoa(srv.Port))
}

// minBreakerSnooze keeps a job whose probe slot is just being released
// from coming straight back; maxProbeSnooze is the longest a job waits for
// a half-open breaker's probe, which usually ends in well under the probe
// lease.
const (
	minBreakerSnooze = time.Second
	maxProbeSnooze   = 5 * time.Second
)

// breakerSnooze is how long a refused job waits: until the breaker may let
// a probe through, plus up to a fifth more at random, so the backlog of an
// open host does not all come back in the same instant.
func breakerSnooze(d ratelimit.BreakerDecision) time.Duration {
	wait := d.RetryIn
	if d.State == ratelimit.BreakerHalfOpen {
		wait = min(wait, maxProbeSnooze)
	}
	wait = max(wait, minBreakerSnooze)
	return wait + rand.N(wait/5+1)
}

// breakerWait asks the circuit breaker whether e may be sent to srv now.
// When it may not, it returns the result of snoozing the job (wait is
// true): the attempt is not used, the email stays queued and says why.
func (w *SendWorker) breakerWait(ctx context.Context, e *store.EmailForSend, srv mail.Server) (wait bool, err error) {
	if w.Breaker == nil {
		return false, nil
	}
	host := breakerHost(srv)
	d := w.Breaker.Allow(ctx, host)
	if d.Allowed {
		return false, nil
	}
	sendsSnoozed.WithLabelValues("circuit_open").Inc()
	return true, w.wait(ctx, e, "circuit open for SMTP host "+host, breakerSnooze(d))
}

// afterSend tells the circuit breaker how a send to srv went, and counts it.
func (w *SendWorker) afterSend(ctx context.Context, srv mail.Server, sendErr error) {
	if sendErr == nil {
		smtpSends.WithLabelValues("sent").Inc()
	} else {
		smtpSends.WithLabelValues("failed").Inc()
	}
	if w.Breaker == nil {
		return
	}
	fault, counts := hostFault(ctx, sendErr)
	if !counts {
		return
	}
	// The send is over; its outcome is recorded even if the job's context
	// has just ended. The Redis client's own timeouts bound the call.
	c := w.Breaker.Report(context.WithoutCancel(ctx), breakerHost(srv), !fault)
	if c.Changed() {
		w.Logger.Warn("SMTP circuit breaker changed", "smtp_host", breakerHost(srv), "from", c.From, "to", c.To, "local", c.Local)
	}
}

// hostFault decides what a send's outcome says about the SMTP host:
//
//   - success, and a permanent (5xx) reply to MAIL, RCPT or DATA: the host
//     is up and answering; refusing one recipient is not its fault.
//   - failures of the host: anything at the connect, TLS or AUTH stage
//     (connection refused, bad greeting, handshake, rejected credentials),
//     no reply at all (I/O errors, timeouts, a connection dropped mid-
//     message) and temporary (4xx) replies (421 shutting down, 451 local
//     error, 452 out of storage).
//   - not counted (counts is false): our own context ending (job timeout,
//     shutdown), a closed pool (shutdown), and a message that could not be
//     built (a permanent error without a reply).
func hostFault(ctx context.Context, err error) (fault, counts bool) {
	if err == nil {
		return false, true
	}
	if ctx.Err() != nil || errors.Is(err, mail.ErrPoolClosed) {
		return false, false
	}
	var se *mail.SendError
	if !errors.As(err, &se) {
		return false, false
	}
	switch {
	case se.Permanent && se.Code == 0:
		return false, false
	case se.Stage == mail.StageConnect || se.Stage == mail.StageTLS || se.Stage == mail.StageAuth:
		return true, true
	case se.Code == 0, se.Code >= 400 && se.Code < 500:
		return true, true
	}
	return false, true
}
